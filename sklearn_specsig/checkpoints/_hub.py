"""Resolve Hugging Face hub ids to a local snapshot directory."""

import os
import re
from pathlib import Path

from ..errors import CheckpointNotFoundError
from ._base import select_weight_files

# "org/name" with the Hub's characters; "--" and ".." are not allowed in ids.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json")

# Tried in order; the .bin tier is only downloaded when the repository has no
# safetensors weights, so a repo shipping both is fetched once, not twice.
# Only top-level files, like a local directory: subfolders hold other
# artefacts (original/ consolidated checkpoints, onnx/ exports).  A PEFT
# adapter repository is read like an adapter folder: its adapter_config.json
# comes with adapter_model.safetensors (first tier) or adapter_model.bin
# (second); its base model is resolved later, from that config or base=.
_ADAPTER_CONFIG = "adapter_config.json"
_TIERS = (
    ["config.json", _ADAPTER_CONFIG, "*.safetensors", "*.safetensors.index.json"],
    ["config.json", _ADAPTER_CONFIG, "*.bin", "*.bin.index.json"],
)
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_TOP_LEVEL_ONLY = ["*/*"]

_TRUE = {"1", "ON", "YES", "TRUE"}


def looks_like_repo_id(source):
    """Whether a string that is not a local path should be read as a hub id.

    Parameters
    ----------
    source : str

    Returns
    -------
    is_repo_id : bool
        True for ``"org/name"``; false for anything with a weight-file
        suffix, which is surely a mistyped local path.
    """
    return (
        _REPO_ID.fullmatch(source) is not None
        and "--" not in source
        and ".." not in source
        and not source.endswith(_WEIGHT_SUFFIXES)
    )


def _offline(local_files_only):
    if local_files_only is not None:
        return bool(local_files_only)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; reading it again
    # honours a variable set later in the same process.
    env = os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE
    from huggingface_hub import constants

    return env or bool(constants.HF_HUB_OFFLINE)


def _holds_weights(directory):
    """Whether a snapshot holds a model's weights or a PEFT adapter's."""
    names = {p.name for p in directory.iterdir()}
    if _ADAPTER_CONFIG in names and names.intersection(_ADAPTER_WEIGHTS):
        return True
    return select_weight_files(names)[0] is not None


def resolve_repo_id(repo_id, *, revision=None, cache_dir=None, local_files_only=None):
    """Download (or find in the cache) the weights of a hub model.

    Parameters
    ----------
    repo_id : str
        ``"org/name"`` on the Hugging Face hub.
    revision : str, default=None
        Branch, tag or commit; ``None`` means ``"main"``.
    cache_dir : str or path-like, default=None
        The huggingface_hub cache; ``None`` uses its default (``HF_HUB_CACHE``).
    local_files_only : bool, default=None
        Never touch the network. ``None`` follows ``HF_HUB_OFFLINE``.

    Returns
    -------
    directory : pathlib.Path
        The snapshot directory, holding ``config.json`` (when the repo has
        one) and the weight files; for a PEFT adapter repository,
        ``adapter_config.json`` and ``adapter_model.safetensors`` (or
        ``adapter_model.bin``), whose base model is resolved from that
        config (or ``base=``) by :func:`locate_checkpoint`.

    Raises
    ------
    CheckpointNotFoundError
        The repository or revision does not exist, or is not cached while
        offline, or holds no safetensors or PyTorch weights (nor adapter
        weights beside an ``adapter_config.json``).
    """
    # Imported here: a second of import time that local paths never need.
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = _offline(local_files_only)
    described = f"'{repo_id}'" + (
        "" if revision is None else f" at revision '{revision}'"
    )
    missing = None
    for patterns in _TIERS:
        try:
            directory = snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=offline,
                allow_patterns=patterns,
                ignore_patterns=_TOP_LEVEL_ONLY,
            )
        except LocalEntryNotFoundError as exc:
            # The snapshot may still hold the next tier's files (a repo with
            # both formats of which only the .bin was downloaded).
            missing = missing or exc
            continue
        except HfHubHTTPError as exc:
            raise CheckpointNotFoundError(
                f"Hub model {described} cannot be fetched: {exc}"
            ) from exc
        directory = Path(directory)
        if _holds_weights(directory):
            return directory
    if missing is not None:
        where = cache_dir if cache_dir is not None else constants.HF_HUB_CACHE
        hint = (
            "downloads are disabled (HF_HUB_OFFLINE or local_files_only=True): "
            f"download it first (e.g. `hf download {repo_id}`) or unset HF_HUB_OFFLINE"
            if offline
            else "the hub could not be reached; check the connection"
        )
        raise CheckpointNotFoundError(
            f"{described} is not a local path and its weights are not in the "
            f"Hugging Face cache at '{where}'; {hint}."
        ) from missing
    raise CheckpointNotFoundError(
        f"Hub model {described} has no top-level safetensors or PyTorch .bin "
        "weights. For a GGUF-only repository, download the .gguf file you "
        "want and pass its path."
    )
