"""The paper's evaluation measures as metrics and scikit-learn scorers.

Performance prediction (paper Sec. 5.3, Table 5) is judged by the mean
absolute error per benchmark and by Kendall's tau between the predicted and
the true ranking of the test models, with "Significance" the number of
repeated random train/test splits (out of 100) in which that tau is
significant at the 5% level.  Each is here a plain function of
``(y_true, y_pred)`` and a scorer for ``cross_validate(scoring=...)`` and
``GridSearchCV``::

    from sklearn.model_selection import ShuffleSplit, cross_validate
    cv = ShuffleSplit(n_splits=100, test_size=0.5, random_state=0)
    res = cross_validate(KNNPerformanceRegressor(), Z, scores, cv=cv,
                         scoring=benchmark_scoring(["ARC", "MMLU"]))
    res["test_ARC_significant"].sum()     # the paper's "Signif." for ARC
    -res["test_ARC_mae"].mean()           # its MAE

Conventions, the same for every metric here:

- **Multi-output.**  ``output=None`` scores every column separately and
  averages them uniformly (``multioutput="raw_values"`` returns the
  per-column values instead); ``output=j`` (an index, or a column name when
  ``y_true`` is a pandas DataFrame, as ``cross_validate`` passes it when
  ``y`` is one) scores benchmark ``j`` alone.  The paper reports each
  benchmark separately: use one scorer per benchmark
  (:func:`benchmark_scoring` builds them all).
- **Missing scores.**  Rows where ``y_true`` is NaN are left out of that
  column's score (a model without a TruthfulQA score is not scored on
  TruthfulQA), matching how :class:`~sklearn_specsig.KNNPerformanceRegressor`
  trains.  NaN in ``y_pred`` is *not* left out: it makes the MAE and tau
  NaN and the significance 0.
- **Sign.**  Scorers follow scikit-learn's "greater is better": the MAE
  scorer returns the *negative* MAE, like ``"neg_mean_absolute_error"``.

Clustering quality (paper Sec. 4.2) is measured in the original signature
space, with the distance ``d = 1 - similarity`` of a signature kernel
(:func:`signature_distances`): :func:`signature_silhouette` and
:func:`signature_davies_bouldin`.  These are public wrappers over the
implementation :class:`~sklearn_specsig.SignatureClusterer` uses, so they
give its ``silhouette_`` and ``davies_bouldin_``.  A pair of signatures with
no comparable module row (NaN similarity) is at distance 1, with a warning.

Every scorer is built by :func:`sklearn.metrics.make_scorer` from a
module-level function, so it pickles (``GridSearchCV(n_jobs=2)``).
"""

import warnings
from numbers import Integral, Real

import numpy as np
from scipy.stats import kendalltau
from sklearn.metrics import make_scorer

from ._clustering import davies_bouldin_precomputed, silhouette_precomputed
from ._clustering import signature_distances as _signature_distances

__all__ = [
    "benchmark_scoring",
    "kendall_significance",
    "kendall_significance_scorer",
    "kendall_tau",
    "kendall_tau_pvalue",
    "kendall_tau_scorer",
    "mae_scorer",
    "nan_mean_absolute_error",
    "signature_davies_bouldin",
    "signature_distances",
    "signature_silhouette",
    "tau_scorer",
]

_ALTERNATIVES = ("two-sided", "greater", "less")


# -- shared plumbing -----------------------------------------------------------


def _columns(y_true, y_pred, output):
    """``y_true`` and ``y_pred`` as lists of 1-D float columns, paired.

    ``output`` selects one column, by position or (when ``y_true`` is a
    DataFrame) by name.
    """
    names = getattr(y_true, "columns", None)
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    if yt.ndim == 1:
        yt = yt[:, None]
    if yp.ndim == 1:
        yp = yp[:, None]
    if yt.ndim != 2 or yp.ndim != 2 or yt.shape != yp.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape (n_samples,) or "
            f"(n_samples, n_outputs); got {np.shape(y_true)} and {np.shape(y_pred)}."
        )
    n_outputs = yt.shape[1]
    if output is None:
        return [(yt[:, j], yp[:, j]) for j in range(n_outputs)]
    if isinstance(output, str):
        if names is None or output not in list(names):
            raise ValueError(
                f"output={output!r} names a column, but y_true "
                + ("is not a pandas DataFrame (pass the column index instead)."
                   if names is None else f"has columns {list(names)}.")
            )
        j = list(names).index(output)
    elif isinstance(output, Integral) and not isinstance(output, bool) and (
            -n_outputs <= output < n_outputs):
        j = int(output)
    else:
        raise ValueError(f"output={output!r} must be None, a column name or an int in "
                         f"[0, {n_outputs}).")
    return [(yt[:, j], yp[:, j])]


def _aggregate(values, multioutput):
    values = np.asarray(values, dtype=np.float64)
    if isinstance(multioutput, str):
        if multioutput == "raw_values":
            return values
        if multioutput == "uniform_average":
            return float(np.mean(values))
        raise ValueError(f"multioutput={multioutput!r} must be 'raw_values', "
                         "'uniform_average' or an array of weights.")
    weights = np.asarray(multioutput, dtype=np.float64)
    if weights.shape != values.shape:
        raise ValueError(f"multioutput weights have shape {weights.shape}, "
                         f"expected {values.shape}.")
    return float(np.average(values, weights=weights))


def _observed(t, p):
    keep = ~np.isnan(t)  # a missing true score is not scored; a NaN prediction is
    return t[keep], p[keep]


def _tau_test(t, p, alternative):
    t, p = _observed(t, p)
    if t.size < 2 or np.isnan(p).any():
        return np.nan, np.nan
    with warnings.catch_warnings():
        # A constant column: tau is undefined and scipy says so; NaN answers.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = kendalltau(t, p, alternative=alternative)
    return float(res.statistic), float(res.pvalue)


def _check_alternative(alternative):
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative={alternative!r} must be one of {_ALTERNATIVES}.")


# -- performance prediction: plain metrics -------------------------------------


def kendall_tau(y_true, y_pred, *, output=None, multioutput="uniform_average"):
    """Kendall's tau-b between the true and the predicted ranking of models.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        True benchmark scores; NaN rows of a column are left out of it.
    y_pred : array-like of the same shape
        Predicted scores.
    output : int, str or None, default=None
        Score one column only (index, or name of a DataFrame ``y_true``).
    multioutput : {"uniform_average", "raw_values"} or array-like, default="uniform_average"
        How the per-column taus are combined when ``output`` is None.

    Returns
    -------
    tau : float or ndarray of shape (n_outputs,)
        In [-1, 1]; NaN for a column with fewer than 2 scored rows, a
        constant column, or a NaN prediction.

    Examples
    --------
    >>> from sklearn_specsig.metrics import kendall_tau
    >>> round(kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]), 4)
    0.6667
    """
    taus = [_tau_test(t, p, "two-sided")[0] for t, p in _columns(y_true, y_pred, output)]
    return _aggregate(taus, multioutput if output is None else "uniform_average")


def kendall_tau_pvalue(y_true, y_pred, *, output=None, alternative="two-sided",
                       multioutput="raw_values"):
    """p-value of Kendall's tau (:func:`scipy.stats.kendalltau`), per column.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,) or (n_samples, n_outputs)
        As in :func:`kendall_tau`.
    output : int, str or None, default=None
        One column only.
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
        The test's alternative hypothesis (scipy's; exact p-values for small
        samples without ties).
    multioutput : {"raw_values", "uniform_average"} or array-like, default="raw_values"
        p-values are not averaged by default.

    Returns
    -------
    pvalue : ndarray of shape (n_outputs,), or float
        A float for a 1-D ``y_true`` or one ``output``; NaN where tau is NaN.
    """
    _check_alternative(alternative)
    ps = [_tau_test(t, p, alternative)[1] for t, p in _columns(y_true, y_pred, output)]
    if output is not None or np.ndim(y_true) == 1:
        return ps[0]
    return _aggregate(ps, multioutput)


def kendall_significance(y_true, y_pred, *, alpha=0.05, alternative="two-sided", output=None,
                         multioutput="uniform_average"):
    """1.0 if the predicted ranking agrees significantly with the true one, else 0.0.

    A column counts as significant when the p-value of Kendall's tau is
    below ``alpha`` *and* tau is positive: the paper's "Significance"
    (Sec. 5.3) counts splits whose predicted ranking agrees with the truth,
    and with the two-sided test (scipy's default, which the paper's wording
    suggests) a significantly *reversed* ranking would otherwise count too.
    Two-sided at ``alpha`` with tau > 0 equals the one-sided test
    (``alternative="greater"``) at ``alpha / 2``.

    Averaged over the splits of ``cross_validate`` and multiplied by the
    number of splits, this is the paper's count "significant in N of 100".

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,) or (n_samples, n_outputs)
        As in :func:`kendall_tau`.
    alpha : float, default=0.05
        Significance level, in (0, 1).
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
        Alternative of :func:`scipy.stats.kendalltau`.
    output : int, str or None, default=None
        One column only.
    multioutput : {"uniform_average", "raw_values"} or array-like, default="uniform_average"
        With ``output`` None: the fraction of columns significant
        (uniform average), or the per-column 0/1 values.

    Returns
    -------
    significant : float or ndarray of shape (n_outputs,)
        1.0 or 0.0 per column (0.0 where tau is NaN).

    Examples
    --------
    >>> from sklearn_specsig.metrics import kendall_significance
    >>> y = list(range(10))
    >>> kendall_significance(y, y), kendall_significance(y, y[::-1])
    (1.0, 0.0)
    """
    if not isinstance(alpha, Real) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must be a float in (0, 1).")
    _check_alternative(alternative)
    flags = []
    for t, p in _columns(y_true, y_pred, output):
        tau, pvalue = _tau_test(t, p, alternative)
        flags.append(1.0 if (pvalue < alpha and tau > 0) else 0.0)  # NaN compares False
    return _aggregate(flags, multioutput if output is None else "uniform_average")


def nan_mean_absolute_error(y_true, y_pred, *, output=None, multioutput="uniform_average"):
    """Mean absolute error per column over the rows with a true score.

    Equal to :func:`sklearn.metrics.mean_absolute_error` when ``y_true`` has
    no NaN.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,) or (n_samples, n_outputs)
        As in :func:`kendall_tau`.
    output : int, str or None, default=None
        One column only.
    multioutput : {"uniform_average", "raw_values"} or array-like, default="uniform_average"
        How the per-column errors are combined when ``output`` is None.

    Returns
    -------
    mae : float or ndarray of shape (n_outputs,)
        NaN for a column without a true score or with a NaN prediction.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.metrics import nan_mean_absolute_error
    >>> y_true = np.array([[50.0, 30.0], [60.0, np.nan]])
    >>> nan_mean_absolute_error(y_true, [[52, 31], [57, 99]], multioutput="raw_values")
    array([2.5, 1. ])
    """
    maes = []
    for t, p in _columns(y_true, y_pred, output):
        t, p = _observed(t, p)
        maes.append(float(np.mean(np.abs(t - p))) if t.size else np.nan)
    return _aggregate(maes, multioutput if output is None else "uniform_average")


# -- performance prediction: scorers -------------------------------------------


kendall_tau_scorer = make_scorer(kendall_tau)
"""Scorer: Kendall's tau averaged over the outputs (use :func:`tau_scorer`
for one benchmark)."""


def tau_scorer(output=None):
    """Scorer of Kendall's tau, for one output or averaged over all.

    Parameters
    ----------
    output : int, str or None, default=None
        Benchmark to score (index, or column name of a DataFrame ``y``);
        None averages the per-benchmark taus (as :data:`kendall_tau_scorer`).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)``, greater is better.
    """
    return make_scorer(kendall_tau, output=output)


def kendall_significance_scorer(alpha=0.05, *, output=None, alternative="two-sided"):
    """Scorer: 1.0 if the split's Kendall tau is significant (and positive), else 0.0.

    The mean over ``n_splits`` random splits times ``n_splits`` is the
    paper's "Significance" count (Table 5).  See :func:`kendall_significance`.

    Parameters
    ----------
    alpha : float, default=0.05
        Significance level.
    output : int, str or None, default=None
        One benchmark, or None for the fraction of benchmarks significant.
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
        Alternative of the test.

    Returns
    -------
    scorer : callable

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.linear_model import LinearRegression
    >>> from sklearn.model_selection import ShuffleSplit, cross_validate
    >>> from sklearn_specsig.metrics import kendall_significance_scorer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3))
    >>> y = X @ [1.0, 2.0, 0.0] + 0.5 * rng.normal(size=60)
    >>> cv = ShuffleSplit(n_splits=20, test_size=0.5, random_state=0)
    >>> scoring = {"sig": kendall_significance_scorer(0.05)}
    >>> int(cross_validate(LinearRegression(), X, y, cv=cv, scoring=scoring)["test_sig"].sum())
    20
    >>> int(cross_validate(DummyRegressor(), X, y, cv=cv, scoring=scoring)["test_sig"].sum())
    0
    """
    if not isinstance(alpha, Real) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must be a float in (0, 1).")
    _check_alternative(alternative)
    return make_scorer(kendall_significance, alpha=alpha, alternative=alternative,
                       output=output)


def mae_scorer(output=None):
    """Scorer of the negative mean absolute error, missing true scores skipped.

    Parameters
    ----------
    output : int, str or None, default=None
        One benchmark, or None for the mean over benchmarks.

    Returns
    -------
    scorer : callable
        Returns ``-MAE`` (scikit-learn's greater-is-better convention, as
        ``"neg_mean_absolute_error"``).
    """
    return make_scorer(nan_mean_absolute_error, greater_is_better=False, output=output)


def benchmark_scoring(outputs, *, alpha=0.05, alternative="two-sided"):
    """All the paper's per-benchmark scorers, as a ``scoring=`` dict.

    Parameters
    ----------
    outputs : int or sequence of str or int
        The benchmarks: their number (columns ``0 .. outputs-1``, keys
        ``"0"``, ``"1"``, ...) or their names (columns of a DataFrame ``y``)
        or indices.
    alpha : float, default=0.05
        Level of the significance scorers.
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
        Alternative of the significance test.

    Returns
    -------
    scoring : dict
        For each benchmark ``b``: ``"{b}_mae"`` (negative MAE), ``"{b}_tau"``
        and ``"{b}_significant"`` (0/1), for
        ``cross_validate(..., scoring=scoring)``; results come back as
        ``"test_{b}_mae"`` etc.
    """
    if isinstance(outputs, Integral) and not isinstance(outputs, bool):
        outputs = list(range(int(outputs)))
    scoring = {}
    for b in outputs:
        scoring[f"{b}_mae"] = mae_scorer(output=b)
        scoring[f"{b}_tau"] = tau_scorer(output=b)
        scoring[f"{b}_significant"] = kendall_significance_scorer(
            alpha, output=b, alternative=alternative)
    return scoring


# -- clustering quality in signature space -------------------------------------


def signature_distances(Z, *, kernel="spearman", n_modules=7, **kernel_params):
    """Distance matrix ``1 - similarity`` between signatures, clipped at 0.

    The distance :class:`~sklearn_specsig.SignatureClusterer` clusters with
    (the same implementation).

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_modules * n_layers)
        Flattened signatures.
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity (:func:`sklearn_specsig.kernels.pairwise_similarity`).
    n_modules : int, default=7
        Module rows of a signature.
    **kernel_params
        Extra keyword arguments of the kernel.

    Returns
    -------
    D : ndarray of shape (n_samples, n_samples)
        Symmetric, zero diagonal, in [0, 2] for the named kernels.

    Warns
    -----
    UserWarning
        If a pair has no comparable module row (NaN similarity: e.g. rows
        missing in one model where the other has them, or constant).  Such a
        pair is given similarity 0, i.e. distance 1 ("no evidence either
        way"), so the silhouette and clustering stay defined.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.metrics import signature_distances
    >>> Z = np.array([[1.0, 2.0, 3.0, 4.0],
    ...               [1.0, 2.0, 4.0, 3.0]])
    >>> signature_distances(Z, n_modules=1)
    array([[0. , 0.2],
           [0.2, 0. ]])
    """
    return _signature_distances(Z, metric=kernel, n_modules=n_modules,
                                kernel_params=kernel_params)


def _distance_matrix(Z, kernel, n_modules, kernel_params):
    if isinstance(kernel, str) and kernel == "precomputed":
        D = np.asarray(Z, dtype=np.float64)
        if D.ndim != 2 or D.shape[0] != D.shape[1]:
            raise ValueError(f"kernel='precomputed' needs a square distance matrix, "
                             f"got shape {D.shape}.")
        return D
    return signature_distances(Z, kernel=kernel, n_modules=n_modules, **kernel_params)


def signature_silhouette(Z, labels, *, n_modules=7, kernel="spearman", noise_label=None,
                         **kernel_params):
    """Silhouette score of a clustering, in signature space (paper Sec. 4.2).

    :func:`sklearn.metrics.silhouette_score` on the precomputed distances
    ``1 - similarity`` of :func:`signature_distances`, never on an embedding
    (UMAP) used to find the clusters; the score
    :class:`~sklearn_specsig.SignatureClusterer` reports as ``silhouette_``.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_modules * n_layers)
        Flattened signatures, or with ``kernel="precomputed"`` a square
        distance matrix.
    labels : array-like of shape (n_samples,)
        Cluster of each signature.
    n_modules : int, default=7
        Module rows of a signature.
    kernel : {"spearman", "rbf", "cosine", "precomputed"} or callable, default="spearman"
        Similarity whose ``1 - S`` is the distance; incomparable pairs are
        at distance 1, with a warning (see :func:`signature_distances`).
    noise_label : scalar, default=None
        Points with this label (e.g. HDBSCAN's ``-1``) are left out.
    **kernel_params
        Extra keyword arguments of the kernel.

    Returns
    -------
    score : float
        In [-1, 1], higher is better.

    Raises
    ------
    ValueError
        Unless there are 2 to n - 1 clusters among the n points scored.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.metrics import signature_silhouette
    >>> rng = np.random.default_rng(0)
    >>> bases = rng.normal(size=(3, 7 * 8))
    >>> Z = np.repeat(bases, 4, axis=0) + 0.05 * rng.normal(size=(12, 56))
    >>> labels = np.repeat([0, 1, 2], 4)
    >>> bool(signature_silhouette(Z, labels) > 0.8)
    True
    """
    D = _distance_matrix(Z, kernel, n_modules, kernel_params)
    return silhouette_precomputed(D, labels, noise_label=noise_label, strict=True)


def signature_davies_bouldin(Z, labels, *, n_modules=7, kernel="spearman", noise_label=None,
                             **kernel_params):
    """Davies-Bouldin index of a clustering, in signature space.

    scikit-learn's :func:`~sklearn.metrics.davies_bouldin_score` needs
    centroids, hence coordinates.  Here the point-to-centroid and
    centroid-to-centroid distances are obtained from the pairwise distances
    ``d = 1 - similarity`` alone (law of cosines), so for distances between
    Euclidean points this *is* ``davies_bouldin_score`` of the points, and
    for ``1 - S`` it is that index on the exact (pseudo-Euclidean)
    classical-MDS embedding of the distances.  It is the value
    :class:`~sklearn_specsig.SignatureClusterer` reports as
    ``davies_bouldin_``.  Lower is better; 0 is the ideal.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_modules * n_layers)
        Flattened signatures, or with ``kernel="precomputed"`` a square
        distance matrix.
    labels : array-like of shape (n_samples,)
        Cluster of each signature.
    n_modules : int, default=7
        Module rows of a signature.
    kernel : {"spearman", "rbf", "cosine", "precomputed"} or callable, default="spearman"
        Similarity whose ``1 - S`` is the distance; incomparable pairs are
        at distance 1, with a warning (see :func:`signature_distances`).
    noise_label : scalar, default=None
        Points with this label (e.g. HDBSCAN's ``-1``) are left out.
    **kernel_params
        Extra keyword arguments of the kernel.

    Returns
    -------
    score : float

    Raises
    ------
    ValueError
        Unless there are 2 to n - 1 clusters among the n points scored.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics import davies_bouldin_score, pairwise_distances
    >>> from sklearn_specsig.metrics import signature_davies_bouldin
    >>> P = np.array([[0.0], [1.0], [5.0], [7.0]])
    >>> labels = [0, 0, 1, 1]
    >>> db = signature_davies_bouldin(pairwise_distances(P), labels, kernel="precomputed")
    >>> round(db, 4), round(float(davies_bouldin_score(P, labels)), 4)
    (0.2727, 0.2727)
    """
    D = _distance_matrix(Z, kernel, n_modules, kernel_params)
    return davies_bouldin_precomputed(D, labels, noise_label=noise_label, strict=True)
