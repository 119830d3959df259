"""Lazy, format-agnostic readers of LLM checkpoints.

:func:`open_checkpoint` accepts a safetensors, PyTorch ``.bin`` or GGUF file,
a model directory, or a Hugging Face hub id, and returns a
:class:`Checkpoint` that streams ``(name, tensor)`` pairs one at a time.
:func:`locate_model` also takes a model in memory (a ``torch.nn.Module`` or
a state dict: :class:`MemoryCheckpoint`).
"""

from ._base import Checkpoint
from ._gguf import GGUFCheckpoint
from ._memory import (
    MemoryCheckpoint,
    MemoryLocation,
    describe_model,
    is_model_in_memory,
    locate_model,
)
from ._names import short_names
from ._open import CheckpointLocation, locate_checkpoint, open_checkpoint
from ._pytorch import PytorchCheckpoint
from ._safetensors import SafetensorsCheckpoint

__all__ = [
    "Checkpoint",
    "CheckpointLocation",
    "GGUFCheckpoint",
    "MemoryCheckpoint",
    "MemoryLocation",
    "PytorchCheckpoint",
    "SafetensorsCheckpoint",
    "describe_model",
    "is_model_in_memory",
    "locate_checkpoint",
    "locate_model",
    "open_checkpoint",
    "short_names",
]
