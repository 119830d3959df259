"""Reader for GGUF files (llama.cpp), dequantized to float32."""

import mmap
import struct

import numpy as np
import torch
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

from ..errors import CheckpointFormatError
from ._base import Checkpoint

# GGUF metadata key (after "{arch}.") -> Hugging Face config.json key.
_CONFIG_KEYS = {
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "context_length": "max_position_embeddings",
    "vocab_size": "vocab_size",
    "expert_count": "num_local_experts",
    "expert_used_count": "num_experts_per_tok",
}

# llama.cpp architecture names that differ from the Hugging Face model_type.
# Any other name is passed through unchanged.
_MODEL_TYPES = {
    "gptneox": "gpt_neox",
    "phi2": "phi",
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "starcoder": "gpt_bigcode",
    "command-r": "cohere",
    "deepseek2": "deepseek_v2",
}


# What gguf's reader raises on bytes that are not a valid GGUF file: bad
# magic or version (ValueError), non-UTF-8 strings (UnicodeDecodeError),
# counts and offsets past the end (IndexError, ValueError from numpy views),
# unknown enum values (ValueError), and an unmappable file (OSError).
_CORRUPT_DATA_ERRORS = (ValueError, IndexError, KeyError, TypeError, OverflowError, OSError)


# Bytes per element of GGUF's scalar metadata types (gguf.GGUFValueType).
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
#: More metadata array elements than any real model has (the largest
#: tokenizer vocabularies are ~256k entries); gguf's reader walks arrays one
#: element at a time, so a file claiming billions would hold it for hours.
MAX_METADATA_ARRAY = 4_000_000
#: Real files nest metadata arrays at most once (lists of lists are rare);
#: gguf's reader recurses per level, so deep nesting would overflow the stack.
_MAX_NESTING = 8


def check_metadata_bounds(file):
    """Refuse a GGUF file whose metadata counts cannot fit in the file.

    ``gguf.GGUFReader`` trusts the counts: an array claiming 2**60 elements
    past the end of the file reads empty slices forever instead of failing.
    This walks the key/value section (no values are decoded) and checks
    every length and count against the bytes that remain.

    Raises
    ------
    CheckpointFormatError
        A count runs past the end of the file or exceeds
        :data:`MAX_METADATA_ARRAY`.
    """
    if file.stat().st_size < 24:
        return  # too short to hold counts: GGUFReader says so itself
    with open(file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size = len(data)

        def fail(what):
            raise CheckpointFormatError(
                f"'{file}' is a truncated or corrupted GGUF file: {what} (file of "
                f"{size} bytes)."
            )

        order = "<"

        def read(fmt, at):
            n = struct.calcsize(order + fmt)
            if at + n > size:
                fail(f"metadata runs past the end at byte {at}")
            return struct.unpack_from(order + fmt, data, at), at + n

        def skip_string(at):
            (length,), at = read("Q", at)
            if length > size - at:
                fail(f"a string of {length} bytes at byte {at}")
            return at + length

        def skip_value(kind, at, depth=0):
            if depth > _MAX_NESTING:
                fail(f"metadata arrays nested more than {_MAX_NESTING} deep at byte {at}")
            if kind in _SCALAR_BYTES:
                return read(f"{_SCALAR_BYTES[kind]}s", at)[1]
            if kind == _STRING:
                return skip_string(at)
            if kind != _ARRAY:
                fail(f"unknown metadata type {kind} at byte {at}")
            (item_kind, count), at = read("IQ", at)
            if count > MAX_METADATA_ARRAY:
                fail(f"a metadata array of {count} elements at byte {at}")
            if item_kind in _SCALAR_BYTES:
                if count * _SCALAR_BYTES[item_kind] > size - at:
                    fail(f"an array of {count} values past the end at byte {at}")
                return at + count * _SCALAR_BYTES[item_kind]
            for _ in range(count):
                at = skip_value(item_kind, at, depth + 1)
            return at

        if data[:4] != b"GGUF":
            return  # not ours to judge: GGUFReader reports bad magic and versions
        (version,), _ = read("I", 4)
        if version & 0xFFFF == 0:  # a byte-swapped (big-endian) file, as gguf decides
            order = ">"
        (version, _, kv_count), at = read("IQQ", 4)
        if version not in (2, 3):
            return
        for _ in range(kv_count):
            at = skip_string(at)
            (kind,), at = read("I", at)
            at = skip_value(kind, at)


class _ArrayReader(GGUFReader):
    """``GGUFReader`` whose ``data`` is a plain ndarray view of its mmap.

    gguf parses the metadata one value at a time, two slices per string, so
    a 49k-token vocabulary with its 49k merges costs ~250k slices.  Slicing
    an ``np.memmap`` builds a new memmap subclass each time (its
    ``__array_finalize__`` dominated the profile).  A plain view of the same
    mapping gives identical fields and tensors (``tests/test_checkpoints.py``
    and ``tests/test_real_weights.py`` compare them part for part), faster:
    on a 2-core AMD EPYC, gguf's parse of SmolLM2-135M's Q4_1 file went
    from 6.5 s to 2.4 s, and opening the checkpoint from 8.4 s to 2.5 s.
    The view keeps the mapping alive through its ``base``.
    """

    @property
    def data(self):
        return self._plain_data

    @data.setter
    def data(self, mapped):
        self._plain_data = mapped.view(np.ndarray)


def _field_value(field):
    """Python value of a scalar, string or array GGUF metadata field."""
    kind = field.types[0]
    if kind == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    if kind == GGUFValueType.ARRAY:
        if field.types[-1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    return field.parts[field.data[0]].tolist()[0]


def gguf_config(reader):
    """Translate GGUF metadata into Hugging Face ``config.json`` keys.

    Parameters
    ----------
    reader : gguf.GGUFReader

    Returns
    -------
    config : dict
        ``model_type``, ``gguf_architecture`` and whichever of the sizes in
        ``_CONFIG_KEYS`` the file records; empty without
        ``general.architecture``.
    """
    field = reader.get_field("general.architecture")
    if field is None:
        return {}
    arch = _field_value(field)
    config = {"model_type": _MODEL_TYPES.get(arch, arch), "gguf_architecture": arch}
    for key, hf_key in _CONFIG_KEYS.items():
        field = reader.get_field(f"{arch}.{key}")
        if field is None:
            continue
        value = _field_value(field)
        # Some architectures store a per-layer array (e.g. head_count_kv);
        # a constant one is the plain integer Hugging Face configs use.
        if isinstance(value, list) and value and len(set(value)) == 1:
            value = value[0]
        config[hf_key] = value
    config.update(_mla_config(reader, arch))
    return config


def _mla_config(reader, arch):
    """qk_nope_head_dim / v_head_dim / kv_lora_rank of multi-head latent attention.

    llama.cpp's DeepseekV2Model writes key_length = qk_nope + qk_rope and
    value_length = v_head_dim; since MLA absorption (attn_k_b / attn_v_b) it
    writes the latent widths there and the per-head ones as *_length_mla.
    """
    def get(key):
        field = reader.get_field(f"{arch}.{key}")
        return None if field is None else _field_value(field)

    rank = get("attention.kv_lora_rank")
    if rank is None:
        return {}
    key = get("attention.key_length_mla") or get("attention.key_length")
    value = get("attention.value_length_mla") or get("attention.value_length")
    rope = get("rope.dimension_count")
    found = {"kv_lora_rank": rank}
    if key is not None and rope is not None:
        found["qk_nope_head_dim"] = key - rope
    if value is not None:
        found["v_head_dim"] = value
    return found


class GGUFCheckpoint(Checkpoint):
    """A GGUF file, read with ``gguf.GGUFReader`` (memory-mapped).

    Quantized tensors (Q8_0, Q4_0, Q4_K, Q6_K, ... anything that
    ``gguf.quants.dequantize`` supports) are dequantized to float32 one at a
    time. ggml lists dimensions innermost first, so shapes are reversed to
    PyTorch's ``(out, in)``. ``config`` is translated from the metadata.

    Note that llama.cpp's converter permutes the rows of some attention
    projections; such permutations leave singular values unchanged.

    Parameters
    ----------
    source : str
        The path or hub id exactly as the user gave it.
    path : pathlib.Path
        The ``.gguf`` file or the directory holding it.
    file : pathlib.Path
        The ``.gguf`` file.
    """

    format = "gguf"

    def __init__(self, source, path, file):
        check_metadata_bounds(file)
        try:
            reader = _ArrayReader(file)
            config = gguf_config(reader)
        except _CORRUPT_DATA_ERRORS as exc:
            raise CheckpointFormatError(
                f"Cannot read '{file}' as GGUF (truncated or corrupted?): "
                f"{type(exc).__name__}: {str(exc)[:200]}"
            ) from exc
        if reader.byte_order != "I":
            raise CheckpointFormatError(
                f"'{file}' is a big-endian GGUF file, which is not supported; "
                "convert it to little-endian."
            )
        super().__init__(source, path, [file], config)
        tensors = sorted(reader.tensors, key=lambda t: t.data_offset)
        self._tensors = {t.name: t for t in tensors}

    def tensor_names(self):
        return list(self._tensors)

    def tensor_shape(self, name):
        if name not in self._tensors:
            raise self._unknown_tensor(name)
        return tuple(int(d) for d in reversed(self._tensors[name].shape))

    def iter_tensors(self, names=None):
        wanted = self._select(names)
        for name, tensor in self._tensors.items():
            if wanted is None or name in wanted:
                yield name, torch.from_numpy(self._to_float32(tensor))

    def _to_float32(self, tensor):
        # The reader already types F32/F16/F64 and integer tensors; only block
        # types (BF16 and the quants) come back as raw uint8 bytes. astype
        # also copies the data out of the read-only memory map.
        if tensor.data.nbytes != tensor.n_bytes:
            raise CheckpointFormatError(
                f"Tensor {tensor.name!r} in '{self._weight_files[0]}' should hold "
                f"{tensor.n_bytes} bytes but the file has {tensor.data.nbytes} for it: "
                "truncated or corrupted file."
            )
        try:
            if tensor.data.dtype != np.uint8:
                return tensor.data.astype(np.float32)
            return dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError as exc:
            raise CheckpointFormatError(
                f"Tensor {tensor.name!r} in '{self._weight_files[0]}' uses "
                f"{tensor.tensor_type.name}, which gguf cannot dequantize."
            ) from exc
        except _CORRUPT_DATA_ERRORS as exc:
            raise CheckpointFormatError(
                f"Tensor {tensor.name!r} in '{self._weight_files[0]}' cannot be "
                f"dequantized (corrupted file?): {type(exc).__name__}: {exc}"
            ) from exc
