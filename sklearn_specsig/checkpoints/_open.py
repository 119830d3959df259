"""Entry point: open a checkpoint from a file, a directory or a hub id."""

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointAccessError, CheckpointNotFoundError, SpecsigError
from ._adapter import adapter_location
from ._base import (
    CONFIG_NAME,
    EXPECTED_FILES,
    read_config,
    read_shard_index,
    select_weight_files,
)
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
    return locate_checkpoint(
        source, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    ).open()


@dataclass(frozen=True)
class CheckpointLocation:
    """Where a checkpoint's files are, found without parsing any weights.

    Attributes
    ----------
    source : str
        The path or hub id exactly as the user gave it.
    format : {"safetensors", "pytorch", "gguf"}
    path : pathlib.Path
        The local weight file or model directory.
    file : pathlib.Path
        The weight file, or the shard index (``*.index.json``).
    config_file : pathlib.Path or None
        ``config.json`` when the format reads one and it is there.
    """

    source: str
    format: str
    path: Path
    file: Path
    config_file: Path | None

    def files(self):
        """Every file that opening this checkpoint reads: weight files (the
        shards an index lists), the index and ``config.json``.

        Reads at most the shard index (JSON), never a weight file's header.

        Returns
        -------
        list of pathlib.Path
        """
        with _access_errors(self.source):
            if self.file.name.endswith(".index.json"):
                files = [*read_shard_index(self.file)[1].values(), self.file]
            else:
                files = [self.file]
        return files + ([self.config_file] if self.config_file is not None else [])

    def file_stats(self):
        """``(absolute path, size, st_mtime_ns)`` of :meth:`files`, the
        identity of the checkpoint as it is on disk now."""
        stats = []
        with _access_errors(self.source):
            for file in self.files():
                st = file.stat()
                stats.append((str(file.absolute()), st.st_size, st.st_mtime_ns))
        return stats

    def open(self):
        """The :class:`Checkpoint` reader (parses headers)."""
        with _access_errors(self.source):
            if self.format == "gguf":
                return GGUFCheckpoint(self.source, self.path, self.file)
            config, config_file = ({}, None) if self.config_file is None else (
                read_config(self.config_file.parent))
            cls = SafetensorsCheckpoint if self.format == "safetensors" else PytorchCheckpoint
            return cls(self.source, self.path, self.file, config, config_file)


def locate_checkpoint(source, *, revision=None, cache_dir=None, local_files_only=None,
                      base=None):
    """Find the files of a checkpoint without reading them.

    Takes what :func:`open_checkpoint` takes (a hub id is resolved through
    the huggingface_hub cache the same way) and raises the same errors for
    a missing path, an unusable directory or a wrong suffix.  A PEFT LoRA
    adapter folder (``adapter_config.json``) is an ``AdapterLocation``: the
    merged model ``W + s * B A`` over its base, which is ``base`` (a path
    or hub id) when given, else the adapter's ``base_model_name_or_path``.

    Returns
    -------
    CheckpointLocation or AdapterLocation
    """
    given = os.fspath(source)
    with _access_errors(given):
        location = _locate(source, given, revision, cache_dir, local_files_only)

    def locate_base(base_source, revision=None):
        return locate_checkpoint(base_source, revision=revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only)

    return adapter_location(location, base, locate_base)


@contextmanager
def _access_errors(given):
    try:
        yield
    except PermissionError as exc:
        if isinstance(exc, SpecsigError):
            raise
        raise CheckpointAccessError(
            f"Cannot open checkpoint '{given}': permission denied on "
            f"'{exc.filename}'. Make the files readable by this user (or copy "
            "them somewhere that is)."
        ) from exc


def _locate(source, given, revision, cache_dir, local_files_only):
    path = Path(given).expanduser()
    if path.is_file():
        return _locate_file(given, path)
    if path.is_dir():
        return _locate_directory(given, path)
    if not isinstance(source, os.PathLike) and looks_like_repo_id(given):
        directory = resolve_repo_id(
            given,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        return _locate_directory(given, directory)
    raise CheckpointNotFoundError(
        f"No checkpoint at '{given}': no such file or directory. Expected a "
        ".safetensors, .bin or .gguf file, a model directory holding "
        f"{EXPECTED_FILES}, or a Hugging Face hub id 'org/name'."
    )


def _config_beside(folder):
    config = folder / CONFIG_NAME
    return config if config.is_file() else None


def _locate_file(source, file):
    if file.suffix == ".gguf":
        return CheckpointLocation(source, "gguf", file, file, None)
    if file.suffix == ".safetensors":
        fmt = "safetensors"
    elif file.suffix in _PYTORCH_SUFFIXES:
        fmt = "pytorch"
    else:
        raise CheckpointNotFoundError(
            f"'{file}' is not a weight file: expected a .safetensors, "
            f"{', '.join(_PYTORCH_SUFFIXES)} or .gguf file, or a model directory."
        )
    return CheckpointLocation(source, fmt, file, file, _config_beside(file.parent))


def _locate_directory(source, directory):
    # A PEFT adapter folder reads its adapter_model.* (safetensors first, or
    # the .bin of safe_serialization=False), even beside a full model's files.
    adapter = [name for name in ("adapter_model.safetensors", "adapter_model.bin")
               if (directory / name).is_file()]
    if adapter and (directory / "adapter_config.json").is_file():
        fmt, name = ("safetensors" if adapter[0].endswith(".safetensors") else "pytorch",
                     adapter[0])
    else:
        fmt, name = select_weight_files(
            (p.name for p in directory.iterdir() if p.is_file()), directory
        )
    if fmt is None:
        raise CheckpointNotFoundError(
            f"No weight files in directory '{directory}': expected {EXPECTED_FILES}."
        )
    config = None if fmt == "gguf" else _config_beside(directory)
    return CheckpointLocation(source, fmt, directory, directory / name, config)
