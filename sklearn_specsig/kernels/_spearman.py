"""The Spearman core: ranked module rows, and their exact combination.

The lowest room of :mod:`sklearn_specsig.kernels`: numpy and scipy only, no
input checks, no chunking.  :func:`rank_module_rows` ranks every module row
of a set of depth profiles once; :func:`spearman_from_ranks` turns two such
sets into the matrix of paper Eq. 2-3.  The kernel
(:func:`~sklearn_specsig.kernels.spearman_similarity`), the alignment
(:func:`~sklearn_specsig.kernels.align_depth`) and the index
(:class:`~sklearn_specsig.search.SignatureIndex`) all call these two, and
nothing else computes a Spearman similarity.

Why integers
------------
The similarity of a pair must not depend on what else is in the matrix
product that computes it: the index scores a query against chunks of the
store and the kernel against the whole store, and the top-k promise (exact
ties go to the lowest index) needs tied pairs to come out tied in both.  A
floating-point dot product does not keep that promise: BLAS sums in an
order that depends on the shapes of the matrices, and on where a row falls
in a block, so two pairs equal in exact arithmetic can come out 1 ulp
apart, and differently in two products.

So the ranks are kept as integers: average ranks are multiples of 1/2, and
``2 * rank - (L + 1)`` is an integer in ``[-(L - 1), L - 1]``.  The dot
product of two such rows is a sum of integers, and every partial sum is
bounded by ``L (L^2 - 1) / 3`` (Cauchy-Schwarz on the absolute values), so
BLAS computes it *exactly*, in any summation order, as long as that bound
is below ``2**24`` (float32, up to L = 369 layers) or ``2**53`` (float64,
up to L = 300,079; deeper profiles are refused).  Everything after the
products is elementwise, in one fixed order, in :func:`spearman_from_ranks`:
the value of a pair is a function of the pair alone, bit for bit.  (Two
*different* pairs equal in exact arithmetic tie when they share their
integer products and norms, as copies and monotone transforms do; other
coincidences of rationals may still round apart.)
"""

from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

__all__ = ["RankedRows", "rank_module_rows", "spearman_from_ranks", "spearman_paired"]

# Integers up to 2**24 (float32) and 2**53 (float64) are exact.
_EXACT_FLOAT32 = 2**24
_EXACT_FLOAT64 = 2**53

# spearman_from_ranks works on tiles of at most _TILE_ROWS rows of A by
# _TILE_ELEMENTS // rows columns of B, so that its four (rows, columns)
# float64 buffers (products, correlations, total, counts; 4 MiB) stay in
# cache across the passes of the module loop, while each tile is
# still a product large enough for BLAS and numpy's per-call cost.  Sizes
# measured with benchmarks/bench_search.py; any tiling gives the same bits.
_TILE_ROWS = 128
_TILE_ELEMENTS = 2**17


def _no_tie_sq_norm(n_layers):
    """Sum of squares of ``2 * rank - (L + 1)`` for a row without ties."""
    return float(n_layers * (n_layers * n_layers - 1) // 3)


class RankedRows(NamedTuple):
    """Module rows ranked once, for :func:`spearman_from_ranks`.

    Attributes
    ----------
    ranks : ndarray of shape (n_modules, n_rows, n_layers)
        ``2 * rank - (n_layers + 1)`` of every module row (average ranks for
        ties), integers stored as float32 when that is exact, else float64;
        0 on rows that are not usable.  Module-major, so that the product of
        one module is over contiguous memory.
    sq_norms : ndarray of shape (n_rows, n_modules)
        Sum of squares of each row of ``ranks`` (an integer); for a row that
        is not usable, the value of a row without ties, so that its zero
        products divide by a value shared by most rows.
    usable : ndarray of shape (n_rows, n_modules)
        1.0 where the row is usable (all finite, not constant), else 0.0.
    """

    ranks: np.ndarray
    sq_norms: np.ndarray
    usable: np.ndarray

    @property
    def n_rows(self):
        return self.ranks.shape[1]

    def take(self, rows):
        """The ranked rows ``rows`` (a slice or an index array)."""
        return RankedRows(self.ranks[:, rows], self.sq_norms[rows], self.usable[rows])


def rank_module_rows(Z, *, batch_size=None):
    """Rank every module row of a set of depth profiles.

    A row is usable when all its values are finite and not all equal.  A
    row with only *some* NaN counts as missing as a whole (as
    :func:`scipy.stats.spearmanr` with its default ``nan_policy`` says):
    ranks on a per-pair subset of layers would need a ranking per pair.

    Parameters
    ----------
    Z : ndarray of shape (n_rows, n_modules, n_layers)
        Depth profiles (:func:`~sklearn_specsig.signature.unflatten` of
        flattened signatures); NaN allowed, inf not.
    batch_size : int, default=None
        Rank this many profiles at a time, to bound scipy's temporaries on
        a large store; None ranks them all at once.  The result is the same.

    Returns
    -------
    RankedRows

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels._spearman import rank_module_rows
    >>> ranked = rank_module_rows(np.array([[[0.3, 0.1, 0.2], [1.0, 1.0, 1.0]]]))
    >>> ranked.ranks[:, 0].tolist(), ranked.usable.tolist()
    ([[2.0, -2.0, 0.0], [0.0, 0.0, 0.0]], [[1.0, 0.0]])
    """
    Z = np.asarray(Z, dtype=np.float64)
    n_rows, n_modules, n_layers = Z.shape
    bound = _no_tie_sq_norm(n_layers)  # every partial sum of a product is below it
    if bound >= _EXACT_FLOAT64:
        raise ValueError(
            f"profiles of {n_layers} layers are too deep for an exact Spearman "
            "similarity in float64; resample them (signature.resample_depth)."
        )
    dtype = np.float32 if bound < _EXACT_FLOAT32 else np.float64
    ranked = RankedRows(
        np.empty((n_modules, n_rows, n_layers), dtype=dtype),
        np.empty((n_rows, n_modules)),
        np.empty((n_rows, n_modules)),
    )
    for start in range(0, n_rows, batch_size or max(n_rows, 1)):
        rows = slice(start, min(n_rows, start + (batch_size or n_rows)))
        _rank_into(ranked, rows, Z[rows], bound)
    return ranked


def _rank_into(ranked, rows, Z, no_tie):
    finite = np.isfinite(Z)
    usable = finite.all(axis=2)
    # Average ranks for ties, exactly as spearmanr; NaN are zeroed first
    # (their rows are discarded below) so rankdata does not propagate NaN.
    R = rankdata(np.where(finite, Z, 0.0), method="average", axis=2)
    R *= 2.0
    R -= Z.shape[2] + 1  # integers now: exact in any dtype that holds them
    sq = np.einsum("nml,nml->nm", R, R)  # integer sums: exact in any order
    usable &= sq > 0  # a constant row has all-equal ranks
    R[~usable] = 0.0
    sq[~usable] = max(no_tie, 1.0)
    ranked.ranks[:, rows] = R.transpose(1, 0, 2)
    ranked.sq_norms[rows] = sq
    ranked.usable[rows] = usable


def _denominator(a, b):
    """``sqrt(a_i * b_j)`` for every pair, broadcast from where a side is constant.

    The values are the same either way (the same two numbers, multiplied
    and rooted, correctly rounded by IEEE 754); the scalar and 1-D forms
    save (n_a, n_b) passes when every row of a side has the same squared
    norm, as rows without ties (and rows not usable) do.
    """
    a_const, b_const = (a == a[0]).all(), (b == b[0]).all()
    if a_const and b_const:
        return np.sqrt(a[0] * b[0])
    if a_const:
        return np.sqrt(a[0] * b)[None, :]
    if b_const:
        return np.sqrt(a * b[0])[:, None]
    return np.sqrt(np.multiply.outer(a, b))


def spearman_from_ranks(A, B):
    """Spearman module similarity of every pair of two sets of ranked rows.

    ``S[a, b]`` is the mean over the module rows usable in both of the
    Spearman correlation ``dot / sqrt(|x|^2 |y|^2)`` of the integer ranks;
    NaN when no row is usable in both.  The dot products are exact integers
    (see the module docstring) and the rest is elementwise, modules summed
    in increasing order: ``S[a, b]`` does not depend on the other rows of
    ``A`` and ``B``, so any chunking of a computation gives the same bits,
    and so do two pairs with the same products and norms.  Identical usable
    rows correlate exactly 1 (``sqrt(n * n) == n`` in floating point).

    Parameters
    ----------
    A, B : RankedRows
        From :func:`rank_module_rows`, with the same modules and layers.

    Returns
    -------
    ndarray of shape (A.n_rows, B.n_rows)
        Similarities in [-1, 1], or NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels._spearman import (
    ...     rank_module_rows, spearman_from_ranks)
    >>> Z = np.array([[[1.0, 2.0, 3.0]], [[1.0, 3.0, 2.0]], [[3.0, 2.0, 1.0]]])
    >>> ranked = rank_module_rows(Z)
    >>> spearman_from_ranks(ranked.take([0]), ranked)
    array([[ 1. ,  0.5, -1. ]])
    """
    n_a, n_b = A.n_rows, B.n_rows
    S = np.empty((n_a, n_b))
    if n_a == 0 or n_b == 0:
        return S
    row_step = min(n_a, _TILE_ROWS)
    col_step = _TILE_ELEMENTS // row_step
    for r in range(0, n_a, row_step):
        A_tile = A.take(slice(r, r + row_step))
        for c in range(0, n_b, col_step):
            cols = slice(c, min(n_b, c + col_step))
            S[r : r + row_step, cols] = _spearman_tile(A_tile, B, cols)
    return S


def _spearman_tile(A, B, cols):
    width = cols.stop - cols.start
    dots = np.empty((A.n_rows, width), dtype=A.ranks.dtype)
    rho = np.empty((A.n_rows, width))
    total = np.zeros((A.n_rows, width))
    for m in range(A.ranks.shape[0]):  # a fixed order: the sum is the same everywhere
        np.matmul(A.ranks[m], B.ranks[m, cols].T, out=dots)  # exact integers
        np.divide(dots, _denominator(A.sq_norms[:, m], B.sq_norms[cols, m]), out=rho)
        total += rho
    count = A.usable @ B.usable[cols].T  # rows usable in both: exact too
    with np.errstate(invalid="ignore", divide="ignore"):
        total /= count
    total[count == 0] = np.nan
    # Keeps the [-1, 1] promise against rounding (possible only for very
    # deep profiles, whose product of squared norms is not an exact float).
    return np.clip(total, -1.0, 1.0, out=total)


def spearman_paired(A, B):
    """Spearman module similarity of row ``i`` of ``A`` with row ``i`` of ``B``.

    The diagonal of ``spearman_from_ranks(A, B)`` without the rest of the
    matrix, bit for bit: the same exact integer products, the same
    elementwise steps in the same module order.  The registry's null
    (:mod:`sklearn_specsig.registry`) samples pairs of a large store with it.

    Parameters
    ----------
    A, B : RankedRows
        With the same number of rows, modules and layers.

    Returns
    -------
    ndarray of shape (A.n_rows,)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels._spearman import rank_module_rows, spearman_paired
    >>> Z = np.array([[[1.0, 2.0, 3.0]], [[1.0, 3.0, 2.0]], [[3.0, 2.0, 1.0]]])
    >>> ranked = rank_module_rows(Z)
    >>> spearman_paired(ranked.take([0, 0, 1]), ranked.take([1, 2, 2]))
    array([ 0.5, -1. , -0.5])
    """
    if A.n_rows != B.n_rows:
        raise ValueError(f"paired rows: {A.n_rows} != {B.n_rows}.")
    total = np.zeros(A.n_rows)
    for m in range(A.ranks.shape[0]):  # the order of spearman_from_ranks
        dots = np.einsum("nl,nl->n", A.ranks[m], B.ranks[m])  # exact integers
        total += dots / np.sqrt(A.sq_norms[:, m] * B.sq_norms[:, m])
    count = np.einsum("nm,nm->n", A.usable, B.usable)
    with np.errstate(invalid="ignore", divide="ignore"):
        total /= count
    total[count == 0] = np.nan
    return np.clip(total, -1.0, 1.0, out=total)
