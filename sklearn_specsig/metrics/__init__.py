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
:func:`signature_davies_bouldin`.  They are the implementation
:class:`~sklearn_specsig.SignatureClusterer` uses, so they give its
``silhouette_`` and ``davies_bouldin_``.  A pair of signatures with
no comparable module row (NaN similarity) is at similarity 0, distance 1,
with a warning (:func:`signature_similarity`, the kernel matrix without NaN,
follows the same rule).

Every scorer is built by :func:`sklearn.metrics.make_scorer` from a
module-level function, so it pickles (``GridSearchCV(n_jobs=2)``).
"""


# The two halves share nothing but this docstring: performance prediction
# (_scorers) and clustering quality in signature space (_cluster_indices,
# also the implementation SignatureClusterer uses).
from ._cluster_indices import (
    signature_davies_bouldin,
    signature_distances,
    signature_silhouette,
    signature_similarity,
)
from ._scorers import (
    benchmark_scoring,
    kendall_significance,
    kendall_significance_scorer,
    kendall_tau,
    kendall_tau_pvalue,
    kendall_tau_scorer,
    mae_scorer,
    nan_mean_absolute_error,
    tau_scorer,
)

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
    "signature_similarity",
    "signature_silhouette",
    "tau_scorer",
]
