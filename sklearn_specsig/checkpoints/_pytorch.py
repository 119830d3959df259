"""Reader for PyTorch ``.bin`` checkpoints, loaded with ``weights_only=True``."""

import pickle
import zipfile

import torch

from ..errors import CheckpointFormatError, UnsafeCheckpointError
from ._base import Checkpoint, read_shard_index


def load_state_dict(path):
    """Load a state dict without ever running pickled code.

    Parameters
    ----------
    path : pathlib.Path
        A file written by ``torch.save``.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        Non-tensor entries are dropped. For the zip format (every
        ``torch.save`` since PyTorch 1.6) tensors are memory-mapped, so their
        data is read only when used; legacy files are read whole.

    Raises
    ------
    UnsafeCheckpointError
        ``torch.load(weights_only=True)`` refused the file: it pickles
        something other than tensors, possibly code.
    CheckpointFormatError
        The file is corrupted or holds no tensors.
    """
    # mmap needs the zip container; the legacy format is read in one go.
    mmap = zipfile.is_zipfile(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"Refused to load '{path}': torch.load(weights_only=True) found "
            "objects other than tensors in it, which could run arbitrary code "
            "(or the file is corrupted). If you trust it, convert it to "
            "safetensors (e.g. with safetensors.torch.save_file) and open that."
            f" Loader message: {str(exc).splitlines()[-1]}"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointFormatError(
            f"Cannot read '{path}' as a PyTorch checkpoint (truncated or "
            f"corrupted?): {exc}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointFormatError(
            f"'{path}' holds a {type(state).__name__}, not a state dict of tensors."
        )
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointFormatError(f"'{path}' holds no tensors at its top level.")
    return tensors


class PytorchCheckpoint(Checkpoint):
    """A PyTorch ``.bin`` checkpoint: one file, or shards listed in an index.

    Files are loaded with ``torch.load(weights_only=True, mmap=True)``, one
    file at a time; plain pickle is never used.

    Parameters
    ----------
    source : str
        The path or hub id exactly as the user gave it.
    path : pathlib.Path
        The ``.bin`` file or the model directory.
    file : pathlib.Path
        The ``.bin`` file, or a ``pytorch_model.bin.index.json``.
    config : dict
        The model configuration.
    config_file : pathlib.Path or None, default=None
        The file ``config`` was read from.
    """

    format = "pytorch"

    def __init__(self, source, path, file, config, config_file=None):
        if file.name.endswith(".index.json"):
            files = list(read_shard_index(file)[1].values())
        else:
            files = [file]
        super().__init__(source, path, files, config, config_file)
        # A .bin file has no header: shapes need a (memory-mapped) load, so
        # they are gathered on first use only.
        self._shapes = None

    def _file_shapes(self):
        if self._shapes is None:
            self._shapes = {}
            for file in self._weight_files:
                state = load_state_dict(file)
                self._shapes[file] = {k: tuple(v.shape) for k, v in state.items()}
        return self._shapes

    def tensor_names(self):
        return [name for shapes in self._file_shapes().values() for name in shapes]

    def tensor_shape(self, name):
        for shapes in self._file_shapes().values():
            if name in shapes:
                return shapes[name]
        raise self._unknown_tensor(name)

    def iter_tensors(self, names=None):
        wanted = self._select(names)
        for file in self._weight_files:
            if wanted is not None and wanted.isdisjoint(self._file_shapes()[file]):
                continue
            state = load_state_dict(file)
            for name in list(state):
                # Drop our reference as we go so a consumed tensor's pages can
                # be released before the next one is touched.
                tensor = state.pop(name)
                if wanted is None or name in wanted:
                    yield name, tensor
