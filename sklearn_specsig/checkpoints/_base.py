"""The :class:`Checkpoint` interface and helpers shared by every format."""

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path

from ..errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConfigError,
    UnsafeCheckpointError,
)

CONFIG_NAME = "config.json"

# Hugging Face's canonical file names, in order of preference: safetensors
# first because it needs no unpickling and supports zero-copy mmap.
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"
PYTORCH_INDEX_NAME = "pytorch_model.bin.index.json"

EXPECTED_FILES = (
    f"{SAFETENSORS_NAME}, {SAFETENSORS_INDEX_NAME} with its shards, "
    f"{PYTORCH_NAME}, {PYTORCH_INDEX_NAME} with its shards, "
    "or a single .gguf file"
)


class Checkpoint(ABC):
    """Read-only, lazy view of the weights of one model.

    Subclasses read one on-disk format. Names and shapes come from file
    headers; tensor data is only read by :meth:`iter_tensors`, one tensor at
    a time.

    Parameters
    ----------
    source : str
        The path or hub id exactly as the user gave it.
    path : pathlib.Path
        The resolved local file or directory.
    weight_files : list of pathlib.Path
        Every file holding tensor data, in reading order.
    config : dict
        The model configuration with Hugging Face ``config.json`` keys.
    config_file : pathlib.Path or None, default=None
        The file ``config`` was read from, if any.

    Attributes
    ----------
    format : str
        ``"safetensors"``, ``"pytorch"`` or ``"gguf"``.
    """

    format = None

    def __init__(self, source, path, weight_files, config, config_file=None):
        self.source = source
        self.path = path
        self.config = config
        self._weight_files = list(weight_files)
        self._config_file = config_file

    def __repr__(self):
        return f"{type(self).__name__}(source={self.source!r}, path='{self.path}')"

    @abstractmethod
    def tensor_names(self):
        """Names of all tensors, in on-disk order, read from headers only.

        Returns
        -------
        names : list of str
        """

    @abstractmethod
    def tensor_shape(self, name):
        """Shape of one tensor in PyTorch ``(out, in)`` orientation.

        Parameters
        ----------
        name : str
            A name from :meth:`tensor_names`.

        Returns
        -------
        shape : tuple of int
        """

    @abstractmethod
    def iter_tensors(self, names=None):
        """Yield ``(name, tensor)`` pairs lazily, one tensor in memory at a time.

        Parameters
        ----------
        names : iterable of str, default=None
            Restrict the iteration to these tensors. ``None`` yields all.

        Yields
        ------
        name : str
        tensor : torch.Tensor
            On CPU, in on-disk order.
        """

    def file_stats(self):
        """Identity of the files behind this checkpoint, for a cache memo.

        Returns
        -------
        stats : list of tuple (str, int, int)
            ``(absolute path, size in bytes, st_mtime_ns)`` of every weight
            file and of ``config.json`` when one was read.
        """
        files = list(self._weight_files)
        if self._config_file is not None:
            files.append(self._config_file)
        stats = []
        for file in files:
            st = file.stat()
            stats.append((str(file.absolute()), st.st_size, st.st_mtime_ns))
        return stats

    def _select(self, names):
        """Validate a ``names`` argument; return it as a set or None for all."""
        if names is None:
            return None
        if isinstance(names, str):
            names = [names]
        wanted = set(names)
        unknown = wanted.difference(self.tensor_names())
        if unknown:
            raise KeyError(
                f"{len(unknown)} tensor(s) not in checkpoint '{self.path}': "
                f"{sorted(unknown)[:5]}"
            )
        return wanted

    def _unknown_tensor(self, name):
        return KeyError(f"No tensor named {name!r} in checkpoint '{self.path}'.")


def parse_json_object(raw, path, what, error=CheckpointFormatError):
    """Parse bytes of JSON that must be an object, from a file we do not trust.

    Besides syntax errors and non-UTF-8 bytes, a hostile file can nest
    arrays a million deep (``RecursionError`` in the parser) or write an
    integer of a million digits (``ValueError`` from Python's int-size
    guard); all of these become ``error`` naming the file.

    Parameters
    ----------
    raw : bytes
    path : path-like
        The file the bytes came from, for the message.
    what : str
        What the bytes are (``"header"``, ``"JSON"``), for the message.
    error : type, default=CheckpointFormatError

    Returns
    -------
    dict
    """
    try:
        content = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise error(f"'{path}' has a corrupted {what}: {str(exc)[:200]}.") from exc
    if not isinstance(content, dict):
        raise error(
            f"'{path}' has a corrupted {what}: expected a JSON object, got "
            f"{type(content).__name__}."
        )
    return content


# config.json and shard indexes of the largest models are a few MB; a file
# far larger is not one, and is refused before it is read into memory.
_MAX_JSON_BYTES = 100_000_000


def read_json(path, error=CheckpointFormatError):
    """Parse a JSON object from ``path``, raising ``error`` naming the file."""
    size = Path(path).stat().st_size
    if size > _MAX_JSON_BYTES:
        raise error(
            f"'{path}' is {size} bytes long, too large for a config or index "
            "file; it is not one."
        )
    return parse_json_object(Path(path).read_bytes(), path, "JSON", error)


def read_config(directory):
    """Read ``config.json`` from ``directory``.

    Returns
    -------
    config : dict
        Empty when the directory has no ``config.json``.
    config_file : pathlib.Path or None
    """
    config_file = Path(directory) / CONFIG_NAME
    if not config_file.is_file():
        return {}, None
    return read_json(config_file, error=ConfigError), config_file


def select_weight_files(names, folder="the folder"):
    """Pick the weight files of a model among the files of one folder.

    The same rule serves local directories and hub repositories, so a hub
    download fetches exactly what opening the directory will read.

    Parameters
    ----------
    names : iterable of str
        File names at the top level of the folder.
    folder : str or path-like, default="the folder"
        The folder, named in error messages.

    Returns
    -------
    format : str or None
        ``None`` when the folder holds no weights.
    name : str or None
        The single weight file, or the shard index (``*.index.json``).
    """
    names = set(names)
    if SAFETENSORS_NAME in names:
        return "safetensors", SAFETENSORS_NAME
    if SAFETENSORS_INDEX_NAME in names:
        return "safetensors", SAFETENSORS_INDEX_NAME
    safetensors = sorted(n for n in names if n.endswith(".safetensors"))
    if len(safetensors) == 1:
        return "safetensors", safetensors[0]
    if len(safetensors) > 1:
        raise CheckpointFormatError(
            f"Found {len(safetensors)} .safetensors files in '{folder}' "
            f"({safetensors[:4]}) but "
            f"no {SAFETENSORS_INDEX_NAME} saying which belong to the model; "
            "pass the path of one file."
        )
    if PYTORCH_NAME in names:
        return "pytorch", PYTORCH_NAME
    if PYTORCH_INDEX_NAME in names:
        return "pytorch", PYTORCH_INDEX_NAME
    ggufs = sorted(n for n in names if n.endswith(".gguf"))
    if len(ggufs) == 1:
        return "gguf", ggufs[0]
    if len(ggufs) > 1:
        raise CheckpointFormatError(
            f"Found {len(ggufs)} .gguf files in '{folder}' ({ggufs[:4]}); pass the path of "
            "the one to read."
        )
    return None, None


def _allowed_roots(directory):
    """Folders that a shard of ``directory`` may resolve into.

    A snapshot in the Hugging Face cache (``models--org--name/snapshots/<commit>``)
    holds symlinks to ``models--org--name/blobs``; those are the hub's own
    links, so that blobs folder is allowed as well.
    """
    directory = directory.resolve()
    roots = [directory]
    if directory.parent.name == "snapshots" and directory.parent.parent.name.startswith(
        "models--"
    ):
        roots.append(directory.parent.parent / "blobs")
    return roots


def read_shard_index(index_file):
    """Read a ``*.index.json`` and return its shard files safely.

    Parameters
    ----------
    index_file : pathlib.Path
        A Hugging Face shard index with a ``weight_map`` of tensor name to
        shard file name.

    Returns
    -------
    weight_map : dict of str to str
    shards : dict of str to pathlib.Path
        Shard file name to path, sorted by name (the ``-00001-of-0000N``
        order in which they were written).

    Raises
    ------
    UnsafeCheckpointError
        A shard path is absolute, climbs with ``..`` or resolves (through a
        symlink) outside the model directory.
    CheckpointNotFoundError
        A shard file is missing.
    """
    index = read_json(index_file)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointFormatError(
            f"'{index_file}' has no 'weight_map' of tensor name to shard file."
        )
    bad = [v for v in weight_map.values() if not isinstance(v, str)]
    if bad:
        raise CheckpointFormatError(
            f"'{index_file}' names a shard {bad[0]!r} that is not a file name."
        )
    directory = index_file.parent
    roots = _allowed_roots(directory)
    shards = {}
    for shard in sorted(set(weight_map.values())):
        # On Windows a backslash separates paths too, so "..\x" climbs out.
        if os.path.isabs(shard) or ".." in Path(shard).parts or "\\" in shard:
            raise UnsafeCheckpointError(
                f"'{index_file}' points at shard {shard!r} outside the model "
                "directory; refusing to read it."
            )
        path = directory / shard
        try:
            exists = path.is_file()
            target = path.resolve()
        except (OSError, ValueError) as exc:  # name too long, NUL byte, ...
            raise CheckpointFormatError(
                f"'{index_file}' names a shard {shard[:80]!r} that is not a valid "
                f"file name ({exc.__class__.__name__}: {str(exc)[:80]})."
            ) from exc
        if not exists:
            raise CheckpointNotFoundError(
                f"Shard '{path}' listed in '{index_file}' does not exist; the "
                "download is incomplete."
            )
        if not any(target.is_relative_to(root) for root in roots):
            raise UnsafeCheckpointError(
                f"Shard '{path}' listed in '{index_file}' resolves to '{target}', "
                "outside the model directory; refusing to read it."
            )
        shards[shard] = path
    return weight_map, shards
