"""Kendall's tau, its significance and a NaN-aware MAE, as metrics and scorers.

The performance-prediction half of :mod:`sklearn_specsig.metrics` (paper
Sec. 5.3, Table 5); its conventions (multi-output, missing true scores,
sign of the scorers) are stated in that package's docstring.
"""

import warnings
from numbers import Integral, Real

import numpy as np
from scipy.stats import kendalltau
from sklearn.metrics import make_scorer

__all__ = [
    "benchmark_scoring",
    "kendall_significance",
    "kendall_significance_scorer",
    "kendall_tau",
    "kendall_tau_pvalue",
    "kendall_tau_scorer",
    "mae_scorer",
    "nan_mean_absolute_error",
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

    Examples
    --------
    >>> from sklearn_specsig.metrics import kendall_tau_pvalue
    >>> y = [1, 2, 3, 4, 5, 6]
    >>> round(kendall_tau_pvalue(y, y), 4)
    0.0028
    >>> round(kendall_tau_pvalue(y, y, alternative="greater"), 4)  # one-sided: half
    0.0014
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

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> from sklearn_specsig.metrics import tau_scorer
    >>> X = np.arange(10.0)[:, None]
    >>> Y = np.c_[X[:, 0], -X[:, 0]]
    >>> reg = LinearRegression().fit(X, Y)
    >>> round(tau_scorer(output=1)(reg, X, Y), 4)
    1.0
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

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn_specsig.metrics import mae_scorer
    >>> X, y = np.zeros((4, 1)), np.array([1.0, 2.0, 3.0, np.nan])
    >>> reg = DummyRegressor(strategy="constant", constant=2.0).fit(X, np.zeros(4))
    >>> round(mae_scorer()(reg, X, y), 4)  # the missing score is skipped
    -0.6667
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

    Examples
    --------
    >>> from sklearn_specsig.metrics import benchmark_scoring
    >>> sorted(benchmark_scoring(["ARC", "MMLU"]))
    ['ARC_mae', 'ARC_significant', 'ARC_tau', 'MMLU_mae', 'MMLU_significant', 'MMLU_tau']
    >>> sorted(benchmark_scoring(1))
    ['0_mae', '0_significant', '0_tau']
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
