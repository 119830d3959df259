"""Part 1 of the bad-input contract: hostile and broken checkpoint files.

Every bad input is written here, at test time, next to a good model, and
read the way a user reads a model (``compute_signature`` through a store).
Each must raise the documented exception (a :class:`SpecsigError` that is
also the matching built-in) with a message naming the file and the fix,
and must leave nothing behind in the store.  Numerically degenerate weights
are not errors: they give NaN with a warning naming the tensor.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from _checkpoint_factories import (
    HIDDEN,
    INTER,
    N_LAYERS,
    llama_dir,
    llama_tensors,
    write_config,
    write_gguf,
    write_index,
)
from safetensors.torch import save_file

from sklearn_specsig import SignatureStore, compute_signature
from sklearn_specsig.architectures import ROLES
from sklearn_specsig.checkpoints import open_checkpoint
from sklearn_specsig.errors import (
    CheckpointAccessError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConfigError,
    SpecsigError,
    SpectralWarning,
    UnknownArchitectureError,
    UnsafeCheckpointError,
)

QT = gguf.GGMLQuantizationType


def rewrite_header(file, edit):
    """Rewrite a safetensors file's JSON header through ``edit(header)``."""
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    new = edit(header)
    new = new if isinstance(new, bytes) else json.dumps(new).encode()
    file.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    return file


def one_tensor_file(path, tensor=None):
    file = path / "model.safetensors"
    save_file({"model.embed_tokens.weight": torch.ones(11, 8) if tensor is None else tensor}, file)
    return file


# Every bad input: a function writing it under tmp_path and returning
# (source given to compute_signature, path the message must name).
CASES = []


def bad(error, fragment):
    def register(make):
        case_id = make.__name__.lstrip("_").replace("_", "-")
        CASES.append(pytest.param(make, error, fragment, id=case_id))
        return make

    return register


# -- missing and unreadable ---------------------------------------------------


@bad(CheckpointNotFoundError, "no such file or directory")
def _missing_directory(tmp):
    return tmp / "missing_dir", tmp / "missing_dir"


@bad(CheckpointNotFoundError, "no such file or directory")
def _missing_file(tmp):
    return tmp / "missing.safetensors", tmp / "missing.safetensors"


@bad(CheckpointNotFoundError, "no such file or directory")
def _missing_relative_path_that_is_not_a_hub_id(tmp):
    return "no/such/dir", "no/such/dir"


@bad(CheckpointNotFoundError, "no such file or directory")
def _symlink_loop(tmp):
    (tmp / "loop").symlink_to(tmp / "loop")
    return tmp / "loop", tmp / "loop"


@bad(CheckpointNotFoundError, "No weight files in directory")
def _empty_directory(tmp):
    return tmp, tmp


@bad(CheckpointNotFoundError, "expected model.safetensors")
def _directory_without_weight_files(tmp):
    (tmp / "README.md").write_text("hi")
    write_config(tmp)
    return tmp, tmp


@bad(CheckpointNotFoundError, "not a weight file")
def _not_a_weight_file(tmp):
    (tmp / "notes.txt").write_text("hi")
    return tmp / "notes.txt", tmp / "notes.txt"


@bad(CheckpointFormatError, "pass the path of one file")
def _several_safetensors_without_an_index(tmp):
    save_file({"a": torch.ones(2)}, tmp / "a.safetensors")
    save_file({"b": torch.ones(2)}, tmp / "b.safetensors")
    return tmp, tmp


@bad(CheckpointFormatError, "Found 2 .gguf files in")
def _several_gguf_files(tmp):
    for name in ("a.gguf", "b.gguf"):
        write_gguf(tmp / name, {"w": (np.ones((2, 2), np.float32), None)})
    return tmp, tmp


# -- safetensors -----------------------------------------------------------------


@bad(CheckpointFormatError, "0 bytes long, too short")
def _empty_safetensors(tmp):
    file = tmp / "model.safetensors"
    file.write_bytes(b"")
    return file, file


@bad(CheckpointFormatError, "too short")
def _three_byte_safetensors(tmp):
    file = tmp / "model.safetensors"
    file.write_bytes(b"\x01\x02\x03")
    return file, file


@bad(CheckpointFormatError, "truncated")
def _truncated_safetensors(tmp):
    model = llama_dir(tmp / "m")
    raw = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(raw[:-40])
    return model, model / "model.safetensors"


@bad(CheckpointFormatError, "declares a 1000000000000-byte header")
def _header_longer_than_the_file(tmp):
    file = one_tensor_file(tmp)
    file.write_bytes(struct.pack("<Q", 10**12) + file.read_bytes()[8:])
    return file, file


@bad(CheckpointFormatError, "corrupted header")
def _header_not_json(tmp):
    return rewrite_header(one_tensor_file(tmp), lambda h: b"{not json"), None


@bad(CheckpointFormatError, "corrupted header")
def _header_not_utf8(tmp):
    file = one_tensor_file(tmp)
    return rewrite_header(file, lambda h: b'{"\xff\xfe": 1}'), file


@bad(CheckpointFormatError, "expected a JSON object, got list")
def _header_a_json_list(tmp):
    return rewrite_header(one_tensor_file(tmp), lambda h: [h]), None


@bad(CheckpointFormatError, "maximum recursion depth")
def _header_nested_a_million_deep(tmp):
    file = one_tensor_file(tmp)
    return rewrite_header(file, lambda h: b"[" * 10**6 + b"]" * 10**6), file


@bad(CheckpointFormatError, "integer string conversion")
def _header_integer_of_ten_thousand_digits(tmp):
    digits = b"9" * 10_000
    return rewrite_header(
        one_tensor_file(tmp),
        lambda h: b'{"w": {"dtype": "F32", "shape": [' + digits + b'], "data_offsets": [0, 4]}}',
    ), None


@bad(CheckpointFormatError, "claims shape (1000000, 1000000)")
def _header_claims_a_trillion_elements(tmp):
    def edit(h):
        h["model.embed_tokens.weight"]["shape"] = [10**6, 10**6]
        return h

    return rewrite_header(one_tensor_file(tmp), edit), None


@bad(CheckpointFormatError, "claims shape (11, 8) (88 F32 elements) but spans 176 bytes")
def _header_lies_about_the_dtype(tmp):
    def edit(h):
        h["model.embed_tokens.weight"]["dtype"] = "F32"
        return h

    return rewrite_header(one_tensor_file(tmp, torch.ones(11, 8, dtype=torch.float16)), edit), None


@bad(CheckpointFormatError, "ends at byte 1000 of the data")
def _header_offsets_past_the_end(tmp):
    def edit(h):
        h["model.embed_tokens.weight"]["data_offsets"] = [648, 1000]
        return h

    return rewrite_header(one_tensor_file(tmp), edit), None


@pytest.mark.parametrize("field, value", [
    ("data_offsets", [352, 0]),
    ("data_offsets", [-8, 344]),
    ("data_offsets", [0.0, 352.0]),
    ("shape", [True, 88]),
    ("shape", 88),
    ("dtype", None),
])
def test_header_entries_of_the_wrong_kind(tmp_path, field, value):
    def edit(h):
        h["model.embed_tokens.weight"][field] = value
        return h

    file = rewrite_header(one_tensor_file(tmp_path), edit)
    with pytest.raises(CheckpointFormatError, match="corrupted header entry for tensor") as info:
        open_checkpoint(file)
    assert str(file) in str(info.value)


@bad(CheckpointFormatError, "unknown variant `Q99`")
def _header_with_an_unknown_dtype(tmp):
    model = llama_dir(tmp / "m")

    def edit(h):
        h["model.layers.0.self_attn.q_proj.weight"]["dtype"] = "Q99"
        return h

    rewrite_header(model / "model.safetensors", edit)
    return model, model / "model.safetensors"


@bad(CheckpointFormatError, "stored as torch.uint8, not as floating point")
def _quantized_integer_weights(tmp):
    tensors = llama_tensors()
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.randint(
        0, 255, (INTER, HIDDEN), dtype=torch.uint8
    )
    model = llama_dir(tmp / "m", tensors)
    return model, "model.layers.1.mlp.up_proj.weight"


# -- shard indexes ---------------------------------------------------------------


def _index_pointing_at(shard, fmt="safetensors"):
    def make(tmp):
        model = tmp / "model"
        model.mkdir()
        prefix = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
        index = write_index(model / f"{prefix}.index.json", {"w": shard})
        return model, index

    return make


for _fmt in ("safetensors", "bin"):
    for _shard in ("/etc/passwd", "../outside.safetensors", "sub/../../x", "..\\outside"):
        _make = _index_pointing_at(_shard, _fmt)
        _make.__name__ = f"index_{_fmt}_shard_{_shard}"
        bad(UnsafeCheckpointError, "outside the model directory")(_make)


@bad(UnsafeCheckpointError, "resolves to")
def _index_shard_symlinked_outside(tmp):
    outside = tmp / "elsewhere"
    outside.mkdir()
    save_file({"w": torch.ones(2)}, outside / "secret.safetensors")
    model = tmp / "model"
    model.mkdir()
    os.symlink(outside / "secret.safetensors", model / "model-00001-of-00001.safetensors")
    index = write_index(
        model / "model.safetensors.index.json", {"w": "model-00001-of-00001.safetensors"}
    )
    return model, index


@bad(CheckpointNotFoundError, "download is incomplete")
def _index_shard_missing(tmp):
    write_index(tmp / "model.safetensors.index.json", {"w": "model-00001-of-00002.safetensors"})
    return tmp, "model-00001-of-00002.safetensors"


@bad(CheckpointFormatError, "does not contain it")
def _index_disagrees_with_its_shard(tmp):
    save_file({"w": torch.ones(2)}, tmp / "model-00001-of-00001.safetensors")
    index = write_index(
        tmp / "model.safetensors.index.json",
        {"w": "model-00001-of-00001.safetensors", "v": "model-00001-of-00001.safetensors"},
    )
    return tmp, index


def _index_with_content(content, label):
    def make(tmp):
        index = tmp / "model.safetensors.index.json"
        index.write_bytes(content)
        return tmp, index

    make.__name__ = f"index_{label}"
    return make


for _content, _label, _fragment in [
    (b"not json", "not_json", "corrupted JSON"),
    (b"[1, 2]", "a_list", "expected a JSON object"),
    (b'{"metadata": {}}', "without_weight_map", "no 'weight_map'"),
    (b'{"weight_map": {"w": [1]}}', "shard_not_a_string", "not a file name"),
    (b'{"weight_map": {"w": "\xff"}}', "not_utf8", "corrupted JSON"),
    (b"[" * 10**6, "nested_a_million_deep", "corrupted JSON"),
]:
    bad(CheckpointFormatError, _fragment)(_index_with_content(_content, _label))


@bad(CheckpointFormatError, "not a valid file name")
def _index_shard_name_too_long_for_the_filesystem(tmp):
    # Found by benchmarks/fuzz_readers.py: os.stat raised ENAMETOOLONG.
    index = write_index(tmp / "model.safetensors.index.json", {"w": "x" * 300 + ".safetensors"})
    return tmp, index


# -- PyTorch .bin ------------------------------------------------------------------


class _RunsCode:
    """Pickles as a call to os.system, like a malicious checkpoint would."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickled_code_is_refused_and_never_run(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    model = tmp_path / "model"
    model.mkdir()
    file = model / "pytorch_model.bin"
    torch.save(
        {**llama_tensors(), "payload": _RunsCode(marker)},
        file,
        _use_new_zipfile_serialization=zip_format,
    )
    write_config(model, num_hidden_layers=N_LAYERS)
    with pytest.raises(UnsafeCheckpointError, match="convert it to safetensors") as info:
        compute_signature(model, cache=tmp_path / "store", progress=False)
    assert str(file) in str(info.value)
    assert not marker.exists()
    # The payload is real: an unsafe load does run it.
    torch.load(file, weights_only=False)
    assert marker.exists()


def _bin(content):
    def make(tmp):
        file = tmp / "pytorch_model.bin"
        content(file)
        return tmp, file

    return make


for _label, _content, _fragment in [
    ("empty", lambda f: f.write_bytes(b""), "Cannot read"),
    ("fake_zip", lambda f: f.write_bytes(b"PK\x03\x04 not really a zip"), "Cannot read"),
    ("list_of_tensors", lambda f: torch.save([torch.ones(2)], f), "not a state dict"),
    ("no_tensors", lambda f: torch.save({"step": 3, "lr": 0.1}, f), "holds no tensors"),
    (
        "truncated_zip",
        lambda f: (torch.save(llama_tensors(), f), f.write_bytes(f.read_bytes()[:2000])),
        "Cannot read",
    ),
]:
    _make = _bin(_content)
    _make.__name__ = f"bin_{_label}"
    bad(CheckpointFormatError, _fragment)(_make)


# -- GGUF --------------------------------------------------------------------------


def _gguf_file(tmp, endianess=gguf.GGUFEndian.LITTLE):
    file = tmp / "model.gguf"
    writer = gguf.GGUFWriter(file, "llama", endianess=endianess)
    writer.add_block_count(1)
    rng = np.random.default_rng(0)
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight"):
        writer.add_tensor(name, rng.standard_normal((32, 32)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return file


def _tensor_info_offset(raw, name=b"blk.0.attn_k.weight"):
    """Byte offset of a tensor's n_dims field in a GGUF file's tensor infos."""
    return raw.index(name) + len(name)


def _patched_gguf(label, patch):
    def make(tmp):
        file = _gguf_file(tmp)
        raw = bytearray(file.read_bytes())
        patch(raw)
        file.write_bytes(bytes(raw))
        return file, file

    make.__name__ = f"gguf_{label}"
    return make


def _dims(raw, *dims):
    struct.pack_into(f"<{len(dims)}Q", raw, _tensor_info_offset(raw) + 4, *dims)


for _label, _patch, _fragment in [
    ("bad_magic", lambda r: r.__setitem__(slice(0, 4), b"GGML"), "magic"),
    ("version_99", lambda r: struct.pack_into("<I", r, 4, 99), "version 99"),
    ("version_1", lambda r: struct.pack_into("<I", r, 4, 1), "version 1"),
    ("truncated_tensor_data", lambda r: r.__delitem__(slice(len(r) - 100, None)), "cannot reshape"),
    ("truncated_header", lambda r: r.__delitem__(slice(40, None)), "truncated or corrupted"),
    ("empty", lambda r: r.clear(), "empty file"),
    (
        "unknown_quant_type",
        lambda r: struct.pack_into("<I", r, _tensor_info_offset(r) + 20, 999),
        "not a valid GGMLQuantizationType",
    ),
    ("claims_a_trillion_elements", lambda r: _dims(r, 10**6, 10**6), "(1000000,1000000)"),
    # Found by benchmarks/fuzz_readers.py: zero elements, but numpy cannot
    # even describe the float32 copy of a (0, 2**63) array.
    ("zero_by_two_to_the_63", lambda r: _dims(r, 8791026472627208448, 0), "array is too big"),
    (
        "data_offset_past_the_end",
        lambda r: struct.pack_into("<Q", r, _tensor_info_offset(r) + 24, 10**15),
        "cannot reshape",
    ),
    (
        "huge_metadata_count",
        lambda r: struct.pack_into("<Q", r, 16, 10**15),
        "truncated or corrupted",
    ),
]:
    bad(CheckpointFormatError, _fragment)(_patched_gguf(_label, _patch))


@bad(CheckpointFormatError, "big-endian")
def _gguf_big_endian(tmp):
    file = _gguf_file(tmp, gguf.GGUFEndian.BIG)
    return file, file


@bad(CheckpointFormatError, "UnicodeDecodeError")
def _gguf_architecture_name_not_utf8(tmp):
    # Found by benchmarks/fuzz_readers.py: the metadata string decoder raised.
    file = _gguf_file(tmp)
    raw = file.read_bytes()
    at = raw.index(b"llama")
    file.write_bytes(raw[:at] + b"\x94lama" + raw[at + 5 :])
    return file, file


def _gguf_with_one_metadata_value(tmp, value, order="<"):
    """A GGUF file with no tensors and one key whose typed value is ``value``."""
    key = b"general.junk"
    raw = b"GGUF" + struct.pack(f"{order}IQQ", 3, 0, 1)
    raw += struct.pack(f"{order}Q", len(key)) + key + value
    file = tmp / "model.gguf"
    file.write_bytes(raw + bytes(64))
    return file, file


@bad(CheckpointFormatError, "a metadata array of 1152921504606846976 elements")
def _gguf_metadata_array_of_two_to_the_sixty(tmp):
    # Found by benchmarks/fuzz_readers.py: gguf's reader walked this array
    # element by element past the end of the file, for hours.
    return _gguf_with_one_metadata_value(tmp, struct.pack("<IIQ", 9, 0, 2**60))


@bad(CheckpointFormatError, "a metadata array of 16728319 elements")
def _gguf_big_endian_metadata_array_past_the_end(tmp):
    # Found by benchmarks/fuzz_readers.py: a byte-swapped version number makes
    # gguf read every count big-endian; the bounds check must do the same.
    return _gguf_with_one_metadata_value(tmp, struct.pack(">IIQ", 9, 0, 16728319), ">")


@bad(CheckpointFormatError, "nested more than 8 deep")
def _gguf_metadata_arrays_nested_5000_deep(tmp):
    # gguf's reader recurses once per level: a RecursionError, not an answer.
    nested = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5000 + struct.pack("<IQ", 0, 0)
    return _gguf_with_one_metadata_value(tmp, nested)


# -- config.json -------------------------------------------------------------------


def _config(content):
    def make(tmp):
        model = llama_dir(tmp / "m")
        (model / "config.json").write_bytes(content)
        return model, model / "config.json"

    return make


for _label, _content in [
    ("not_json", b"{oops"),
    ("a_list", b'["not", "an", "object"]'),
    ("not_utf8", b'{"model_type": "\xff"}'),
    ("nested_a_million_deep", b'{"a":' * 10**6),
]:
    _make = _config(_content)
    _make.__name__ = f"config_{_label}"
    bad(ConfigError, "config.json")(_make)


def _phi3_dir(tmp, **config):
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "model.layers.0.self_attn.qkv_proj.weight": torch.randn(3 * HIDDEN, HIDDEN, generator=gen),
        "model.layers.0.mlp.gate_up_proj.weight": torch.randn(2 * INTER, HIDDEN, generator=gen),
    }
    model = tmp / "phi3"
    model.mkdir()
    save_file(tensors, model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"model_type": "phi3", **config}))
    return model


@bad(ConfigError, "num_attention_heads=5")
def _fused_split_that_does_not_divide(tmp):
    model = _phi3_dir(tmp, num_attention_heads=5, num_key_value_heads=5, hidden_size=HIDDEN)
    return model, "qkv_proj.weight"


@bad(ConfigError, "no head count")
def _fused_weights_without_head_counts(tmp):
    return _phi3_dir(tmp), "config.json"


@bad(UnknownArchitectureError, "register_naming_scheme")
def _unknown_naming_scheme(tmp):
    file = tmp / "model.safetensors"
    save_file({"encoder.block.0.wq": torch.ones(4, 4)}, file)
    return file, "encoder.block.0.wq"


# -- the contract ----------------------------------------------------------------------


@pytest.mark.parametrize("make, error, fragment", CASES)
def test_bad_checkpoint_is_a_clear_error_and_stores_nothing(tmp_path, make, error, fragment):
    source, named = make(tmp_path)
    store = SignatureStore(tmp_path / "store")
    with pytest.raises(error) as info:
        compute_signature(source, cache=store, progress=False)
    message = str(info.value)
    assert fragment in message
    assert str(source if named is None else named) in message
    assert isinstance(info.value, SpecsigError)
    # Nothing half-done is recorded as a finished model.
    assert store.stats()["models"] == 0


def test_error_hierarchy_subclasses_the_builtins():
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)
    assert issubclass(CheckpointAccessError, PermissionError)
    for error in (CheckpointFormatError, UnsafeCheckpointError, ConfigError,
                  UnknownArchitectureError):
        assert issubclass(error, ValueError)
        assert issubclass(error, SpecsigError)


def test_unreadable_file():
    # Root reads any file, so the child signs a readable model first (every
    # import done), then drops to 'nobody'; the models live in a fresh
    # world-traversable folder, since pytest's tmp_path is private to root.
    base = Path(tempfile.mkdtemp())
    try:
        os.chmod(base, 0o755)
        readable = llama_dir(base / "ok")
        model = llama_dir(base / "m")
        os.chmod(model / "model.safetensors", 0)
        script = textwrap.dedent(f"""
            import os
            from sklearn_specsig import compute_signature
            from sklearn_specsig.errors import CheckpointAccessError
            compute_signature({str(readable)!r}, cache=None, progress=False)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                compute_signature({str(model)!r}, cache=None, progress=False)
            except CheckpointAccessError as exc:
                print(type(exc).__name__, exc)
        """)
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=False
        )
    finally:
        shutil.rmtree(base)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CheckpointAccessError")
    assert "permission denied" in result.stdout
    assert str(model / "model.safetensors") in result.stdout


def test_file_truncated_while_it_is_read(tmp_path):
    model = llama_dir(tmp_path / "m")
    ckpt = open_checkpoint(model)
    file = model / "model.safetensors"
    file.write_bytes(file.read_bytes()[:600])
    with pytest.raises(CheckpointFormatError, match="ended while reading tensor") as info:
        list(ckpt.iter_tensors())
    assert str(file) in str(info.value)


# -- numerically degenerate weights: NaN with a warning, never an error ------------


def _nan(w):
    w[0, 0] = float("nan")


def _inf(w):
    w[1, 2] = float("-inf")


def _zeros(w):
    w.zero_()


def _rank_one(w):
    w.copy_(torch.outer(torch.arange(1.0, 9.0), torch.ones(w.shape[1])))


@pytest.mark.parametrize("edit, reason", [
    (_nan, "NaN or Inf"),
    (_inf, "NaN or Inf"),
    (_zeros, "rank below N/2"),
    (_rank_one, "rank below N/2"),
    (lambda w: w.resize_(1, HIDDEN), "1 eigenvalue"),
    (lambda w: w.resize_(0, HIDDEN), "0 eigenvalue"),
], ids=["nan", "inf", "all-zero", "rank-one", "1xN", "0xN"])
def test_degenerate_matrix_gives_nan_and_a_warning_naming_it(tmp_path, edit, reason):
    tensors = llama_tensors()
    name = "model.layers.1.self_attn.v_proj.weight"
    edit(tensors[name])
    tensors[name] = tensors[name].contiguous()
    model = llama_dir(tmp_path / "m", tensors)
    with pytest.warns(SpectralWarning, match=name.replace(".", r"\.")) as record:
        sig = compute_signature(model, cache=tmp_path / "store", progress=False)
    assert any(reason in str(w.message) for w in record)
    v = ROLES.index("v")
    assert np.isnan(sig.values[v, 1])
    others = np.delete(sig.values.ravel(), v * N_LAYERS + 1)
    assert np.isfinite(others).all()
