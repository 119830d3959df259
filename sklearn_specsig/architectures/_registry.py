"""Map checkpoint tensor names to module roles, layers and experts.

A spectral signature has one row per module role (:data:`ROLES`) and one
column per transformer block.  Checkpoints name those matrices differently
(``self_attn.q_proj``, ``attn.c_attn``, ``blk.N.attn_q`` ...) and some fuse
several roles into one tensor, so this module turns a list of tensor names,
their shapes and ``config.json`` into an :class:`Architecture`: a
:class:`TensorPlan` per contributing tensor that says, *before* any weight is
read, which ``(role, layer, expert)`` parts it holds and how to cut it into
``(out, in)`` matrices.

Naming schemes are declarative (:class:`NamingScheme`) and live in a registry
that users extend with :func:`register_naming_scheme`; the built-in table is
``architectures/_schemes.py``, the fused-layout rules ``architectures/_layout.py``,
the plans ``architectures/_plans.py`` and the rule that every block weight is
mapped or skipped ``architectures/_accounting.py``.
"""

import re
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import UnknownArchitectureError
from ..signature import ROLES
from ._accounting import first_accounted
from ._layout import SPLIT_RULES, config_value
from ._messages import unknown_architecture_message
from ._plans import build_architecture
from ._refusals import NO_SIGNATURE, no_signature_message
from ._schemes import BUILTIN_SCHEMES
from ._schemes_encoders import ENCODER_SCHEMES

_EXPERT_PLACEHOLDER = "{expert}"


def _as_tuple(value):
    # A lone string is one item, not a sequence of characters.
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True, eq=False)
class NamingScheme:
    r"""How one checkpoint family names its transformer matrices.

    Parameters
    ----------
    name : str
        Registry key, reported as :attr:`Architecture.name`.
    layer_pattern : str
        Regular expression matched at the start of a tensor name.  It must
        have a named group ``layer`` (the block index) and may have a group
        ``expert``.  Whatever follows the match is looked up in ``modules``.
    modules : mapping of str to str
        Remainder of the name -> a role of :data:`ROLES` or a split rule.
        A remainder may contain ``{expert}`` where the expert index sits.
        Split rules cut the (out, in) matrix by rows:

        - ``"qkv"``: ``[q; k; v]`` sized by ``num_attention_heads``,
          ``num_key_value_heads`` (default: MHA) and ``head_dim`` (default
          ``hidden_size // num_attention_heads``) from the config;
        - ``"qkv_equal"``: three equal thirds (GPT-2);
        - ``"qkv_interleaved"``: ``(heads, 3, head_dim)`` rows (GPT-NeoX);
        - ``"qkv_grouped"``: ``(kv_heads, heads // kv_heads + 2, head_dim)``
          rows, each key-value group's queries then its key and value;
        - ``"qkv_falcon"``: as Falcon's config says: ``qkv_grouped`` for the
          new decoder architecture, ``qkv`` with one key-value head for
          ``multi_query``, else ``qkv_interleaved``;
        - ``"qkv_multi_query"``: GPT-BigCode's: ``qkv`` with one key-value
          head when the config's ``multi_query`` is true (the default), else
          ``qkv_interleaved``;
        - ``"qkv_mpt"``: ``qkv`` with as many key-value heads as MPT's
          ``attn_config.attn_type`` says (one for multi-query, ``kv_n_heads``
          for grouped-query, every head for multi-head, the default);
        - ``"kv_mla"``: ``(heads, qk_nope_head_dim + v_head_dim)`` rows,
          split into k and v (DeepSeek's ``kv_b_proj``);
        - ``"gate_up"``: ``[gate; up]`` halves;
          ``"gate_up_interleaved"``: gate and up rows alternate (GPT-OSS);
        - ``"up_or_gate_up"``: ``up``, or ``gate_up`` when the tensor has
          twice the config's ``intermediate_size`` rows (GGUF Phi-3);
        - ``"gate_experts"``, ``"up_experts"``, ``"down_experts"``: the
          config's ``num_experts`` matrices of one role concatenated along
          rows in a 2-D tensor (DBRX), split per expert.

        A 3-D tensor is a stack of experts ``(E, out, in)``, split per expert.
    transposed : bool or tuple of str, default=False
        The tensors are stored (in, out), as GPT-2's Conv1D does: ``True`` for
        all, or the ``modules`` keys concerned.  When the config gives the
        hidden size and exactly one dimension matches it, the shape decides
        instead, so this flag only settles square or config-less cases.
    shared : tuple of str, default=()
        ``modules`` keys that belong to an always-on shared expert; it is
        numbered after the routed experts of its layer.
    model_types : tuple of str, default=()
        ``config["model_type"]`` values that win a tie with another scheme
        mapping as many tensors.  Remaining ties go to the earlier registered.
    skip : tuple of str, default=()
        Regular expressions (full match) of the remainders of block tensor
        names that are deliberately not part of the signature (routers,
        norms of 2-D shape, relative-position tables, ...).  Every weight
        of two or more dimensions inside a block is either mapped by
        ``modules`` or matched here: a weight that neither accounts for
        makes the checkpoint unknown rather than silently half-signed.
        1-D tensors and computed rotary buffers (``rotary_emb.inv_freq``)
        need no listing (``architectures/_accounting.py``).
    stacks : tuple of str, default=()
        Encoder-decoder checkpoints: the values that a named group ``stack``
        of ``layer_pattern`` takes (``("encoder", "decoder")``), in depth
        order.  Each stack's blocks are numbered after those of the stacks
        before it (their highest block index in the checkpoint + 1), so the
        signature has one depth axis: the encoder's blocks, then the
        decoder's.  ``num_hidden_layers`` counts one stack only, so it does
        not bound the block indices of such a scheme.

    Examples
    --------
    >>> import torch
    >>> from sklearn_specsig.architectures import (
    ...     NamingScheme, naming_scheme_context, resolve_architecture)
    >>> scheme = NamingScheme(
    ...     name="tiny_gpt",
    ...     layer_pattern=r"^decoder\.blocks\.(?P<layer>\d+)\.",
    ...     modules={
    ...         "attn.wqkv.weight": "qkv",    # fused [q; k; v], split by heads
    ...         "attn.wo.weight": "o",
    ...         "ffn.w13.weight": "gate_up",  # fused [gate; up]
    ...         "ffn.w2.weight": "down",
    ...     },
    ... )
    >>> shapes = {"decoder.embed.weight": (100, 8)}
    >>> for i in range(2):
    ...     shapes.update({f"decoder.blocks.{i}.attn.wqkv.weight": (16, 8),
    ...                    f"decoder.blocks.{i}.attn.wo.weight": (8, 8),
    ...                    f"decoder.blocks.{i}.ffn.w13.weight": (32, 8),
    ...                    f"decoder.blocks.{i}.ffn.w2.weight": (8, 16)})
    >>> config = {"num_attention_heads": 2, "num_key_value_heads": 1}
    >>> with naming_scheme_context(scheme):  # or register_naming_scheme(scheme)
    ...     arch = resolve_architecture(list(shapes), config, shapes)
    >>> arch.name, arch.n_layers, arch.skipped
    ('tiny_gpt', 2, ('decoder.embed.weight',))
    >>> plan = arch.plans["decoder.blocks.0.attn.wqkv.weight"]
    >>> plan.descriptor
    'qkv:q=8,k=4,v=4'
    >>> [(role, tuple(m.shape)) for role, _, _, m in plan.split(torch.ones(16, 8))]
    [('q', (8, 8)), ('k', (4, 8)), ('v', (4, 8))]
    """

    name: str
    layer_pattern: str
    modules: Mapping[str, str]
    transposed: bool | tuple = False
    shared: tuple = ()
    model_types: tuple = ()
    skip: tuple = ()
    stacks: tuple = ()
    _layer_re: re.Pattern = field(init=False, repr=False)
    _templated_re: re.Pattern | None = field(init=False, repr=False)
    _templated_keys: tuple = field(init=False, repr=False)
    _skip_re: re.Pattern | None = field(init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"NamingScheme.name must be a non-empty str, got {self.name!r}.")
        layer_re = re.compile(self.layer_pattern)
        if self.stacks and "stack" not in layer_re.groupindex:
            raise ValueError(
                f"NamingScheme {self.name!r}: stacks={self.stacks!r} needs a named group "
                r"'stack' in layer_pattern, e.g. r'^(?P<stack>encoder|decoder)\.block\.'."
            )
        if "layer" not in layer_re.groupindex:
            raise ValueError(
                f"NamingScheme {self.name!r}: layer_pattern {self.layer_pattern!r} needs a "
                r"named group for the block index, e.g. r'^model\.layers\.(?P<layer>\d+)\.'."
            )
        modules = dict(self.modules)
        for key, rule in modules.items():
            if rule not in ROLES and rule not in SPLIT_RULES:
                raise ValueError(
                    f"NamingScheme {self.name!r}: modules[{key!r}] = {rule!r} is neither a "
                    f"role {ROLES} nor a split rule {tuple(SPLIT_RULES)}."
                )
        transposed = (self.transposed if isinstance(self.transposed, bool)
                      else _as_tuple(self.transposed))
        shared, model_types = _as_tuple(self.shared), _as_tuple(self.model_types)
        skip = _as_tuple(self.skip)
        try:
            skip_re = re.compile("|".join(f"(?:{p})" for p in skip)) if skip else None
        except re.error as exc:
            raise ValueError(f"NamingScheme {self.name!r}: skip has a bad pattern ({exc}).") from exc
        for key in (() if isinstance(transposed, bool) else transposed) + shared:
            if key not in modules:
                raise ValueError(
                    f"NamingScheme {self.name!r}: {key!r} is listed in transposed/shared "
                    "but is not a key of modules."
                )
        # Templated keys are folded into one alternation so that matching a
        # checkpoint with ~10^5 expert tensors stays one regex call per name.
        templated = tuple(key for key in modules if _EXPERT_PLACEHOLDER in key)
        alternatives = [
            f"(?P<m{i}>"
            + re.escape(key).replace(re.escape(_EXPERT_PLACEHOLDER), f"(?P<e{i}>\\d+)")
            + ")"
            for i, key in enumerate(templated)
        ]
        setattr_ = object.__setattr__  # the dataclass is frozen
        setattr_(self, "modules", modules)
        setattr_(self, "transposed", transposed)
        setattr_(self, "shared", shared)
        setattr_(self, "model_types", model_types)
        setattr_(self, "skip", skip)
        setattr_(self, "_skip_re", skip_re)
        setattr_(self, "stacks", _as_tuple(self.stacks))
        setattr_(self, "_layer_re", layer_re)
        setattr_(self, "_templated_keys", templated)
        setattr_(self, "_templated_re", re.compile("|".join(alternatives)) if templated else None)

    def match(self, tensor_name):
        """Return ``(modules key, layer, expert)`` for a name, or ``None``.

        ``expert`` is the index found in the name, or ``None``.
        """
        head = self._layer_re.match(tensor_name)
        if head is None:
            return None
        rest = tensor_name[head.end():]
        expert = head.groupdict().get("expert")
        if rest in self.modules:
            key = rest
        elif self._templated_re is not None and (tail := self._templated_re.fullmatch(rest)):
            index = int(tail.lastgroup[1:])
            key, expert = self._templated_keys[index], tail.group(f"e{index}")
        else:
            return None
        return key, int(head.group("layer")), None if expert is None else int(expert)

    def number_stacks(self, matches):
        """Put the blocks of every stack on one depth axis (see ``stacks``).

        Parameters
        ----------
        matches : dict of str to tuple
            Tensor name -> :meth:`match`'s ``(key, layer, expert)``.

        Returns
        -------
        dict of str to tuple
            The same, with each block index offset by the number of blocks
            of the stacks before its own; ``matches`` itself without stacks.
        """
        if not self.stacks:
            return matches
        stack = {name: self._layer_re.match(name).group("stack") for name in matches}
        # A value the scheme does not list goes last, in a fixed order.
        order = self.stacks + tuple(sorted(set(stack.values()) - set(self.stacks)))
        offsets, offset = {}, 0
        for value in order:
            offsets[value] = offset
            offset += 1 + max((layer for name, (_, layer, _) in matches.items()
                               if stack[name] == value), default=-1)
        return {name: (key, layer + offsets[stack[name]], expert)
                for name, (key, layer, expert) in matches.items()}

    def split_name(self, tensor_name):
        """``(layer, remainder)`` of a name inside a block, or ``None`` outside.

        The remainder is what follows the ``layer_pattern`` match: what
        ``modules`` keys and ``skip`` patterns are compared with.
        """
        head = self._layer_re.match(tensor_name)
        return None if head is None else (int(head.group("layer")), tensor_name[head.end():])

    def skips(self, remainder):
        """Whether a block tensor's remainder fully matches a ``skip`` pattern."""
        return self._skip_re is not None and self._skip_re.fullmatch(remainder) is not None

    def is_transposed(self, key):
        """Whether the tensors under ``key`` are declared (in, out)."""
        if isinstance(self.transposed, bool):
            return self.transposed
        return key in self.transposed


_REGISTRY = {}


def register_naming_scheme(scheme, *, replace=False):
    """Add a :class:`NamingScheme` to those :func:`resolve_architecture` tries.

    Parameters
    ----------
    scheme : NamingScheme
        The scheme to register.
    replace : bool, default=False
        Replace a registered scheme of the same name (keeping its place in the
        tie-breaking order) instead of raising ``ValueError``.
    """
    if not isinstance(scheme, NamingScheme):
        raise TypeError(f"Expected a NamingScheme, got {type(scheme).__name__}.")
    if scheme.name in _REGISTRY and not replace:
        raise ValueError(
            f"A naming scheme named {scheme.name!r} is already registered; pick another "
            "name or pass replace=True."
        )
    _REGISTRY[scheme.name] = scheme


def unregister_naming_scheme(name):
    """Remove a registered scheme and return it.

    Raises ``ValueError`` when no scheme of that name is registered.
    """
    if name not in _REGISTRY:
        raise ValueError(f"No naming scheme named {name!r}; registered: {list(_REGISTRY)}.")
    return _REGISTRY.pop(name)


def list_naming_schemes():
    """Names of the registered schemes, in tie-breaking order."""
    return tuple(_REGISTRY)


def get_naming_scheme(name):
    """Return the registered scheme called ``name``."""
    if name not in _REGISTRY:
        raise UnknownArchitectureError(
            f"No naming scheme named {name!r}; registered: {', '.join(_REGISTRY)}."
        )
    return _REGISTRY[name]


@contextmanager
def naming_scheme_context(scheme):
    """Register ``scheme`` for the duration of a ``with`` block.

    A built-in scheme of the same name is shadowed and restored on exit, so
    nothing leaks into later code (or tests).
    """
    previous = _REGISTRY.get(scheme.name)
    register_naming_scheme(scheme, replace=True)
    try:
        yield scheme
    finally:
        if previous is None:
            _REGISTRY.pop(scheme.name, None)
        else:
            _REGISTRY[scheme.name] = previous


def schemes_in_force(scheme=None):
    """A text that changes whenever the mapping of tensors could change.

    It spells out every registered scheme in order (its fields, which are
    plain data) and a forced ``scheme``, so that a cache of the mapping's
    outcome (the engine's quick memo, ``store.quick_key``) misses when a user registers,
    replaces or forces another scheme.

    Parameters
    ----------
    scheme : str or NamingScheme, optional
        As :func:`resolve_architecture` takes it.

    Returns
    -------
    str
    """
    forced = "" if scheme is None else (
        repr(scheme) if isinstance(scheme, NamingScheme) else f"name:{scheme}")
    return "|".join([forced, *map(repr, _REGISTRY.values())])


def resolve_architecture(tensor_names, config=None, shapes=None, *, scheme=None):
    """Work out which tensors form the signature and how to split them.

    Parameters
    ----------
    tensor_names : iterable of str
        Every tensor name of the checkpoint.
    config : dict, optional
        ``config.json`` contents (or GGUF metadata); may be empty.
    shapes : dict of str to tuple of int
        Stored shape of each tensor (PyTorch (out, in) orientation as saved;
        GPT-2's Conv1D stores (in, out)).
    scheme : str or NamingScheme, optional
        Force a scheme instead of picking the registered one that maps the
        most tensors (ties: ``config["model_type"]``, then registration order).

    Returns
    -------
    architecture : Architecture

    Raises
    ------
    UnknownArchitectureError
        No scheme maps any q/k/v/o/gate/up/down matrix, or the chosen one
        leaves a block weight of two or more dimensions neither mapped nor
        skipped (``docs/design.md``, "How to add a naming scheme"): a
        partial signature is never made silently.  Also, naming the
        architecture and why, for a model type that has no signature
        (state-space models such as Mamba and their hybrids:
        ``_refusals.NO_SIGNATURE``) unless ``scheme`` is given or a
        registered scheme lists that model type.
    ConfigError
        A fused tensor does not split by the config's values, a needed value
        is missing, or a mapped tensor has no usable shape.
    """
    names = list(tensor_names)
    config = {} if config is None else config
    shapes = {} if shapes is None else shapes
    model_type = config.get("model_type") or config.get("general.architecture")
    if (scheme is None and model_type in NO_SIGNATURE
            and not any(model_type in known.model_types for known in _REGISTRY.values())):
        raise UnknownArchitectureError(no_signature_message(model_type, NO_SIGNATURE[model_type]))
    if scheme is None:
        candidates = list(_REGISTRY.values())
    else:
        candidates = [scheme if isinstance(scheme, NamingScheme) else get_naming_scheme(scheme)]
    # Extra blocks past num_hidden_layers are multi-token-prediction heads
    # (DeepSeek-V3), not part of the network the signature describes.
    max_layers = config_value(config, "num_layers")
    ranked = []
    for candidate in candidates:
        matches = {}
        limit = None if candidate.stacks else max_layers
        for name in names:
            found = candidate.match(name)
            if found is not None and (limit is None or found[1] < limit):
                matches[name] = found
        if matches:
            ranked.append(((len(matches), model_type in candidate.model_types),
                           candidate, matches, limit))
    if not ranked:
        raise UnknownArchitectureError(unknown_architecture_message(
            names, shapes, model_type, scheme, tuple(_REGISTRY)))
    # Most tensors mapped, then model_type; among schemes still tied, the
    # first registered that accounts for every block weight (none: refused).
    top = max(rank for rank, *_ in ranked)
    best, best_matches = first_accounted(
        [tie for rank, *tie in ranked if rank == top], names, shapes)
    return build_architecture(best, names, best.number_stacks(best_matches), config, shapes,
                              model_type)


for _spec in BUILTIN_SCHEMES + ENCODER_SCHEMES:
    register_naming_scheme(NamingScheme(**_spec))
del _spec
