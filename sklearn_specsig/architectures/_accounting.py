"""Every block weight is mapped or deliberately skipped: no silent partial signature.

A naming scheme that maps a checkpoint's q/k/v/o/gate/up/down matrices but
not some other weight of its blocks would sign the model without saying
that part of each block was never looked at: a new projection, a renamed
expert, a layout the scheme was not written for.  So the scheme that
:func:`~sklearn_specsig.architectures.resolve_architecture` picks (most
tensors mapped, then ``model_type``; among schemes still tied, the first
registered that passes, see :func:`first_accounted`) must account for every
tensor of two or more dimensions inside a block (a name its
``layer_pattern`` matches, at a layer below ``num_hidden_layers``): each is
mapped by its ``modules``, fully matched by its ``skip`` patterns, or
fully matched by :data:`GLOBAL_SKIP`; otherwise the checkpoint is refused
with :class:`~sklearn_specsig.errors.UnknownArchitectureError`.
One-dimensional tensors (norms, biases, scales) and scalars hold no
spectrum and need nothing.

A tensor whose shape was not given is checked as if it were a matrix: a
shape we do not know cannot be told from a weight, and the engine always
passes every shape.
"""

import re

from ..errors import UnknownArchitectureError
from ._messages import unaccounted_message

#: Block-tensor remainders no scheme has to list: buffers that some
#: checkpoints persist but that are computed, not learned (rotary tables).
GLOBAL_SKIP = (
    r"(?:\w+\.)*rotary_emb\.(?:inv_freq|cos_cached|sin_cached)",
)
_GLOBAL_SKIP_RE = re.compile("|".join(f"(?:{pattern})" for pattern in GLOBAL_SKIP))


def unaccounted_weights(scheme, names, mapped, shapes, max_layers=None):
    """Block tensors of two or more dimensions that ``scheme`` neither maps nor skips.

    Parameters
    ----------
    scheme : NamingScheme
        The scheme chosen for the checkpoint.
    names : iterable of str
        Every tensor name of the checkpoint.
    mapped : container of str
        The names ``scheme`` maps (:meth:`NamingScheme.match`).
    shapes : dict of str to tuple of int
        Stored shapes; a name missing here counts as a matrix.
    max_layers : int, optional
        ``num_hidden_layers``: blocks at or past it (multi-token-prediction
        heads) are not part of the signature and are not checked.

    Returns
    -------
    list of str
        In the order of ``names``.
    """
    found = []
    for name in names:
        if name in mapped:
            continue
        block = scheme.split_name(name)
        if block is None:
            continue  # outside the blocks: embeddings, lm_head, final norm, vision tower
        layer, remainder = block
        if max_layers is not None and layer >= max_layers:
            continue
        shape = shapes.get(name)
        if shape is not None and len(shape) < 2:
            continue
        if scheme.skips(remainder) or _GLOBAL_SKIP_RE.fullmatch(remainder):
            continue
        found.append(name)
    return found


def first_accounted(tied, names, shapes):
    """The first tied scheme that accounts for every block weight.

    Parameters
    ----------
    tied : list of (NamingScheme, dict, int or None)
        Schemes that map equally well, in registration order, each with the
        names it maps (:meth:`NamingScheme.match`) and its layer limit
        (``max_layers`` of :func:`unaccounted_weights`).
    names : list of str
        Every tensor name of the checkpoint.
    shapes : dict of str to tuple of int

    Returns
    -------
    scheme, mapped
        The first of ``tied`` that leaves no block weight unaccounted, so a
        scheme written for the layout beats an earlier one that merely maps
        as many tensors (a GPT-OSS checkpoint without ``model_type``).

    Raises
    ------
    UnknownArchitectureError
        None of them does: the message names the first scheme, its
        unaccounted tensors (a few, then a count, with their shapes) and the
        ``modules`` / ``skip`` fix.
    """
    first = None
    for scheme, mapped, max_layers in tied:
        found = unaccounted_weights(scheme, names, mapped, shapes, max_layers)
        if not found:
            return scheme, mapped
        first = first or (scheme, found)
    scheme, found = first
    remainders = list(dict.fromkeys(scheme.split_name(name)[1] for name in found))
    raise UnknownArchitectureError(unaccounted_message(scheme.name, found, shapes, remainders))
