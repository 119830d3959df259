"""Order-preserving layer alignment of depth-mismatched signatures.

Paper Sec. 5.4 (Table 7): two models of one lineage may differ in depth
(a pruned or distilled child skips some of its parent's layers).  Each
layer is described by its column of module values, z-scored per module
row; the shorter model's layers are mapped injectively and in order onto
the longer model's, minimising the total mean-absolute cost, by dynamic
programming in O(L1 * L2).

The room of depth alignment, above the Spearman core: the similarity of
the matched layers comes from :mod:`._spearman`, the same numbers as
:func:`~sklearn_specsig.kernels.spearman_similarity` gives for those
columns, bit for bit.  :func:`aligned_similarity` is the all-pairs matrix of
``SpearmanModuleKernel(depth="align")``.
"""

from dataclasses import dataclass, field

import numpy as np

from ..signature import as_profiles
from ._spearman import rank_module_rows, spearman_from_ranks

__all__ = ["AlignmentResult", "align_depth", "aligned_similarity"]


@dataclass(frozen=True)
class AlignmentResult:
    """The outcome of :func:`align_depth`.

    Attributes
    ----------
    cost : float
        Mean over matched layer pairs of the cost matrix (a mean, not a
        sum, so that pairs of different depths are comparable; paper
        Table 7 reports 0.26 for a related and 0.95 for an unrelated pair).
    pairs : list of tuple of int
        Matched ``(i, j)``: layer ``i`` of ``Z1`` with layer ``j`` of
        ``Z2``, in increasing order (always in the caller's orientation).
    skipped : list of int
        Layers of the longer model left unmatched (of ``Z2`` when
        ``swapped``).
    similarity : float
        Eq. 2 Spearman module similarity of the matched columns,
        ``Z1[:, i]`` vs ``Z2[:, j]`` over ``pairs``; NaN when undefined
        (see :func:`sklearn_specsig.kernels.spearman_similarity`).
    swapped : bool
        True when ``Z2`` is the deeper model (the DP ran on ``(Z2, Z1)``).
    cost_matrix : ndarray of shape (L1, L2)
        ``D[i, j]`` between layer ``i`` of ``Z1`` and ``j`` of ``Z2``.
    """

    cost: float
    pairs: list
    skipped: list
    similarity: float
    swapped: bool = False
    cost_matrix: np.ndarray = field(default=None, repr=False, compare=False)


def _check_profiles(Z1, Z2):
    """``Z1`` and ``Z2`` as float64 (n_modules, L) profiles, or a ValueError."""
    shapes = [np.shape(getattr(z, "values", z)) for z in (Z1, Z2)]
    for name, shape in zip(("Z1", "Z2"), shapes):
        if len(shape) != 2 or shape[1] < 2:
            # One layer has no depth profile to z-score or rank; a 1-D
            # flattened row must not be read as a profile by accident.
            raise ValueError(
                f"{name} should be a Signature or an (n_modules, n_layers) array "
                f"with at least two layers, got shape {shape}; unflatten "
                "a flattened row with sklearn_specsig.signature.unflatten."
            )
    if shapes[0][0] != shapes[1][0]:
        raise ValueError(
            f"Z1 has {shapes[0][0]} module rows but Z2 has {shapes[1][0]}; "
            "both signatures need the same module roles (n_modules)."
        )
    Z1, Z2 = as_profiles([Z1, Z2], shapes[0][0], common_depth=False)
    for name, Z in (("Z1", Z1), ("Z2", Z2)):
        if np.isinf(Z).any():
            raise ValueError(f"{name} contains infinite values; use NaN for missing ones.")
    return Z1, Z2


def _zscore_rows(Z):
    """Z-score each module row over its finite layers.

    A row with fewer than two finite values or no spread carries no
    information on the ordering of layers; it becomes all-NaN and is left
    out of the cost, as in the Spearman similarity.
    """
    finite = np.isfinite(Z)
    count = finite.sum(axis=1, keepdims=True)
    filled = np.where(finite, Z, 0.0)
    mean = filled.sum(axis=1, keepdims=True) / np.maximum(count, 1)
    centred = np.where(finite, Z - mean, 0.0)
    std = np.sqrt((centred**2).sum(axis=1, keepdims=True) / np.maximum(count, 1))
    usable = (count >= 2) & (std > 0)
    out = np.full_like(Z, np.nan)
    np.divide(centred, std, out=out, where=usable & finite)
    return out


def _cost_matrix(Z1, Z2):
    """``D[i, j]`` = mean over usable modules of ``|z1[m, i] - z2[m, j]|``."""
    diff = np.abs(_zscore_rows(Z1)[:, :, None] - _zscore_rows(Z2)[:, None, :])
    valid = np.isfinite(diff)
    count = valid.sum(axis=0)
    if not count.any():
        raise ValueError(
            "no module row is usable in both signatures (in one of them "
            "every row is NaN or constant); the "
            "layers cannot be aligned."
        )
    D = np.where(valid, diff, 0.0).sum(axis=0) / np.maximum(count, 1)
    # A layer whose every module is NaN can be matched anywhere: give it the
    # average cost, so it neither attracts nor repels a match.
    return np.where(count > 0, D, D[count > 0].mean())


def _match(D):
    """Minimum-cost strictly increasing map of the columns of ``D`` into its rows.

    ``C[i, j]`` is the best cost of placing short layers ``< j`` among long
    layers ``< i``: either long layer ``i - 1`` is skipped, ``C[i - 1, j]``,
    or it takes short layer ``j - 1``, ``C[i - 1, j - 1] + D[i - 1, j - 1]``.
    Each step is vectorised over ``j``, so the loop is over ``L1`` only.
    """
    n_long, n_short = D.shape
    C = np.full((n_long + 1, n_short + 1), np.inf)
    C[:, 0] = 0.0
    take = np.zeros((n_long + 1, n_short + 1), dtype=bool)
    for i in range(1, n_long + 1):
        skip = C[i - 1, 1:]
        match = C[i - 1, :-1] + D[i - 1]
        take[i, 1:] = match <= skip
        C[i, 1:] = np.minimum(skip, match)
    pairs, i, j = [], n_long, n_short
    while j > 0:
        if take[i, j]:
            pairs.append((i - 1, j - 1))
            j -= 1
        i -= 1
    return pairs[::-1]


def align_depth(Z1, Z2):
    """Align two signatures of different depth, layer to layer (paper Sec. 5.4).

    Every module row of each signature is z-scored over its own layers
    (so per-model offsets and scales of a module do not count, in the
    spirit of the rank-based Eq. 2), giving the cost matrix
    ``D[i, j] = mean_m |z1[m, i] - z2[m, j]|`` over the modules usable in
    both (NaN, constant and single-layer rows are left out; the paper's
    "7 z-score normalized module columns").  Dynamic programming then finds
    the injective, order-preserving map of the shorter model's layers into
    the deeper model's layers with the least total cost.

    Parameters
    ----------
    Z1, Z2 : Signature or ndarray of shape (n_modules, L1) and (n_modules, L2)
        Unflattened signatures with the same module rows, NaN where a module
        is missing.  Either may be the deeper one: when ``L1 < L2`` the two
        are swapped internally (``swapped=True`` in the result) and the
        pairs are still reported as ``(layer of Z1, layer of Z2)``.

    Returns
    -------
    AlignmentResult
        ``cost`` (mean over matched pairs), ``pairs``, ``skipped`` (layers
        of the deeper model), ``similarity`` (Eq. 2 on the matched layers),
        ``swapped`` and ``cost_matrix``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels import align_depth
    >>> rng = np.random.default_rng(0)
    >>> parent = rng.normal(size=(7, 10))
    >>> child = np.delete(parent, [3, 7], axis=1)   # two layers pruned
    >>> res = align_depth(parent, child)
    >>> res.skipped, float(res.similarity)
    ([3, 7], 1.0)
    """
    Z1, Z2 = _check_profiles(Z1, Z2)
    swapped = Z1.shape[1] < Z2.shape[1]
    long_, short = (Z2, Z1) if swapped else (Z1, Z2)
    D = _cost_matrix(long_, short)
    matched = _match(D)
    cost = float(np.mean([D[i, j] for i, j in matched]))
    used = {i for i, _ in matched}
    skipped = [i for i in range(long_.shape[1]) if i not in used]
    pairs = [(j, i) for i, j in matched] if swapped else matched
    rows1 = [i for i, _ in pairs]
    rows2 = [j for _, j in pairs]
    similarity = spearman_from_ranks(
        rank_module_rows(Z1[None, :, rows1]), rank_module_rows(Z2[None, :, rows2])
    )[0, 0]
    return AlignmentResult(
        cost=cost,
        pairs=[(int(i), int(j)) for i, j in pairs],
        skipped=skipped,
        similarity=float(similarity),
        swapped=swapped,
        cost_matrix=D.T if swapped else D,
    )


def aligned_similarity(X, Y=None):
    """Post-alignment similarity of every pair of two lists of profiles.

    One DP per pair (O(n_x * n_y * L1 * L2)): for hundreds of models, not a
    zoo; with ``Y`` None only the upper triangle is aligned (the alignment
    is symmetric in its arguments).

    Parameters
    ----------
    X : list of ndarray of shape (n_modules, L_i)
    Y : list of ndarray of shape (n_modules, L_j), default=None
        Defaults to ``X``.

    Returns
    -------
    ndarray of shape (len(X), len(Y))
        ``align_depth(X[a], Y[b]).similarity``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels._alignment import aligned_similarity
    >>> parent = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 3.0, 2.0]])
    >>> aligned_similarity([parent, parent[:, [0, 1, 3]]]).round(2)
    array([[1., 1.],
           [1., 1.]])
    """
    symmetric = Y is None
    Y = X if symmetric else Y
    S = np.empty((len(X), len(Y)))
    for a, za in enumerate(X):
        for b in range(a if symmetric else 0, len(Y)):
            S[a, b] = align_depth(za, Y[b]).similarity
            if symmetric:
                S[b, a] = S[a, b]
    return S
