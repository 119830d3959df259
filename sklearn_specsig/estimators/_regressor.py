"""KNNPerformanceRegressor: benchmark scores of a model from its nearest signatures."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_array, check_consistent_length, check_is_fitted

from ..search import SignatureIndex
from ._base import (
    KERNEL_CONSTRAINT,
    N_MODULES_CONSTRAINT,
    SignatureInputMixin,
    validate_signatures,
    validated_inputs,
)

__all__ = ["KNNPerformanceRegressor"]


def _target_names(y):
    """Column names of a pandas ``y`` (DataFrame columns, or a named Series)."""
    columns = getattr(y, "columns", None)
    if columns is not None and getattr(y, "ndim", 2) == 2:
        names = np.asarray(columns, dtype=object)
    elif getattr(y, "ndim", None) == 1 and getattr(y, "name", None) is not None:
        names = np.asarray([y.name], dtype=object)
    else:
        return None
    if names.size and all(isinstance(n, str) for n in names):
        return names
    return None


class KNNPerformanceRegressor(SignatureInputMixin, RegressorMixin, BaseEstimator):
    """Distance-weighted k-NN regression of benchmark scores (paper Sec. 4.2, 5.3).

    A model's score on each benchmark is predicted from the ``n_neighbors``
    training models whose spectral signatures are most similar to it: with
    ``d = 1 - Sim`` (Sim the Spearman module similarity of paper Eq. 2, or
    another kernel), each neighbour gets weight ``w = 1 / (d + eps)`` and the
    prediction is ``sum(w * y) / sum(w)``.

    This is not scikit-learn's ``KNeighborsRegressor(weights="distance")``,
    whose weight is ``1 / d`` and which gives an exact match (``d = 0``) *all*
    the weight; here ``eps`` keeps every weight finite.

    Several benchmarks (ARC, HellaSwag, MMLU, TruthfulQA, ...) are several
    outputs, and a missing score (NaN in ``y``) is handled *per output*: for
    each benchmark the neighbours are the ``n_neighbors`` most similar
    training models that have a score on it, so a model that lacks one
    benchmark still informs the others.

    Parameters
    ----------
    n_neighbors : int, default=3
        Number of neighbours, ``k`` (the paper uses 3).
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity of two flattened signatures
        (:func:`sklearn_specsig.kernels.pairwise_similarity`); a callable
        ``kernel(X, Y, **kernel_params)`` returns the ``(n_x, n_y)`` matrix
        (larger = closer, at most 1).
    eps : float, default=1e-6
        Added to the distance before inverting, ``w = 1 / (d + eps)``; must
        be positive.  The paper does not state its value.  The default
        only keeps an exact match finite: Spearman distances between
        related models are about 0.01 to 0.15 (synthetic zoo), and exactly 0
        when every depth ordering is unchanged, which a rank correlation
        sometimes gives.  An exact match then gets weight ``1e6`` and in
        effect decides the prediction (a training model is predicted as its
        own score).  A larger ``eps`` (e.g. 0.05) caps the weight of
        near-duplicates at ``1 / eps`` and averages them more evenly with
        the other neighbours.
    n_modules : int, default=7
        Module rows of a flattened signature; the feature count must be a
        multiple of it.  ``n_modules=1`` treats a whole row as one profile.
    kernel_params : dict, default=None
        Extra keyword arguments of the kernel (e.g. ``gamma`` for "rbf").

    Attributes
    ----------
    n_outputs_ : int
        Number of benchmarks (columns of ``y``).
    outputs_2d_ : bool
        Whether ``y`` was 2-D at fit (``predict`` then returns 2-D).
    y_fit_ : ndarray of shape (n_samples_fit_, n_outputs_)
        Training scores, NaN where missing.
    n_scores_ : ndarray of shape (n_outputs_,)
        Training models with a score on each benchmark.
    n_samples_fit_ : int
        Number of training models.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.
    target_names_ : ndarray of str
        Benchmark names, when ``y`` was a pandas DataFrame with string
        column names (or a named Series); ``output=`` arguments accept them.

    See Also
    --------
    sklearn_specsig.metrics.kendall_tau_scorer : Rank correlation of the
        predicted and true scores, for ``cross_validate``.
    sklearn_specsig.search.SignatureIndex : The top-k search used here.

    Notes
    -----
    *Neighbours.*  Found by :class:`~sklearn_specsig.search.SignatureIndex`
    (one per distinct pattern of missing scores), so they equal a brute-force
    ``argsort`` of the similarity matrix, most similar first, ties by
    training index.  A training model with no module row comparable to the
    query (NaN similarity) is ranked last and gets weight 0; a query with
    no comparable neighbour at all is predicted NaN, with a warning.
    Distances below 0 (a callable kernel above 1) count as 0.

    *Missing scores.*  If a benchmark has fewer than ``n_neighbors`` scores
    in the training set, its predictions use all of them (with a warning at
    ``fit``); one with no score at all is an error.  ``score`` (R^2, from
    :class:`~sklearn.base.RegressorMixin`) needs a ``y`` without NaN; the
    scorers of :mod:`sklearn_specsig.metrics` skip missing scores.

    *Uncertainty.*  ``predict(X, return_std=True)`` also returns the
    weighted standard deviation of the neighbours' scores,
    ``sqrt(sum(w * (y - y_hat)**2) / sum(w))``, per benchmark: how much the
    models that the prediction averages disagree.  It is a spread, not a
    calibrated predictive standard deviation (it is 0 when ``k = 1`` or when
    one exact match takes all the weight).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig import KNNPerformanceRegressor
    >>> rng = np.random.default_rng(0)
    >>> bases = rng.normal(size=(2, 7 * 8))               # two families
    >>> Z = np.repeat(bases, 3, axis=0) + 0.1 * rng.normal(size=(6, 56))
    >>> scores = np.array([[60, 40], [62, 41], [61, np.nan],   # ARC, MMLU
    ...                    [30, 70], [31, 72], [29, 71.0]])
    >>> reg = KNNPerformanceRegressor(n_neighbors=2).fit(Z, scores)
    >>> new = bases + 0.1 * rng.normal(size=bases.shape)
    >>> y_hat, spread = reg.predict(new, return_std=True)
    >>> y_hat.round(1)
    array([[61.6, 40.7],
           [30.2, 71.6]])
    >>> spread.round(2)
    array([[0.48, 0.46],
           [0.98, 0.49]])

    Model 2 has no MMLU score, so MMLU (output 1) is predicted from the
    nearest models that have one:

    >>> dist, ind = reg.kneighbors(new[:1])
    >>> ind.tolist(), dist.round(3).tolist()
    ([[1, 2]], [[0.02, 0.037]])
    >>> reg.kneighbors(new[:1], output=1, return_distance=False).tolist()
    [[1, 0]]
    """

    _parameter_constraints = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "kernel": KERNEL_CONSTRAINT,
        "eps": [Interval(Real, 0, None, closed="neither")],
        "n_modules": N_MODULES_CONSTRAINT,
        "kernel_params": [dict, None],
    }

    def __init__(self, n_neighbors=3, *, kernel="spearman", eps=1e-6, n_modules=7,
                 kernel_params=None):
        self.n_neighbors = n_neighbors
        self.kernel = kernel
        self.eps = eps
        self.n_modules = n_modules
        self.kernel_params = kernel_params

    # -- fit -------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Store the training signatures and scores; index them for search.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_modules * n_layers)
            Flattened signatures (NaN allowed: a module row the architecture
            lacks).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Benchmark scores; NaN marks a missing score.  A pandas DataFrame
            keeps its column names in ``target_names_``.

        Returns
        -------
        self : KNNPerformanceRegressor
        """
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        target_names = _target_names(y)
        X = validate_signatures(self, X, reset=True)
        y = check_array(y, ensure_2d=False, ensure_all_finite="allow-nan", dtype=np.float64,
                        input_name="y")
        check_consistent_length(X, y)
        self.outputs_2d_ = y.ndim == 2
        Y = y if self.outputs_2d_ else y[:, None]
        n_samples, n_outputs = Y.shape
        if n_outputs == 0:
            raise ValueError("y has 0 columns: pass at least one benchmark.")
        if self.n_neighbors > n_samples:
            raise ValueError(
                f"n_neighbors={self.n_neighbors} is larger than the number of training "
                f"models (n_samples = {n_samples}); lower n_neighbors."
            )
        if target_names is not None and len(target_names) == n_outputs:
            self.target_names_ = target_names
        elif hasattr(self, "target_names_"):
            del self.target_names_  # from an earlier fit on a pandas y

        available = ~np.isnan(Y)
        self.n_scores_ = available.sum(axis=0)
        if np.any(self.n_scores_ == 0):
            empty = [self._output_name(j) for j in np.flatnonzero(self.n_scores_ == 0)]
            raise ValueError(
                f"y has no score (all NaN) for output(s) {empty}: nothing to predict "
                "them from; drop those columns."
            )
        few = [(self._output_name(j), int(self.n_scores_[j]))
               for j in np.flatnonzero(self.n_scores_ < self.n_neighbors)]
        if few:
            warnings.warn(
                f"n_neighbors={self.n_neighbors} but these outputs have fewer training "
                f"scores (output, count): {few}; their predictions average all of them.",
                UserWarning,
                stacklevel=2,
            )

        self.y_fit_ = Y
        self.n_outputs_ = n_outputs
        self.n_samples_fit_ = n_samples
        index_params = {"kernel": self.kernel, "n_modules": self.n_modules}
        with validated_inputs(self.kernel):
            self._index = SignatureIndex(kernel_params=self.kernel_params,
                                         **index_params).fit(X)
        # One index per distinct set of training models with a score.  The
        # subsets share the full index's resolved kernel parameters (the RBF
        # gamma is fixed from all of X), so every output sees one kernel.
        patterns, self._output_group = np.unique(available.T, axis=0, return_inverse=True)
        self._output_group = self._output_group.ravel()
        self._groups = []
        for pattern in patterns:
            rows = np.flatnonzero(pattern)
            if rows.size == n_samples:
                index = self._index
            else:
                with validated_inputs(self.kernel):
                    index = SignatureIndex(kernel_params=dict(self._index.kernel_params_),
                                           **index_params).fit(X[rows])
            self._groups.append((rows, index, min(self.n_neighbors, rows.size)))
        return self

    def _output_name(self, j):
        names = getattr(self, "target_names_", None)
        return names[j] if names is not None else int(j)

    def _output_position(self, output):
        """Column of ``output``, given as an index or a name in ``target_names_``."""
        if isinstance(output, str):
            names = getattr(self, "target_names_", None)
            if names is None or output not in names.tolist():
                raise ValueError(
                    f"output={output!r} is not a benchmark name; known names: "
                    f"{None if names is None else names.tolist()} (names come from the "
                    "columns of a pandas y at fit)."
                )
            return names.tolist().index(output)
        if (isinstance(output, Integral) and not isinstance(output, bool)
                and -self.n_outputs_ <= output < self.n_outputs_):
            return int(output) % self.n_outputs_
        raise ValueError(
            f"output={output!r} must be an int in [0, {self.n_outputs_}) or a name "
            "in target_names_."
        )

    # -- neighbours ------------------------------------------------------

    def _validate_X(self, X):
        check_is_fitted(self)
        return validate_signatures(self, X, reset=False)

    def _search(self, index, rows, X, k):
        # X was validated at this estimator's boundary.
        with validated_inputs(self.kernel):
            sims, ind = index.kneighbors(X, n_neighbors=k)
        # NaN similarity (nothing comparable) stays a NaN distance.
        return np.maximum(1.0 - sims, 0.0), rows[ind]

    def kneighbors(self, X, n_neighbors=None, return_distance=True, *, output=None):
        """The training models nearest to each query, most similar first.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)
            Query signatures.
        n_neighbors : int, default=None
            Number of neighbours.  None: the number :meth:`predict` uses,
            ``self.n_neighbors`` (or, for an ``output`` with fewer training
            scores, all of them).
        return_distance : bool, default=True
            Also return the distances ``d = 1 - similarity``.
        output : int or str, default=None
            None: search all training models.  An output (index, or name in
            ``target_names_``): search only the models with a score on it,
            i.e. the neighbours :meth:`predict` averages for that output.

        Returns
        -------
        neigh_dist : ndarray of shape (n_queries, n_neighbors)
            Distances ``1 - similarity`` (NaN: nothing comparable, ranked
            last); only if ``return_distance``.
        neigh_ind : ndarray of shape (n_queries, n_neighbors)
            Row indices into the training set.
        """
        X = self._validate_X(X)
        if output is None:
            rows, index, k = np.arange(self.n_samples_fit_), self._index, self.n_neighbors
        else:
            rows, index, k = self._groups[self._output_group[self._output_position(output)]]
        k = k if n_neighbors is None else n_neighbors
        dist, ind = self._search(index, rows, X, k)
        return (dist, ind) if return_distance else ind

    # -- prediction ------------------------------------------------------

    def predict(self, X, return_std=False):
        """Weighted mean of the neighbours' scores, per benchmark.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)
            Query signatures.
        return_std : bool, default=False
            Also return the weighted standard deviation of the neighbours'
            scores (see Notes of the class).

        Returns
        -------
        y_pred : ndarray of shape (n_queries,) or (n_queries, n_outputs_)
            Predicted scores, 1-D when ``y`` was 1-D at fit.
        y_std : ndarray of the same shape
            Spread of the neighbours' scores; only if ``return_std``.
        """
        X = self._validate_X(X)
        mean = np.empty((X.shape[0], self.n_outputs_))
        std = np.empty_like(mean)
        for g, (rows, index, k) in enumerate(self._groups):
            outputs = np.flatnonzero(self._output_group == g)
            dist, ind = self._search(index, rows, X, k)
            w = 1.0 / (dist + self.eps)
            w[np.isnan(w)] = 0.0
            total = w.sum(axis=1)
            scores = self.y_fit_[:, outputs][ind]  # (n_queries, k, n_group_outputs)
            with np.errstate(invalid="ignore", divide="ignore"):
                m = np.einsum("qk,qko->qo", w, scores) / total[:, None]
                v = np.einsum("qk,qko->qo", w, (scores - m[:, None, :]) ** 2) / total[:, None]
            mean[:, outputs] = m
            std[:, outputs] = np.sqrt(np.maximum(v, 0.0))
        lost = ~np.isfinite(mean).all(axis=1)
        if lost.any():
            warnings.warn(
                f"{int(lost.sum())} queries share no comparable module row with any "
                "training model (all similarities NaN); their predictions are NaN.",
                UserWarning,
                stacklevel=2,
            )
        if not self.outputs_2d_:
            mean, std = mean[:, 0], std[:, 0]
        return (mean, std) if return_std else mean

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
