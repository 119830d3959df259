"""Models in memory: a ``torch.nn.Module`` or a mapping of names to tensors.

A model that is already loaded (a ``transformers`` model, a plain module, a
state dict) is read where it is: nothing is written to disk, and each tensor
is detached and moved to the CPU only when it is read, one at a time.  Its
spectra are cached by content like any checkpoint's, so the same weights in
memory and on disk share every cache entry; the file-stat memos of the store
(``docs/design.md``, "The cache") have no files to key on and are skipped.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import CheckpointFormatError
from ._base import Checkpoint
from ._open import locate_checkpoint

__all__ = [
    "MemoryCheckpoint",
    "MemoryLocation",
    "describe_model",
    "is_model_in_memory",
    "locate_model",
]


def _config_dict(config, what):
    """``config`` (a dict, a transformers config or None) as a dict."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if isinstance(result, Mapping):
            return dict(result)
    raise TypeError(
        f"config= of {what} should be a dict of config.json keys or a "
        f"transformers config, got {type(config).__name__}."
    )


class MemoryCheckpoint(Checkpoint):
    """A :class:`Checkpoint` over tensors already in memory.

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor
        The weights by name, as ``model.state_dict()`` gives them (for a
        ``transformers`` model these are the names ``save_pretrained``
        writes).  Any device and floating dtype; nothing is copied until a
        tensor is read, then that one tensor is moved to the CPU.
    config : dict or transformers config, default=None
        The model configuration with ``config.json`` keys (``model_type``,
        ``num_hidden_layers``, head counts ...).  ``None`` is an empty one:
        the naming scheme is then chosen from the names alone, and a fused
        tensor that needs a head count is refused.
    source : str, default=None
        How the model is named in messages and in ``Signature.source``;
        ``None`` gives ``"<state dict of N tensors in memory>"``.

    Attributes
    ----------
    format : str
        ``"memory"``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_specsig.checkpoints import MemoryCheckpoint
    >>> ckpt = MemoryCheckpoint({"w": torch.zeros(3, 2)}, config={"model_type": "llama"})
    >>> ckpt.format, ckpt.tensor_names(), ckpt.tensor_shape("w"), ckpt.file_stats()
    ('memory', ['w'], (3, 2), None)
    >>> ckpt.source
    '<state dict of 1 tensors in memory>'
    """

    format = "memory"

    def __init__(self, tensors, config=None, source=None):
        import torch

        if not isinstance(tensors, Mapping):
            raise TypeError(
                "tensors should be a mapping of tensor names to torch.Tensor "
                f"(a state dict), got {type(tensors).__name__}."
            )
        for name, tensor in tensors.items():
            if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                raise CheckpointFormatError(
                    "A model in memory should map tensor names (str) to "
                    f"torch.Tensor; {name!r} maps to {type(tensor).__name__}. "
                    "Pass model.state_dict() or a dict of tensors."
                )
        if not tensors:
            raise CheckpointFormatError("The mapping of tensors is empty: no weights to sign.")
        if source is None:
            source = f"<state dict of {len(tensors)} tensors in memory>"
        _check_loaded(tensors, source)
        super().__init__(source, None, [], _config_dict(config, source))
        self._tensors = dict(tensors)

    @classmethod
    def from_model(cls, model, config=None):
        """The checkpoint of a ``torch.nn.Module`` or a mapping of tensors.

        Parameters
        ----------
        model : torch.nn.Module or mapping of str to torch.Tensor
            A module is read through ``model.state_dict()`` (references to
            its parameters and persistent buffers, no copy).
        config : dict or transformers config, default=None
            Wins over the module's own ``model.config`` when both are
            there; a ``transformers`` model needs none.

        Returns
        -------
        MemoryCheckpoint
        """
        import torch

        if isinstance(model, MemoryCheckpoint):
            if config is not None:
                return cls(model._tensors, config, model.source)
            return model
        source = describe_model(model)
        if isinstance(model, torch.nn.Module):
            own = getattr(model, "config", None)
            return cls(model.state_dict(), own if config is None else config, source)
        if isinstance(model, Mapping):
            return cls(model, config, source)
        raise TypeError(_not_a_model(model))

    def __repr__(self):
        return f"MemoryCheckpoint(source={self.source!r}, n_tensors={len(self._tensors)})"

    def tensor_names(self):
        return list(self._tensors)

    def tensor_shape(self, name):
        if name not in self._tensors:
            raise self._unknown_tensor(name)
        return tuple(self._tensors[name].shape)

    def iter_tensors(self, names=None):
        wanted = self._select(names)
        for name, tensor in self._tensors.items():
            if wanted is None or name in wanted:
                # One tensor at a time leaves the device; a CPU tensor is
                # yielded as is (the engine never writes into it).
                yield name, tensor.detach().to("cpu")

    def file_stats(self):
        """None: no files, so the store's file-stat memos are skipped."""
        return None

    def _unknown_tensor(self, name):
        return KeyError(f"No tensor named {name!r} in {self.source}.")

    def _select(self, names):
        if names is None:
            return None
        wanted = {names} if isinstance(names, str) else set(names)
        unknown = wanted.difference(self._tensors)
        if unknown:
            raise KeyError(f"{len(unknown)} tensor(s) not in {self.source}: {sorted(unknown)[:5]}")
        return wanted


def _check_loaded(tensors, source):
    """Refuse weights that are not there, or not merged, with what to do."""
    meta = [name for name, tensor in tensors.items() if tensor.is_meta]
    if meta:
        raise CheckpointFormatError(
            f"{source} has {len(meta)} weight(s) on the 'meta' device (offloaded to "
            f"disk or never loaded), e.g. {meta[:3]}: load the model without disk "
            "offload, or sign the folder it was saved to."
        )
    # peft's injected layers: the base weight and its LoRA factors side by
    # side, which no naming scheme should map (nor a skip list hide).
    lora = [name for name in tensors if ".lora_A." in name or ".base_layer." in name]
    if lora:
        raise CheckpointFormatError(
            f"{source} holds un-merged LoRA layers, e.g. {lora[:2]}: call "
            "merge_and_unload() on the PeftModel first, or save the adapter "
            "(save_pretrained) and sign its folder, which is merged tensor by tensor."
        )


def _not_a_model(model):
    return (
        f"Cannot sign a {type(model).__name__}: expected a path, a hub id "
        "'org/name', a torch.nn.Module, or a mapping of tensor names to "
        "torch.Tensor (a state dict, with config=)."
    )


def describe_model(model):
    """How a model in memory is named in messages and ``Signature.source``.

    ``"<LlamaForCausalLM in memory>"`` for a module, with the hub id or
    folder it was loaded from when its config says (``_name_or_path``):
    ``"<LlamaForCausalLM in memory, loaded from 'org/name'>"``; the weights
    may have changed since, so it is not given as a path.  Anything else is
    ``str(model)``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_specsig.checkpoints import describe_model
    >>> describe_model(torch.nn.Linear(2, 3))
    '<Linear in memory>'
    >>> describe_model({"w": torch.zeros(1)})
    '<state dict of 1 tensors in memory>'
    >>> describe_model("org/name")
    'org/name'
    """
    if isinstance(model, MemoryCheckpoint):
        return model.source
    if isinstance(model, Mapping):
        return f"<state dict of {len(model)} tensors in memory>"
    if is_model_in_memory(model):
        loaded = getattr(getattr(model, "config", None), "_name_or_path", None)
        where = f", loaded from {loaded!r}" if isinstance(loaded, str) and loaded else ""
        return f"<{type(model).__name__} in memory{where}>"
    return str(model)


def is_model_in_memory(model):
    """Whether ``model`` is a module, a mapping or a :class:`MemoryCheckpoint`."""
    import torch

    return isinstance(model, (Mapping, torch.nn.Module, MemoryCheckpoint))


@dataclass(frozen=True)
class MemoryLocation:
    """The :class:`~sklearn_specsig.checkpoints.CheckpointLocation` of a model
    in memory: same interface, no files.

    Attributes
    ----------
    source : str
        :func:`describe_model` of the model.
    format : str
        ``"memory"``.
    checkpoint : MemoryCheckpoint
    """

    source: str
    format: str
    checkpoint: MemoryCheckpoint

    def files(self):
        """No files: an empty list."""
        return []

    def file_stats(self):
        """None: the store's file-stat memos do not apply (not the key of
        an empty list of files, which every model in memory would share)."""
        return None

    def open(self):
        """The :class:`MemoryCheckpoint`."""
        return self.checkpoint


def locate_model(source, *, config=None, revision=None):
    """:func:`locate_checkpoint` for paths and hub ids, and models in memory.

    Parameters
    ----------
    source : str, os.PathLike, torch.nn.Module, mapping or MemoryCheckpoint
    config : dict or transformers config, default=None
        The configuration of a model in memory (see
        :meth:`MemoryCheckpoint.from_model`).  Given with a path or hub id,
        whose ``config.json`` is read from its files, it is a ``ValueError``.
    revision : str, default=None
        Hub revision of a hub id.

    Returns
    -------
    CheckpointLocation or MemoryLocation

    Raises
    ------
    TypeError
        ``source`` is none of these (an int, a list ...).
    CheckpointFormatError
        A mapping holds something other than str names and tensors, or
        nothing (a ``ValueError``).
    ValueError
        ``config=`` with a path or hub id.

    Examples
    --------
    >>> import torch
    >>> from sklearn_specsig.checkpoints import locate_model
    >>> location = locate_model({"w": torch.zeros(3, 2)}, config={})
    >>> location.format, location.source, location.file_stats()
    ('memory', '<state dict of 1 tensors in memory>', None)
    """
    import os

    if is_model_in_memory(source):
        ckpt = MemoryCheckpoint.from_model(source, config)
        return MemoryLocation(ckpt.source, "memory", ckpt)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(_not_a_model(source))
    if config is not None:
        raise ValueError(
            f"config= is for models in memory; '{os.fspath(source)}' is read with "
            "the config.json of its files. Drop config=, or edit that file."
        )
    return locate_checkpoint(source, revision=revision)
