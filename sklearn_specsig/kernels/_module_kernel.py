"""SpearmanModuleKernel: the Spearman module similarity as an estimator.

The top room of :mod:`sklearn_specsig.kernels`: a thin scikit-learn
transformer (and callable kernel) over :func:`._pairwise.spearman_similarity`
and, for models of different depths, :func:`._alignment.aligned_similarity`.
What it adds is the input side: lists of
:class:`~sklearn_specsig.Signature` objects or profiles (through
:func:`sklearn_specsig.signature.as_profiles`, the package's one coercion),
the ``depth`` option, and scikit-learn's fit/transform bookkeeping.
"""

from numbers import Integral

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ..signature import as_profiles, check_n_modules, flatten
from ._alignment import aligned_similarity
from ._pairwise import spearman_similarity

__all__ = ["SpearmanModuleKernel"]

# What the error about different depths tells the user to do here.
_DEPTH_HINT = "set depth=<int> to resample them or depth='align'"


def _is_profile_sequence(X):
    """A list or tuple of Signatures or (n_modules, L) arrays (else 2-D rows).

    Profiles go to ``as_profiles`` first (their depths may differ); rows
    go to scikit-learn's validation first (its dtype, shape and
    feature-count errors), as a 2-D array of floats is what it checks.
    """
    return (
        isinstance(X, (list, tuple))
        and len(X) > 0
        and all(np.ndim(getattr(z, "values", z)) == 2 for z in X)
    )


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
        """``X`` as the kernel compares it; ``reset`` validates against fit.

        Profiles become flattened rows at one depth (resampled for an int
        ``depth``) unless ``depth="align"``; rows then go through
        scikit-learn's validation, and are resampled or split into profiles
        when ``depth`` asks for it.
        """
        align = self.depth == "align"
        n_layers = None if self.depth is None or align else self.depth
        if _is_profile_sequence(X):
            profiles = as_profiles(X, self.n_modules, n_layers=n_layers,
                                   common_depth=not align, hint=_DEPTH_HINT)
            if align:
                return profiles
            X, n_layers = flatten(profiles), None  # at one depth now
        X = self._validate_rows(X, reset)
        check_n_modules(X.shape[1], self.n_modules)
        if n_layers is None and not align:
            return X
        profiles = as_profiles(X, self.n_modules, n_layers=n_layers, common_depth=not align)
        return profiles if align else flatten(profiles)

    def _validate_rows(self, X, reset):
        """A 2-D array of flattened rows; against ``fit``'s width when fixed."""
        # The width is fixed only at depth=None: other depths are resampled
        # or aligned, so a transform may get rows of another depth.
        if reset is None or not (reset or self.depth is None):
            return check_array(X, ensure_all_finite="allow-nan")
        try:
            return validate_data(self, X, reset=reset, ensure_all_finite="allow-nan")
        except ValueError as exc:
            if "is expecting" not in str(exc):
                raise
            raise ValueError(
                f"{exc} (n_layers={self.n_features_in_ // self.n_modules} at n_modules="
                f"{self.n_modules}; set depth=<int> or 'align' for other depths)"
            ) from exc

    def _similarity(self, X, Y):
        if self.depth == "align":
            return aligned_similarity(X, Y)
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
