"""Entry point: open a checkpoint from a file, a directory or a hub id."""

import os
from pathlib import Path

from ..errors import CheckpointAccessError, CheckpointNotFoundError, SpecsigError
from ._base import EXPECTED_FILES, read_config, select_weight_files
from ._gguf import GGUFCheckpoint
from ._hub import looks_like_repo_id, resolve_repo_id
from ._pytorch import PytorchCheckpoint
from ._safetensors import SafetensorsCheckpoint

_PYTORCH_SUFFIXES = (".bin", ".pt", ".pth")


def open_checkpoint(source, *, revision=None, cache_dir=None, local_files_only=None):
    """Open the weights of a model without loading them.

    Parameters
    ----------
    source : str or path-like
        One of:

        - a ``.safetensors``, ``.bin`` (``.pt``, ``.pth``) or ``.gguf`` file;
          for the first two, a ``config.json`` beside it is read as the
          configuration;
        - a model directory holding ``model.safetensors``, or shards with
          ``model.safetensors.index.json``, or ``pytorch_model.bin`` (or its
          shards and index), or exactly one ``.gguf`` file. Safetensors win
          when several formats are present;
        - a Hugging Face hub id ``"org/name"`` that is not an existing local
          path, fetched with ``huggingface_hub.snapshot_download``.
    revision : str, default=None
        Branch, tag or commit of a hub id. Ignored for local paths.
    cache_dir : str or path-like, default=None
        huggingface_hub cache directory for hub ids; ``None`` uses its default.
        Ignored for local paths.
    local_files_only : bool, default=None
        For hub ids, only use the local cache. ``None`` follows the
        ``HF_HUB_OFFLINE`` environment variable.

    Returns
    -------
    checkpoint : Checkpoint
        A lazy reader: names and shapes come from headers, tensors are read
        one at a time by ``checkpoint.iter_tensors()``.

    Raises
    ------
    CheckpointNotFoundError
        Nothing at ``source`` (or in the hub cache) holds weights.
    CheckpointFormatError
        A weight file is truncated or corrupted.
    CheckpointAccessError
        A file exists but cannot be read (permissions).
    UnsafeCheckpointError
        A ``.bin`` file pickles more than tensors, or a shard index points
        outside the model directory.
    ConfigError
        ``config.json`` is not a valid JSON object.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from safetensors.torch import save_file
    >>> from sklearn_specsig.checkpoints import open_checkpoint
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     file = os.path.join(folder, "model.safetensors")
    ...     save_file({"w": torch.zeros(3, 2)}, file)
    ...     ckpt = open_checkpoint(folder)
    ...     print(ckpt.format, ckpt.tensor_names(), ckpt.tensor_shape("w"))
    safetensors ['w'] (3, 2)
    """
    given = os.fspath(source)
    try:
        return _open(source, given, revision, cache_dir, local_files_only)
    except PermissionError as exc:
        if isinstance(exc, SpecsigError):
            raise
        raise CheckpointAccessError(
            f"Cannot open checkpoint '{given}': permission denied on "
            f"'{exc.filename}'. Make the files readable by this user (or copy "
            "them somewhere that is)."
        ) from exc


def _open(source, given, revision, cache_dir, local_files_only):
    path = Path(given).expanduser()
    if path.is_file():
        return _open_file(given, path)
    if path.is_dir():
        return _open_directory(given, path)
    if not isinstance(source, os.PathLike) and looks_like_repo_id(given):
        directory = resolve_repo_id(
            given,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        return _open_directory(given, directory)
    raise CheckpointNotFoundError(
        f"No checkpoint at '{given}': no such file or directory. Expected a "
        ".safetensors, .bin or .gguf file, a model directory holding "
        f"{EXPECTED_FILES}, or a Hugging Face hub id 'org/name'."
    )


def _open_file(source, file):
    if file.suffix == ".gguf":
        return GGUFCheckpoint(source, file, file)
    if file.suffix == ".safetensors":
        cls = SafetensorsCheckpoint
    elif file.suffix in _PYTORCH_SUFFIXES:
        cls = PytorchCheckpoint
    else:
        raise CheckpointNotFoundError(
            f"'{file}' is not a weight file: expected a .safetensors, "
            f"{', '.join(_PYTORCH_SUFFIXES)} or .gguf file, or a model directory."
        )
    config, config_file = read_config(file.parent)
    return cls(source, file, file, config, config_file)


def _open_directory(source, directory):
    fmt, name = select_weight_files(
        (p.name for p in directory.iterdir() if p.is_file()), directory
    )
    if fmt is None:
        raise CheckpointNotFoundError(
            f"No weight files in directory '{directory}': expected {EXPECTED_FILES}."
        )
    file = directory / name
    if fmt == "gguf":
        return GGUFCheckpoint(source, directory, file)
    config, config_file = read_config(directory)
    cls = SafetensorsCheckpoint if fmt == "safetensors" else PytorchCheckpoint
    return cls(source, directory, file, config, config_file)
