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
``architectures/_schemes.py``, the fused-layout rules ``architectures/_layout.py``.
"""

import re
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import ConfigError, UnknownArchitectureError
from ..signature import ROLES
from ._layout import (
    SPLIT_RULES,
    checked_shape,
    config_value,
    cut_matrix,
    split_layout,
    stored_transposed,
)
from ._messages import unknown_architecture_message
from ._schemes import BUILTIN_SCHEMES

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
        - ``"gate_up"``: ``[gate; up]`` halves;
          ``"gate_up_interleaved"``: gate and up rows alternate (GPT-OSS);
        - ``"up_or_gate_up"``: ``up``, or ``gate_up`` when the tensor has
          twice the config's ``intermediate_size`` rows (GGUF Phi-3).

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
    _layer_re: re.Pattern = field(init=False, repr=False)
    _templated_re: re.Pattern | None = field(init=False, repr=False)
    _templated_keys: tuple = field(init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"NamingScheme.name must be a non-empty str, got {self.name!r}.")
        layer_re = re.compile(self.layer_pattern)
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

    def is_transposed(self, key):
        """Whether the tensors under ``key`` are declared (in, out)."""
        if isinstance(self.transposed, bool):
            return self.transposed
        return key in self.transposed


@dataclass(frozen=True)
class TensorPlan:
    """How one stored tensor splits into signature matrices.

    Attributes
    ----------
    name : str
        Tensor name in the checkpoint.
    descriptor : str
        Short text identifying the split (``"plain"``, ``"T|plain"``,
        ``"qkv:q=2048,k=512,v=512"``, ``"experts=8|gate_up:gate=...,up=..."``),
        meant for cache keys: a change of split rule changes it.
    parts : tuple of (str, int, int or None)
        ``(role, layer, expert)`` of each matrix :meth:`split` returns.
    shape : tuple of int
        Stored shape the plan was made for.
    transpose : bool
        Whether the stored (expert) matrix is (in, out) and is transposed.
    layout : {"plain", "rows", "heads", "stride"}
        How the (out, in) matrix is cut: whole, contiguous row blocks of
        sizes ``layout_args``, ``(heads, k, head_dim)`` interleaved rows with
        ``layout_args == (heads, k)``, or every ``layout_args[0]``-th row.
    layout_args : tuple of int
        Parameters of ``layout``.
    """

    name: str
    descriptor: str
    parts: tuple
    shape: tuple
    transpose: bool = False
    layout: str = "plain"
    layout_args: tuple = ()

    def split(self, tensor):
        """Cut a tensor into its ``(role, layer, expert, matrix)`` parts.

        Parameters
        ----------
        tensor : torch.Tensor or numpy.ndarray
            The stored tensor, of shape :attr:`shape`.

        Returns
        -------
        parts : list of (str, int, int or None, tensor)
            In the order of :attr:`parts`; each matrix is 2-D (out, in) and a
            view of ``tensor`` except for the ``"heads"`` layout, whose
            strided rows need a copy.
        """
        if tuple(tensor.shape) != self.shape:
            raise ConfigError(
                f"Tensor {self.name!r} has shape {tuple(tensor.shape)} but its split plan "
                f"was made for {self.shape}: resolve the architecture again from the "
                "checkpoint's current shapes."
            )
        stack = [tensor[e] for e in range(self.shape[0])] if len(self.shape) == 3 else [tensor]
        blocks = [block for m in stack for block in cut_matrix(
            m.T if self.transpose else m, self.layout, self.layout_args)]
        return [(*part, block) for part, block in zip(self.parts, blocks)]


@dataclass(frozen=True)
class Architecture:
    """The resolved layout of one checkpoint.

    Attributes
    ----------
    name : str
        Name of the naming scheme used (``"llama"``, ``"gpt2"``, ...).
    n_layers : int
        Number of transformer blocks (highest mapped layer index + 1).
    plans : dict of str to TensorPlan
        One plan per tensor that contributes to the signature, in name order
        of the input.
    skipped : tuple of str
        Tensors that contribute nothing (embeddings, norms, routers, ...).
    model_type : str or None
        ``config["model_type"]`` (or GGUF ``general.architecture``).
    scheme : NamingScheme
        The scheme that mapped the names.
    """

    name: str
    n_layers: int
    plans: dict
    skipped: tuple = ()
    model_type: str | None = None
    scheme: NamingScheme | None = None

    @property
    def parts(self):
        """All ``(role, layer, expert)`` parts, in plan order."""
        return tuple(part for plan in self.plans.values() for part in plan.parts)


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
        No scheme maps any q/k/v/o/gate/up/down matrix.
    ConfigError
        A fused tensor does not split by the config's values, a needed value
        is missing, or a mapped tensor has no usable shape.
    """
    names = list(tensor_names)
    config = {} if config is None else config
    shapes = {} if shapes is None else shapes
    model_type = config.get("model_type") or config.get("general.architecture")
    if scheme is None:
        candidates = list(_REGISTRY.values())
    else:
        candidates = [scheme if isinstance(scheme, NamingScheme) else get_naming_scheme(scheme)]
    # Extra blocks past num_hidden_layers are multi-token-prediction heads
    # (DeepSeek-V3), not part of the network the signature describes.
    max_layers = config_value(config, "num_layers")
    best, best_rank, best_matches = None, None, {}
    for order, candidate in enumerate(candidates):
        matches = {}
        for name in names:
            found = candidate.match(name)
            if found is not None and (max_layers is None or found[1] < max_layers):
                matches[name] = found
        rank = (len(matches), model_type in candidate.model_types, -order)
        if matches and (best_rank is None or rank > best_rank):
            best, best_rank, best_matches = candidate, rank, matches
    if best is None:
        raise UnknownArchitectureError(unknown_architecture_message(
            names, shapes, model_type, scheme, tuple(_REGISTRY)))
    return _build(best, names, best_matches, config, shapes, model_type)


def _build(scheme, names, matches, config, shapes, model_type):
    shape_of = {name: checked_shape(name, shapes) for name in matches}
    # Shared experts are numbered after the routed ones of their layer, so
    # the routed count has to be known first.
    n_routed = {}
    for name, (key, layer, expert) in matches.items():
        if key not in scheme.shared:
            shape = shape_of[name]
            count = shape[0] if len(shape) == 3 else (0 if expert is None else expert + 1)
            n_routed[layer] = max(n_routed.get(layer, 0), count)
    hidden = config_value(config, "hidden_size")
    plans = {}
    for name, (key, layer, expert) in matches.items():
        shape = shape_of[name]
        if len(shape) == 3 and expert is not None:
            raise ConfigError(
                f"Tensor {name!r} of shape {shape} is a 3-D stack but its name already "
                f"carries expert index {expert}; map it to a 2-D matrix key instead."
            )
        first = n_routed.get(layer, 0) if key in scheme.shared else expert
        plans[name] = _plan(name, shape, scheme.modules[key], scheme.is_transposed(key),
                            layer, first, config, hidden)
    return Architecture(
        name=scheme.name,
        n_layers=1 + max(layer for _, layer, _ in matches.values()),
        plans=plans,
        skipped=tuple(name for name in names if name not in plans),
        model_type=model_type,
        scheme=scheme,
    )


def _plan(name, shape, rule, declared_transposed, layer, first_expert, config, hidden):
    rows, cols = shape[-2:]
    transpose = stored_transposed(rows, cols, declared_transposed, rule, hidden)
    out_rows = cols if transpose else rows
    layout, args, roles, text = split_layout(name, shape, out_rows, rule, layer, config, hidden)
    if len(shape) == 3:
        base = first_expert or 0
        experts = range(base, base + shape[0])
    else:
        experts = (first_expert,)
    descriptor = "|".join(
        ([f"experts={shape[0]}"] if len(shape) == 3 else []) + (["T"] if transpose else []) + [text]
    )
    return TensorPlan(
        name=name,
        descriptor=descriptor,
        parts=tuple((role, layer, e) for e in experts for role in roles),
        shape=shape,
        transpose=transpose,
        layout=layout,
        layout_args=args,
    )


for _spec in BUILTIN_SCHEMES:
    register_naming_scheme(NamingScheme(**_spec))
del _spec
