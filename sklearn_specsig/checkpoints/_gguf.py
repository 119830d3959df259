"""Reader for GGUF files (llama.cpp), dequantized to float32."""

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
    return config


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
        try:
            reader = GGUFReader(file)
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
        if tensor.data.dtype != np.uint8:
            return tensor.data.astype(np.float32)
        try:
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
