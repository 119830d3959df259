"""Similarity matrices between flattened signatures (paper Eq. 2, 6 and 7).

The room of the matrix kernels: input checks, row chunks within
scikit-learn's ``working_memory``, the three named kernels and the
dispatcher :func:`pairwise_similarity`.  Each kernel takes flattened
signatures (module-major, feature ``j = module * n_layers + layer``) and
returns a dense ``(n_x, n_y)`` float64 matrix from a few matrix products,
not a loop over pairs.  The Spearman kernel ranks here and scores in
:mod:`._spearman`, the one Spearman core of the package.

NaN is expected (GPT-2 has no ``gate`` row).  Shared rule: a pair is
compared on what both signatures have, and a pair with nothing comparable
gets NaN (as sklearn's ``nan_euclidean_distances`` does), not a made-up
number: estimators then refuse it loudly instead of reading "unrelated".
"""

from numbers import Integral, Real

import numpy as np
from sklearn import get_config
from sklearn.utils import gen_batches
from sklearn.utils.validation import check_array

from ..signature import check_n_modules, unflatten
from ._exact import exact_dot, slice_rows
from ._spearman import rank_module_rows, spearman_from_ranks

__all__ = [
    "KERNELS",
    "cosine_similarity",
    "default_gamma",
    "pairwise_similarity",
    "rbf_similarity",
    "rows_per_block",
    "spearman_similarity",
]

# (rows, n_y) float64 temporaries a kernel holds at once per block: the four
# masked products of rbf and cosine (the Spearman core tiles its own).
_TEMPORARIES = 4


def rows_per_block(n_columns, n_temporaries):
    """Rows per block so that a block's temporaries fit ``working_memory``.

    The one memory rule of the kernels and the index: ``n_temporaries``
    float64 arrays of shape ``(rows, n_columns)`` stay within
    scikit-learn's ``working_memory`` (:func:`sklearn.set_config`), at
    least one row whatever the budget.

    Parameters
    ----------
    n_columns : int
    n_temporaries : int

    Returns
    -------
    int

    Examples
    --------
    >>> from sklearn import config_context
    >>> from sklearn_specsig.kernels._pairwise import rows_per_block
    >>> with config_context(working_memory=1):  # 1 MiB
    ...     rows_per_block(1024, 4)
    32
    """
    budget = get_config()["working_memory"] * 2**20
    return max(1, int(budget // (n_temporaries * 8 * max(n_columns, 1))))


def _check_signatures(X, name, n_modules):
    if np.ndim(X) == 3:
        raise ValueError(f"{name} has shape {np.shape(X)}: pass flattened signatures, "
                         "sklearn_specsig.signature.flatten(Z).")
    X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan", input_name=name)
    check_n_modules(X.shape[1], n_modules)
    return X


def _check_pair(X, Y, n_modules):
    if isinstance(n_modules, bool) or not isinstance(n_modules, Integral) or n_modules < 1:
        raise ValueError(f"n_modules={n_modules!r} must be a positive int (7 for q..down).")
    X = _check_signatures(X, "X", n_modules)
    if Y is None:
        return X, None
    Y = _check_signatures(Y, "Y", n_modules)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"X has {X.shape[1]} features (n_layers={X.shape[1] // n_modules} "
            f"at n_modules={n_modules}) but Y has {Y.shape[1]} (n_layers="
            f"{Y.shape[1] // n_modules}); resample both to one depth "
            "(SpectralSignatureTransformer(n_layers=...)) or compare them "
            "with SpearmanModuleKernel(depth='align')."
        )
    return X, Y


def _chunked(X, Y, block):
    """Fill the (n_x, n_y) matrix with ``block(rows)`` over chunks of X's rows."""
    n_y = (X if Y is None else Y).shape[0]
    out = np.empty((X.shape[0], n_y))
    step = min(X.shape[0], rows_per_block(n_y, _TEMPORARIES))
    for rows in gen_batches(X.shape[0], max(step, 1)):
        out[rows] = block(rows)
    return out


def _set_diagonal(S, Y):
    # Self-similarity is exactly 1 where defined (rounding in the matrix
    # product would otherwise give 1 - 1e-16), so 1 - S is exactly 0.
    if Y is None:
        i = np.flatnonzero(np.isfinite(np.diagonal(S)))
        S[i, i] = 1.0
    return S


def spearman_similarity(X, Y=None, *, n_modules=7):
    """Spearman module similarity (paper Eq. 2-3) between signatures.

    ``S[a, b]`` is the mean over module rows of the Spearman correlation of
    the depth profiles of ``X[a]`` and ``Y[b]``.  Each row is ranked once
    (average ranks for ties, as :func:`scipy.stats.spearmanr`) and kept as
    integers, so that each module's matrix product is exact; the
    correlations are then combined elementwise (see
    :mod:`sklearn_specsig.kernels._spearman`).  A pair's value is therefore
    the same bits whatever the other signatures and the chunking:
    :class:`~sklearn_specsig.search.SignatureIndex` and
    :func:`align_depth` give exactly these numbers, and pairs tied in exact
    arithmetic through the same products (duplicates, copies) stay tied.

    Left out of a pair's mean: a row NaN anywhere in either signature (a
    missing role, e.g. GPT-2's ``gate``: GPT-2 vs Llama averages 6 rows; a
    row with only some NaN layers counts as missing too) and a constant row
    (Spearman undefined).  A pair with no row left gets NaN, silently.

    Parameters
    ----------
    X : array-like of shape (n_x, n_modules * n_layers)
        Flattened signatures; NaN allowed, inf not.
    Y : array-like of shape (n_y, n_modules * n_layers), default=None
        Defaults to ``X``.  Must have the same number of features.
    n_modules : int, default=7
        Module rows per signature.

    Returns
    -------
    ndarray of shape (n_x, n_y)
        Similarities in [-1, 1]; 1 on the diagonal when ``Y`` is None.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels import spearman_similarity
    >>> X = np.array([[1.0, 2.0, 3.0, 3.0, 2.0, 1.0],
    ...               [2.0, 4.0, 9.0, 1.0, 5.0, 0.0],
    ...               [3.0, 2.0, 1.0, np.nan, np.nan, np.nan]])
    >>> spearman_similarity(X, n_modules=2).round(2)
    array([[ 1.  ,  0.75, -1.  ],
           [ 0.75,  1.  , -1.  ],
           [-1.  , -1.  ,  1.  ]])
    """
    X, Y = _check_pair(X, Y, n_modules)
    RX = rank_module_rows(unflatten(X, n_modules))
    RY = RX if Y is None else rank_module_rows(unflatten(Y, n_modules))
    # No _set_diagonal: the core gives exactly 1 for a row with itself.
    return _chunked(X, Y, lambda rows: spearman_from_ranks(RX.take(rows), RY))


def _masked_products(X, Y):
    """``block(rows)`` -> (x.y, |x|^2, |y|^2, n) over the features both have.

    Every product is :func:`~._exact.exact_dot` (the count of common
    features is a product of 0/1 masks, exact as it is): a pair's value is
    the same bits in any block or chunk, so the index's chunks agree with
    the full matrix and exact copies of a signature tie exactly.
    """
    Xz, MX = np.nan_to_num(X, nan=0.0), np.isfinite(X).astype(np.float64)
    Yz, MY = (Xz, MX) if Y is None else (np.nan_to_num(Y, nan=0.0), np.isfinite(Y) * 1.0)
    SY, SMY, SY2 = slice_rows(Yz), slice_rows(MY), slice_rows(Yz * Yz)

    def block(rows):
        x, mx = Xz[rows], MX[rows]
        return (exact_dot(slice_rows(x), SY), exact_dot(slice_rows(x * x), SMY),
                exact_dot(slice_rows(mx), SY2), mx @ MY.T)

    return block


def default_gamma(reference):
    """The RBF ``gamma`` used when none is given: sklearn's ``"scale"``.

    ``1 / (n_features * var)`` over the finite values of the reference
    signatures, ``1 / n_features`` when their variance is 0 or they have no
    finite value.  One function, because :func:`rbf_similarity` applies it
    to its references and :class:`~sklearn_specsig.search.SignatureIndex`
    to its whole store at ``fit`` (so that chunks do not each pick their
    own).

    Parameters
    ----------
    reference : ndarray of shape (n_samples, n_features)
        Flattened signatures; NaN allowed.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels import default_gamma
    >>> default_gamma(np.array([[0.0, 2.0], [np.nan, 4.0]]))  # var 8/3
    0.1875
    """
    reference = np.asarray(reference, dtype=np.float64)
    n_features = reference.shape[1]
    finite = reference[np.isfinite(reference)]
    var = np.var(finite) if finite.size else 0.0
    return float(1.0 / (n_features * var) if var > 0 else 1.0 / n_features)


def rbf_similarity(X, Y=None, *, gamma=None, n_modules=7):
    """RBF kernel ``exp(-gamma * d(x, y)^2)`` between signatures (paper Eq. 6).

    ``gamma = 1 / (2 sigma^2)``.  Features NaN in either signature are left
    out and the squared distance over the ``p`` features both have is scaled
    by ``n_features / p`` (as sklearn's ``nan_euclidean_distances``), an
    estimate of the full ``||x - y||^2``.  No common feature: NaN.

    Parameters
    ----------
    X : array-like of shape (n_x, n_modules * n_layers)
    Y : array-like of shape (n_y, n_modules * n_layers), default=None
        The reference signatures; defaults to ``X``.
    gamma : float, default=None
        ``None``: :func:`default_gamma` of the references (sklearn's
        ``gamma="scale"``, ``1 / (n_features * var)`` over Y's finite
        values; X's when Y is None).  A query's kernel row
        thus does not depend on the other queries; pass a float for a fixed,
        symmetric kernel.
    n_modules : int, default=7

    Returns
    -------
    ndarray of shape (n_x, n_y)
        Similarities in (0, 1]; 1 on the diagonal when ``Y`` is None.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels import rbf_similarity
    >>> X = np.array([[0.0, 1.0], [0.0, np.nan], [3.0, 4.0]])
    >>> rbf_similarity(X, gamma=0.1, n_modules=1).round(3)
    array([[1.   , 1.   , 0.165],
           [1.   , 1.   , 0.165],
           [0.165, 0.165, 1.   ]])
    """
    X, Y = _check_pair(X, Y, n_modules)
    n_features = X.shape[1]
    if gamma is None:
        gamma = default_gamma(X if Y is None else Y)
    elif not isinstance(gamma, Real) or not gamma > 0:
        raise ValueError(f"gamma={gamma!r} must be a positive float or None.")
    products = _masked_products(X, Y)

    def block(rows):
        dot, x2, y2, common = products(rows)
        sq = x2 + y2 - 2.0 * dot  # ||x - y||^2 over the common features
        with np.errstate(invalid="ignore", divide="ignore"):
            d2 = np.where(common > 0, np.maximum(sq, 0.0) * n_features / common, np.nan)
        return np.exp(-gamma * d2)

    return _set_diagonal(_chunked(X, Y, block), Y)


def cosine_similarity(X, Y=None, *, n_modules=7):
    """Cosine similarity between signatures (paper Eq. 7), NaN-aware.

    The dot product and both norms are taken over the features both
    signatures have.  No common feature, or a zero vector on them: NaN
    (sklearn's ``cosine_similarity`` returns 0 for a zero vector).

    Parameters
    ----------
    X : array-like of shape (n_x, n_modules * n_layers)
    Y : array-like of shape (n_y, n_modules * n_layers), default=None
        Defaults to ``X``.
    n_modules : int, default=7

    Returns
    -------
    ndarray of shape (n_x, n_y)
        Similarities in [-1, 1]; 1 on the diagonal when ``Y`` is None.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels import cosine_similarity
    >>> X = np.array([[1.0, 0.0, 2.0], [2.0, 5.0, np.nan]])
    >>> cosine_similarity(X, n_modules=1).round(3)
    array([[1.   , 0.371],
           [0.371, 1.   ]])
    """
    X, Y = _check_pair(X, Y, n_modules)
    products = _masked_products(X, Y)

    def block(rows):
        dot, x2, y2, _ = products(rows)
        with np.errstate(invalid="ignore", divide="ignore"):
            S = np.where(x2 * y2 > 0, dot / np.sqrt(x2 * y2), np.nan)
        return np.clip(S, -1.0, 1.0)

    return _set_diagonal(_chunked(X, Y, block), Y)


KERNELS = {"spearman": spearman_similarity, "rbf": rbf_similarity, "cosine": cosine_similarity}


def pairwise_similarity(X, Y=None, *, kernel="spearman", n_modules=7, **kernel_params):
    """Similarity matrix under a kernel given by name or as a callable.

    Parameters
    ----------
    X : array-like of shape (n_x, n_modules * n_layers)
    Y : array-like of shape (n_y, n_modules * n_layers), default=None
        Defaults to ``X``.
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        A callable gets the whole matrices, ``kernel(X, Y, **kernel_params)``
        (``Y`` is ``X`` when None; not once per pair as in sklearn's
        ``pairwise_kernels``), and returns the ``(n_x, n_y)`` matrix; a
        :class:`SpearmanModuleKernel` instance qualifies.
    n_modules : int, default=7
        Passed to the named kernels (not to a callable).
    **kernel_params
        Extra keyword arguments of the kernel, e.g. ``gamma`` for "rbf".

    Returns
    -------
    ndarray of shape (n_x, n_y)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.kernels import pairwise_similarity
    >>> X = np.array([[1.0, 2.0, 4.0], [1.0, 3.0, 2.0]])
    >>> pairwise_similarity(X, kernel="spearman", n_modules=1)
    array([[1. , 0.5],
           [0.5, 1. ]])
    """
    if callable(kernel):
        Y = X if Y is None else Y
        S = np.asarray(kernel(X, Y, **kernel_params), dtype=np.float64)
        if S.shape != (len(X), len(Y)):
            raise ValueError(f"kernel returned shape {S.shape}, not {(len(X), len(Y))}.")
        return S
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not one of {sorted(KERNELS)} or a callable.")
    return KERNELS[kernel](X, Y, n_modules=n_modules, **kernel_params)
