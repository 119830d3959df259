"""Similarity kernels between spectral signatures (paper Eq. 2, 6 and 7).

Each function takes flattened signatures (module-major, feature
``j = module * n_layers + layer``) and returns a dense ``(n_x, n_y)``
float64 matrix from a few matrix products, not a loop over pairs, in row
chunks sized by sklearn's ``working_memory``.

NaN is expected (GPT-2 has no ``gate`` row).  Shared rule: a pair is
compared on what both signatures have, and a pair with nothing comparable
gets NaN (as sklearn's ``nan_euclidean_distances`` does), not a made-up
number: estimators then refuse it loudly instead of reading "unrelated".
"""

from numbers import Integral, Real

import numpy as np
from scipy.stats import rankdata
from sklearn import get_config
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._alignment import AlignmentResult, _aligned_similarity, _profile_list, align_depth
from .signature import flatten, resample_depth, unflatten

__all__ = [
    "AlignmentResult",
    "SpearmanModuleKernel",
    "align_depth",
    "cosine_similarity",
    "pairwise_similarity",
    "rbf_similarity",
    "spearman_similarity",
]


def _check_signatures(X, name, n_modules):
    if np.ndim(X) == 3:
        raise ValueError(f"{name} has shape {np.shape(X)}: pass flattened signatures, "
                         "sklearn_specsig.signature.flatten(Z).")
    X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan", input_name=name)
    unflatten(X[:0], n_modules)  # raises the layout's error for a bad count
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
    # About four float64 (chunk, n_y) temporaries live at once per block.
    budget = get_config()["working_memory"] * 2**20
    step = max(1, min(X.shape[0], int(budget // (4 * 8 * max(n_y, 1)))))
    for rows in gen_batches(X.shape[0], step):
        out[rows] = block(rows)
    return out


def _set_diagonal(S, Y):
    # Self-similarity is exactly 1 where defined (rounding in the matrix
    # product would otherwise give 1 - 1e-16), so 1 - S is exactly 0.
    if Y is None:
        i = np.flatnonzero(np.isfinite(np.diagonal(S)))
        S[i, i] = 1.0
    return S


def _ranked_rows(X, n_modules):
    """Centred, unit-norm ranks of every module row, and which rows are usable.

    A row is usable when all its values are finite and not all equal.  A
    row with only *some* NaN counts as missing as a whole (as
    ``scipy.stats.spearmanr`` with its default ``nan_policy`` says): ranks
    on a per-pair subset of layers would need a ranking per pair.
    """
    Z = unflatten(X, n_modules)
    finite = np.isfinite(Z).all(axis=2)
    # Average ranks for ties, exactly as spearmanr; NaN rows are zeroed first
    # (their ranks are discarded below) so rankdata does not propagate NaN.
    R = rankdata(np.where(np.isfinite(Z), Z, 0.0), method="average", axis=2)
    R -= R.mean(axis=2, keepdims=True)
    norm = np.sqrt(np.einsum("nml,nml->nm", R, R))
    usable = finite & (norm > 0)  # a constant row has all-equal ranks: norm 0
    R = np.divide(R, norm[..., None], out=np.zeros_like(R), where=usable[..., None])
    return R.reshape(len(X), -1), usable.astype(np.float64)


def spearman_similarity(X, Y=None, *, n_modules=7):
    """Spearman module similarity (paper Eq. 2-3) between signatures.

    ``S[a, b]`` is the mean over module rows of the Spearman correlation of
    the depth profiles of ``X[a]`` and ``Y[b]``.  Each row is ranked once
    (average ranks for ties, as :func:`scipy.stats.spearmanr`), centred and
    scaled to unit norm; one matrix product then sums every pair's
    correlations, and another counts the rows averaged.

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
    RX, VX = _ranked_rows(X, n_modules)
    RY, VY = (RX, VX) if Y is None else _ranked_rows(Y, n_modules)

    def block(rows):
        total = RX[rows] @ RY.T  # sum over modules of the correlations
        count = VX[rows] @ VY.T  # number of rows usable in both
        with np.errstate(invalid="ignore", divide="ignore"):
            S = np.where(count > 0, total / count, np.nan)
        return np.clip(S, -1.0, 1.0)

    return _set_diagonal(_chunked(X, Y, block), Y)


def _masked_products(X, Y):
    """``block(rows)`` -> (x.y, |x|^2, |y|^2, n) over the features both have."""
    Xz, MX = np.nan_to_num(X, nan=0.0), np.isfinite(X).astype(np.float64)
    Yz, MY = (Xz, MX) if Y is None else (np.nan_to_num(Y, nan=0.0), np.isfinite(Y) * 1.0)
    Y2 = Yz * Yz

    def block(rows):
        x, mx = Xz[rows], MX[rows]
        return x @ Yz.T, (x * x) @ MY.T, mx @ Y2.T, mx @ MY.T

    return block


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
        ``None``: sklearn's ``gamma="scale"`` on the references,
        ``1 / (n_features * var)`` over Y's finite values (X's when Y is
        None; ``1 / n_features`` if the variance is 0).  A query's kernel row
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
        ref = X if Y is None else Y
        var = np.var(ref[np.isfinite(ref)]) if np.isfinite(ref).any() else 0.0
        gamma = 1.0 / (n_features * var) if var > 0 else 1.0 / n_features
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


class SpearmanModuleKernel(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Spearman module similarity (paper Eq. 2) as a kernel and a transformer.

    The callable ``K(X, Y)`` returns the matrix of :func:`spearman_similarity`,
    so ``SVC(kernel=K)`` works (it is positive semi-definite when all
    signatures miss the same rows).  As a transformer, :meth:`fit` stores
    references and :meth:`transform` returns similarities (or distances, or
    affinities) to them, for estimators with ``metric=``, ``affinity=`` or
    ``kernel="precomputed"``; in a Pipeline, ``fit_transform`` gives the
    train-by-train matrix and ``transform`` the test-by-train one.

    Parameters
    ----------
    n_modules : int, default=7
        Module rows per signature (``n_modules=1``: a row is one profile).
    output : {"similarity", "distance", "affinity"}, default="similarity"
        What :meth:`transform` returns: the similarity S in [-1, 1];
        ``max(1 - S, 0)`` in [0, 2], for ``metric="precomputed"``
        (KNeighbors*, DBSCAN, AgglomerativeClustering); or ``(1 + S) / 2`` in
        [0, 1], for ``affinity="precomputed"`` (SpectralClustering).  The
        callable form always returns S.  NaN (no comparable module row)
        stays NaN, which those estimators reject.
    depth : None, int or "align", default=None
        How signatures of different depths are compared.  None: all must
        have the same depth (a clear error otherwise).  An int: every
        profile is resampled onto that many points of relative depth
        (:func:`~sklearn_specsig.signature.resample_depth`).  "align": each
        pair is aligned layer to layer by :func:`align_depth` and scored by
        its post-matching similarity (a DP per pair, for hundreds of
        models, not a zoo).  Besides a 2-D array of flattened signatures,
        ``X`` may then be a list of :class:`~sklearn_specsig.Signature`
        objects or (n_modules, L_i) arrays (also with None, at one depth).

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_fit, n_features) or list of ndarray
        The references; with ``depth="align"`` a list of (n_modules, L_i)
        arrays.
    n_features_in_ : int
        Features seen in :meth:`fit`, when it was given a 2-D array.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from sklearn_specsig.kernels import SpearmanModuleKernel
    >>> rng = np.random.default_rng(0)
    >>> bases = rng.normal(size=(2, 7 * 8))
    >>> X = np.repeat(bases, 3, axis=0) + 0.05 * rng.normal(size=(6, 56))
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> K = SpearmanModuleKernel(n_modules=7)
    >>> K(X[:1], bases).round(2)
    array([[0.99, 0.12]])
    >>> knn = make_pipeline(SpearmanModuleKernel(output="distance"),
    ...                     KNeighborsClassifier(1, metric="precomputed"))
    >>> knn.fit(X, y).predict(bases).tolist()
    [0, 1]
    """

    _parameter_constraints: dict = {
        "n_modules": [Interval(Integral, 1, None, closed="left")],
        "output": [StrOptions({"similarity", "distance", "affinity"})],
        "depth": [None, StrOptions({"align"}), Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, n_modules=7, output="similarity", depth=None):
        self.n_modules = n_modules
        self.output = output
        self.depth = depth

    def _prepare(self, X, *, reset=None):
        """``X`` as the kernel compares it; ``reset`` validates against fit."""
        profiles = _profile_list(X, self.n_modules)
        if profiles is not None:
            if self.depth == "align":
                return profiles
            if isinstance(self.depth, Integral):
                profiles = [resample_depth(z, self.depth) for z in profiles]
            depths = sorted({z.shape[1] for z in profiles})
            if len(depths) > 1:
                raise ValueError(
                    f"the signatures have different n_layers {depths}; set "
                    "depth=<int> to resample them or depth='align'."
                )
            X = flatten(np.stack(profiles))
        if reset is not None and (reset or self.depth is None):
            try:
                X = validate_data(self, X, reset=reset, ensure_all_finite="allow-nan")
            except ValueError as exc:
                if "is expecting" not in str(exc):
                    raise
                raise ValueError(
                    f"{exc} (n_layers={self.n_features_in_ // self.n_modules} at n_modules="
                    f"{self.n_modules}; set depth=<int> or 'align' for other depths)"
                ) from exc
        else:
            X = check_array(X, ensure_all_finite="allow-nan")
        Z = unflatten(X, self.n_modules)
        if self.depth == "align":
            return list(Z)
        if isinstance(self.depth, Integral) and Z.shape[2] != self.depth:
            X = flatten(np.stack([resample_depth(z, self.depth) for z in Z]))
        return X

    def _similarity(self, X, Y):
        if self.depth == "align":
            return _aligned_similarity(X, Y)
        return spearman_similarity(X, Y, n_modules=self.n_modules)

    def __call__(self, X, Y=None):
        """Similarity matrix between ``X`` and ``Y`` (default ``X``); no fit needed.

        Parameters
        ----------
        X : array-like of shape (n_x, n_features) or list of signatures
        Y : same as X, default=None

        Returns
        -------
        ndarray of shape (n_x, n_y)
        """
        self._validate_params()
        return self._similarity(self._prepare(X), None if Y is None else self._prepare(Y))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Store the reference signatures.

        Parameters
        ----------
        X : array-like of shape (n_fit, n_features) or list of signatures
        y : None
            Ignored.

        Returns
        -------
        self : SpearmanModuleKernel
        """
        self.X_fit_ = self._prepare(X, reset=True)
        return self

    def transform(self, X):
        """Similarities, distances or affinities of ``X`` to the references.

        Parameters
        ----------
        X : array-like of shape (n_x, n_features) or list of signatures

        Returns
        -------
        ndarray of shape (n_x, n_fit)
        """
        check_is_fitted(self, "X_fit_")
        S = self._similarity(self._prepare(X, reset=False), self.X_fit_)
        if self.output == "distance":
            return np.maximum(1.0 - S, 0.0)
        if self.output == "affinity":
            return (1.0 + S) / 2.0
        return S

    @property
    def _n_features_out(self):
        return len(self.X_fit_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
