"""Lazy, format-agnostic readers of LLM checkpoints.

:func:`open_checkpoint` accepts a safetensors, PyTorch ``.bin`` or GGUF file,
a model directory, or a Hugging Face hub id, and returns a
:class:`Checkpoint` that streams ``(name, tensor)`` pairs one at a time.
"""

from ._base import Checkpoint
from ._gguf import GGUFCheckpoint
from ._open import CheckpointLocation, locate_checkpoint, open_checkpoint
from ._pytorch import PytorchCheckpoint
from ._safetensors import SafetensorsCheckpoint

__all__ = [
    "Checkpoint",
    "CheckpointLocation",
    "GGUFCheckpoint",
    "PytorchCheckpoint",
    "SafetensorsCheckpoint",
    "locate_checkpoint",
    "open_checkpoint",
]
