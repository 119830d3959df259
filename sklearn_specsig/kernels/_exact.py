"""Matrix products whose entries do not depend on the shapes multiplied.

BLAS sums a dot product in an order that depends on the shapes of the
matrices (tiles, edge kernels, threads), so the product of one pair of rows
can come out an ulp apart when the rows sit in another chunk of the store
or another block of queries.  An index scanning a store chunk by chunk then
disagrees with the full matrix on which of two exactly equal candidates
ranks first, and "exact ties go to the lowest index" stops being true.

The products here are exact in any order.  Each row is scaled by a power of
two into ``(-1, 1)`` and cut into slices of ``bits`` bits each, whole
numbers (the Ozaki scheme), until every bit of every entry is in a slice.
The product of two slices sums integers below ``2**53``, which float64 BLAS
does exactly whatever its order, tiling or FMA.  Every slice product is
then scaled back (by powers of two, exact) and added in one fixed order, so
the only rounding is that of the final sum of exact terms.  A pair's value
is thus a function of its two rows alone, and as accurate as a float64 dot
product of those rows, whatever the range of values in a row: the masked
sums of the rbf and cosine kernels (over the features two signatures
share) keep the small entries of a row whose largest entry is masked out.
Typical signatures need three slices of each row (nine BLAS products for
one); a row spanning many orders of magnitude needs more.  The Spearman
kernel does not need any of this (its ranks are integers already, see
:mod:`._spearman`); the rbf and cosine kernels do.
"""

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SlicedRows", "exact_dot", "slice_rows"]

#: Slices are cut until they hold at least this many bits of each value.
_MANTISSA_BITS = 53


@dataclass(frozen=True)
class SlicedRows:
    """Rows cut into whole-number slices: ``A[i] = sum_s slices[s][i] *
    2**(exponent[i] - bits * (s + 1))``.

    Attributes
    ----------
    slices : tuple of ndarray of shape (n_rows, n_features)
        Whole numbers of magnitude below ``2**bits``; all-zero slices are
        kept as None.
    exponent : ndarray of shape (n_rows,)
        Each row's power of two.
    bits : int
    """

    slices: tuple
    exponent: np.ndarray
    bits: int


def _bits_for(n_features):
    # A sum of n_features products of two slices stays below 2**53.
    return (_MANTISSA_BITS - max(1, math.ceil(math.log2(max(n_features, 2))))) // 2


def slice_rows(A, bits=None):
    """Cut the rows of ``A`` into whole-number slices (:class:`SlicedRows`).

    Parameters
    ----------
    A : ndarray of shape (n_rows, n_features)
        Finite float64 values (NaN must be replaced first).
    bits : int, optional
        Bits per slice; the default keeps products of ``n_features`` terms
        exact.  Two operands of :func:`exact_dot` must use the same.

    Returns
    -------
    SlicedRows
    """
    A = np.asarray(A, dtype=np.float64)
    bits = _bits_for(A.shape[1]) if bits is None else bits
    # frexp: max|row| = f * 2**e with f in [0.5, 1), so |row / 2**e| < 1.
    _, exponent = np.frexp(np.max(np.abs(A), axis=1, initial=0.0))
    rest = np.ldexp(A, -exponent[:, None])
    slices = []
    # Until nothing is left: an entry far below its row's largest keeps its
    # bits in later slices (at most ~2100 / bits of them, for a row spanning
    # the whole float64 range).
    while rest.any():
        rest = np.ldexp(rest, bits)
        whole = np.trunc(rest)
        rest = rest - whole  # exact: the fraction of a float
        slices.append(whole if whole.any() else None)
    return SlicedRows(tuple(slices), exponent, bits)


def exact_dot(A, B):
    """``A @ B.T`` of two :class:`SlicedRows`, the same bits in any shape.

    Parameters
    ----------
    A : SlicedRows of n_a rows
    B : SlicedRows of n_b rows, same features and bits

    Returns
    -------
    ndarray of shape (n_a, n_b)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels._exact import exact_dot, slice_rows
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(5, 40)), rng.normal(size=(300, 40))
    >>> full = exact_dot(slice_rows(X), slice_rows(Y))
    >>> part = exact_dot(slice_rows(X[2:3]), slice_rows(Y[100:107]))
    >>> bool((part == full[2:3, 100:107]).all()), bool(np.allclose(full, X @ Y.T))
    (True, True)
    """
    if A.bits != B.bits:
        raise ValueError(f"slices of {A.bits} and {B.bits} bits cannot be multiplied.")
    total = None
    # Every term, by decreasing weight, in the same order for every entry.
    for k in range(len(A.slices) + len(B.slices) - 1):
        for s in range(max(0, k - len(B.slices) + 1), min(k, len(A.slices) - 1) + 1):
            a, b = A.slices[s], B.slices[k - s]
            if a is None or b is None:
                continue
            term = np.ldexp(a @ b.T, -A.bits * (k + 2))
            total = term if total is None else total + term
    if total is None:
        return np.zeros((len(A.exponent), len(B.exponent)))
    return np.ldexp(total, A.exponent[:, None] + B.exponent[None, :])
