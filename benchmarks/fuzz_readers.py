"""Coverage-guided fuzzing of the checkpoint readers with atheris (libFuzzer).

Each target feeds arbitrary bytes to one reader the way a downloaded file
would reach it, reads every tensor, and accepts only the library's own
errors (:class:`sklearn_specsig.errors.SpecsigError`). Any other exception,
a hang (``-timeout``) or a memory blow-up (``-rss_limit_mb``) is a finding:
libFuzzer stops and writes the input to ``crash-*``/``timeout-*``/``oom-*``.

Not part of the test suite (the hypothesis properties in
``tests/test_fuzz.py`` are); run it by hand::

    pip install atheris
    python benchmarks/fuzz_readers.py safetensors -max_total_time=600
    python benchmarks/fuzz_readers.py index -max_total_time=600
    python benchmarks/fuzz_readers.py gguf -max_total_time=600

Arguments after the target go to libFuzzer. A seed corpus of valid files is
written to ``$TMPDIR/specsig_fuzz/<target>/corpus`` and grown there.
"""

import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np
import torch
from safetensors.torch import save_file

with atheris.instrument_imports(include=["sklearn_specsig", "gguf"]):
    import gguf

    from sklearn_specsig.checkpoints import open_checkpoint
    from sklearn_specsig.errors import SpecsigError

# A RAM-backed scratch directory when there is one: every input is a file.
_SCRATCH = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def _read_all(source):
    """What the engine does with a checkpoint: names, shapes, every tensor."""
    try:
        ckpt = open_checkpoint(source)
        for name in ckpt.tensor_names():
            ckpt.tensor_shape(name)
        for _, tensor in ckpt.iter_tensors():
            tensor.sum()
    except SpecsigError:
        pass


def _with_length_prefix(header):
    """A safetensors file around header bytes, with 64 data bytes."""
    return struct.pack("<Q", len(header)) + header + bytes(range(64))


# -- targets -----------------------------------------------------------------
# The first byte picks a mode so the fuzzer reaches both the framing (raw
# file bytes) and the JSON inside it without having to guess a length field.


def fuzz_safetensors(data):
    if not data:
        return
    body = data[1:]
    content = body if data[0] % 2 == 0 else _with_length_prefix(body)
    file = _SCRATCH / "model.safetensors"
    file.write_bytes(content)
    _read_all(file)


def fuzz_index(data):
    model = _SCRATCH / "model"
    (model / "model.safetensors.index.json").write_bytes(data)
    _read_all(model)


def fuzz_gguf(data):
    file = _SCRATCH / "model.gguf"
    file.write_bytes(data)
    _read_all(file)


# -- seed corpora ---------------------------------------------------------------


def _seed_safetensors(corpus):
    file = _SCRATCH / "seed.safetensors"
    save_file(
        {"a": torch.ones(2, 3), "b": torch.zeros(4, dtype=torch.bfloat16)},
        file,
        metadata={"format": "pt"},
    )
    raw = file.read_bytes()
    (corpus / "raw").write_bytes(b"\x00" + raw)
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}
    ).encode()
    (corpus / "header").write_bytes(b"\x01" + header)


def _prepare_index_model():
    """A model directory whose shards exist, so an index can name them."""
    model = _SCRATCH / "model"
    model.mkdir()
    save_file({"a": torch.ones(2, 2)}, model / "model-00001-of-00002.safetensors")
    save_file({"b": torch.ones(3, 2)}, model / "model-00002-of-00002.safetensors")
    (_SCRATCH / "outside.safetensors").write_bytes(
        (model / "model-00001-of-00002.safetensors").read_bytes()
    )
    (model / "link.safetensors").symlink_to(_SCRATCH / "outside.safetensors")


def _seed_index(corpus):
    index = {
        "metadata": {"total_size": 40},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        },
    }
    (corpus / "index").write_bytes(json.dumps(index).encode())
    (corpus / "link").write_bytes(json.dumps({"weight_map": {"a": "link.safetensors"}}).encode())


def _seed_gguf(corpus):
    file = _SCRATCH / "seed.gguf"
    writer = gguf.GGUFWriter(file, "llama")
    writer.add_block_count(1)
    rng = np.random.default_rng(0)
    q = gguf.GGMLQuantizationType
    for name, qtype in [("blk.0.attn_q.weight", q.Q8_0), ("blk.0.attn_k.weight", q.Q4_1), ("blk.0.attn_v.weight", q.F16)]:
        data = rng.standard_normal((2, 256)).astype(np.float32)
        packed = gguf.quants.quantize(data, qtype)
        writer.add_tensor(name, packed, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (corpus / "seed").write_bytes(file.read_bytes())


TARGETS = {
    "safetensors": (fuzz_safetensors, _seed_safetensors),
    "index": (fuzz_index, _seed_index),
    "gguf": (fuzz_gguf, _seed_gguf),
}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = sys.argv[1]
    fuzz, seed = TARGETS[target]
    corpus = Path(tempfile.gettempdir()) / "specsig_fuzz" / target / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    if target == "index":
        _prepare_index_model()
    seed(corpus)
    args = [sys.argv[0], *sys.argv[2:], str(corpus)]
    if not any(a.startswith("-timeout=") for a in args):
        args.insert(1, "-timeout=20")
    if not any(a.startswith("-rss_limit_mb=") for a in args):
        args.insert(1, "-rss_limit_mb=4096")
    atheris.Setup(args, fuzz)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
