"""From a matched checkpoint to its plans: which matrices each tensor holds.

:func:`build_architecture` turns the tensors a :class:`NamingScheme` matched
into an :class:`Architecture`: one :class:`TensorPlan` per tensor, made from
its stored shape and the config before any weight is read, that says which
``(role, layer, expert)`` parts it holds and how to cut them out.
"""

from dataclasses import dataclass

from ..errors import ConfigError
from ._layout import (
    HEAD_STACK_RULES,
    checked_shape,
    config_value,
    cut_matrix,
    split_layout,
    stored_transposed,
)


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
    layout : {"plain", "rows", "heads", "stride", "groups", "experts"}
        How the (out, in) matrix is cut: whole, contiguous row blocks of
        sizes ``layout_args``, ``(heads, k, head_dim)`` interleaved rows with
        ``layout_args == (heads, k)``, every ``layout_args[0]``-th row,
        ``layout_args == (groups, *sizes)``: each of ``groups`` equal row
        groups holds blocks of ``sizes`` rows, one per part, or
        ``layout_args == (experts, flip)``: equal row blocks, one per expert,
        each transposed when ``flip``.
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
        if self.layout == "head_stack":  # one matrix out of a per-head 3-D stack
            return [(*self.parts[0], cut_matrix(tensor, self.layout, self.layout_args)[0])]
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
    scheme: object = None  # the NamingScheme (defined in _registry, which imports this module)

    @property
    def parts(self):
        """All ``(role, layer, expert)`` parts, in plan order."""
        return tuple(part for plan in self.plans.values() for part in plan.parts)


def build_architecture(scheme, names, matches, config, shapes, model_type):
    """The :class:`Architecture` of the tensors ``scheme`` matched.

    ``matches`` maps each matched name to ``(modules key, layer, expert)``
    (:meth:`NamingScheme.match`); every other name of ``names`` is skipped.
    """
    shape_of = {name: checked_shape(name, shapes) for name in matches}
    # Shared experts are numbered after the routed ones of their layer, so
    # the routed count has to be known first.
    n_routed = {}
    for name, (key, layer, expert) in matches.items():
        if key not in scheme.shared and scheme.modules[key] not in HEAD_STACK_RULES:
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
        plans[name] = plan_tensor(name, shape, scheme.modules[key], scheme.is_transposed(key),
                                  layer, first, config, hidden)
    return Architecture(
        name=scheme.name,
        n_layers=1 + max(layer for _, layer, _ in matches.values()),
        plans=plans,
        skipped=tuple(name for name in names if name not in plans),
        model_type=model_type,
        scheme=scheme,
    )


def plan_tensor(name, shape, rule, declared_transposed, layer, first_expert, config, hidden):
    """The :class:`TensorPlan` of one mapped tensor of stored ``shape`` under ``rule``."""
    rows, cols = shape[-2:]
    if rule in HEAD_STACK_RULES:
        layout, args, roles, text = split_layout(name, shape, rows, rule, layer, config, hidden)
        return TensorPlan(name=name, descriptor=text, parts=((roles[0], layer, first_expert),),
                          shape=shape, layout=layout, layout_args=args)
    transpose = stored_transposed(rows, cols, declared_transposed, rule, hidden)
    out_rows = cols if transpose else rows
    layout, args, roles, text = split_layout(name, shape, out_rows, rule, layer, config, hidden)
    if len(shape) == 3:
        base = first_expert or 0
        experts = range(base, base + shape[0])
    elif layout == "experts":  # a 2-D tensor of experts stacked along rows
        base = first_expert or 0
        experts = range(base, base + args[0])
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
