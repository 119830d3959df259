"""Metrics and scorers of the paper's evaluation (Sec. 4.2, 5.3)."""

import pickle

import numpy as np
import pytest
from scipy.stats import kendalltau
from sklearn.dummy import DummyRegressor
from sklearn.metrics import (
    davies_bouldin_score,
    mean_absolute_error,
    pairwise_distances,
    silhouette_score,
)
from sklearn.model_selection import GridSearchCV, KFold, ShuffleSplit, cross_validate

from sklearn_specsig import KNNPerformanceRegressor
from sklearn_specsig.kernels import spearman_similarity
from sklearn_specsig.metrics import (
    benchmark_scoring,
    kendall_significance,
    kendall_significance_scorer,
    kendall_tau,
    kendall_tau_pvalue,
    kendall_tau_scorer,
    mae_scorer,
    nan_mean_absolute_error,
    signature_davies_bouldin,
    signature_distances,
    signature_silhouette,
    tau_scorer,
)


@pytest.fixture(scope="module")
def data():
    """Three families of signatures (7 x 6) with two benchmark columns."""
    rng = np.random.default_rng(0)
    bases = rng.normal(3.5, 1.0, size=(3, 7 * 6))
    labels = np.repeat([0, 1, 2], 12)
    Z = bases[labels] + 0.1 * rng.normal(size=(36, 42))
    Y = np.array([[30.0, 60.0], [50.0, 40.0], [70.0, 50.0]])[labels]
    Y = Y + 2.0 * rng.normal(size=Y.shape)
    return Z, Y, labels


# -- Kendall tau and its significance ---------------------------------------------


def test_kendall_tau_matches_scipy_per_output_and_averaged():
    rng = np.random.default_rng(1)
    t, p = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    p[:, 0] += 2 * t[:, 0]
    ref = [kendalltau(t[:, j], p[:, j]) for j in range(3)]
    np.testing.assert_allclose(kendall_tau(t, p, multioutput="raw_values"),
                               [r.statistic for r in ref])
    assert kendall_tau(t, p) == pytest.approx(np.mean([r.statistic for r in ref]))
    assert kendall_tau(t, p, output=2) == pytest.approx(ref[2].statistic)
    assert kendall_tau(t, p, output=-3) == pytest.approx(ref[0].statistic)
    np.testing.assert_allclose(kendall_tau_pvalue(t, p), [r.pvalue for r in ref])
    assert kendall_tau(t[:, 0], p[:, 0]) == pytest.approx(ref[0].statistic)  # 1-D
    with pytest.raises(ValueError, match="same shape"):
        kendall_tau(t, p[:, :2])
    with pytest.raises(ValueError, match="output"):
        kendall_tau(t, p, output=3)


def test_significance_is_p_below_alpha_and_positive_tau():
    rng = np.random.default_rng(2)
    t = rng.normal(size=15)
    good, reverse = t + 0.3 * rng.normal(size=15), -t
    assert kendall_significance(t, good) == 1.0
    assert kendall_tau_pvalue(t, reverse) < 0.05
    assert kendall_significance(t, reverse) == 0.0  # significant, but reversed
    assert kendall_significance(t, reverse, alternative="less") == 0.0
    # The level: p of a weak correlation sits between the two alphas.
    weak = t + 2.0 * rng.normal(size=15)
    p = kendall_tau_pvalue(t, weak)
    assert kendall_significance(t, weak, alpha=min(0.99, p * 1.01)) == 1.0
    assert kendall_significance(t, weak, alpha=p * 0.99) == 0.0
    # One-sided "greater" halves the two-sided p for a positive tau.
    assert kendall_tau_pvalue(t, weak, alternative="greater") == pytest.approx(p / 2)
    # Multi-output: the fraction of significant columns, or the 0/1 values.
    T, P = np.c_[t, t], np.c_[good, reverse]
    assert kendall_significance(T, P) == 0.5
    np.testing.assert_array_equal(kendall_significance(T, P, multioutput="raw_values"), [1, 0])
    with pytest.raises(ValueError, match="alpha"):
        kendall_significance(t, good, alpha=1.5)


def test_missing_true_scores_are_skipped_and_nan_predictions_are_not():
    rng = np.random.default_rng(3)
    t, p = rng.normal(size=(12, 2)), rng.normal(size=(12, 2))
    t[[1, 4], 1] = np.nan
    keep = ~np.isnan(t[:, 1])
    assert kendall_tau(t, p, output=1) == pytest.approx(kendalltau(t[keep, 1], p[keep, 1])[0])
    assert nan_mean_absolute_error(t, p, output=1) == pytest.approx(
        mean_absolute_error(t[keep, 1], p[keep, 1]))
    p[0, 0] = np.nan
    assert np.isnan(kendall_tau(t, p, output=0))
    assert np.isnan(nan_mean_absolute_error(t, p, output=0))
    assert kendall_significance(t, p, output=0) == 0.0
    # A constant prediction: tau undefined, never significant, no warning.
    assert np.isnan(kendall_tau(t[:, 0], np.ones(12)))
    assert kendall_significance(t[:, 0], np.ones(12)) == 0.0


def test_mae_equals_sklearn_without_nan():
    rng = np.random.default_rng(4)
    t, p = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    assert nan_mean_absolute_error(t, p) == pytest.approx(mean_absolute_error(t, p))
    np.testing.assert_allclose(nan_mean_absolute_error(t, p, multioutput="raw_values"),
                               mean_absolute_error(t, p, multioutput="raw_values"))
    w = [1, 2, 3]
    assert nan_mean_absolute_error(t, p, multioutput=w) == pytest.approx(
        mean_absolute_error(t, p, multioutput=w))


# -- scorers ------------------------------------------------------------------------


def test_scorers_in_cross_validate(data):
    Z, Y, _ = data
    cv = ShuffleSplit(n_splits=10, test_size=0.5, random_state=0)
    scoring = {"tau": kendall_tau_scorer, "sig": kendall_significance_scorer(0.05),
               "mae": mae_scorer(), "mae1": mae_scorer(output=1), "tau0": tau_scorer(0)}
    res = cross_validate(KNNPerformanceRegressor(3), Z, Y, cv=cv, scoring=scoring,
                         return_estimator=True)
    for i, (est, (_, test)) in enumerate(zip(res["estimator"], cv.split(Z))):
        pred = est.predict(Z[test])
        assert res["test_tau"][i] == pytest.approx(kendall_tau(Y[test], pred))
        assert res["test_tau0"][i] == pytest.approx(kendall_tau(Y[test], pred, output=0))
        assert res["test_mae"][i] == pytest.approx(-mean_absolute_error(Y[test], pred))
        assert res["test_mae1"][i] == pytest.approx(
            -mean_absolute_error(Y[test, 1], pred[:, 1]))
    assert res["test_sig"].mean() == 1.0  # both benchmarks significant in every split
    dummy = cross_validate(DummyRegressor(), Z, Y, cv=cv, scoring=scoring)
    assert dummy["test_sig"].sum() == 0 and (dummy["test_mae"] < res["test_mae"]).all()


def test_benchmark_scoring_with_named_columns(data):
    pd = pytest.importorskip("pandas")
    Z, Y, _ = data
    y = pd.DataFrame(Y, columns=["ARC", "MMLU"])
    y.iloc[[0, 13], 1] = np.nan  # missing MMLU scores: skipped, not fatal
    cv = KFold(3, shuffle=True, random_state=0)
    scoring = benchmark_scoring(["ARC", "MMLU"])
    assert sorted(scoring) == ["ARC_mae", "ARC_significant", "ARC_tau",
                               "MMLU_mae", "MMLU_significant", "MMLU_tau"]
    res = cross_validate(KNNPerformanceRegressor(), Z, y, cv=cv, scoring=scoring)
    assert np.isfinite(res["test_MMLU_mae"]).all()
    assert res["test_ARC_significant"].sum() == 3
    by_index = cross_validate(KNNPerformanceRegressor(), Z, y.to_numpy(), cv=cv,
                              scoring=benchmark_scoring(2))
    np.testing.assert_allclose(res["test_MMLU_tau"], by_index["test_1_tau"])
    with pytest.raises(ValueError, match="names a column"):
        kendall_tau(Y, Y, output="ARC")  # a name needs a DataFrame y_true


def test_scorers_in_grid_search_with_two_jobs(data):
    Z, Y, _ = data
    grid = GridSearchCV(
        KNNPerformanceRegressor(),
        {"n_neighbors": [1, 3], "eps": [1e-6, 0.1]},
        scoring={"tau": kendall_tau_scorer, "mae": mae_scorer(output=0),
                 "sig": kendall_significance_scorer(0.05, output=1)},
        refit="tau",
        cv=ShuffleSplit(n_splits=4, test_size=0.5, random_state=0),
        n_jobs=2,
    ).fit(Z, Y)
    assert set(grid.best_params_) == {"n_neighbors", "eps"}
    assert np.isfinite(grid.cv_results_["mean_test_tau"]).all()
    assert (grid.cv_results_["mean_test_mae"] < 0).all()
    assert grid.predict(Z[:2]).shape == (2, 2)


def test_scorers_pickle(data):
    Z, Y, _ = data
    reg = KNNPerformanceRegressor().fit(Z[::2], Y[::2])
    scorers = [kendall_tau_scorer, kendall_significance_scorer(0.01, output=1),
               mae_scorer(), mae_scorer(output=0), tau_scorer(1),
               *benchmark_scoring(2).values()]
    for scorer in scorers:
        copy = pickle.loads(pickle.dumps(scorer))
        assert copy(reg, Z[1::2], Y[1::2]) == scorer(reg, Z[1::2], Y[1::2])


# -- clustering quality in signature space ---------------------------------------


def test_signature_silhouette_is_sklearn_on_one_minus_similarity(data):
    Z, _, labels = data
    D = 1 - spearman_similarity(Z)
    np.fill_diagonal(D, 0)
    expected = silhouette_score(np.maximum(D, 0), labels, metric="precomputed")
    assert signature_silhouette(Z, labels) == pytest.approx(expected)
    assert signature_silhouette(Z, labels) > 0.8
    shuffled = np.random.default_rng(0).permutation(labels)
    assert signature_silhouette(Z, shuffled) < 0.1
    np.testing.assert_allclose(signature_distances(Z), np.maximum(D, 0), atol=1e-12)
    assert signature_silhouette(signature_distances(Z), labels, kernel="precomputed") == \
        pytest.approx(expected)
    # Noise points (HDBSCAN's -1) are left out.
    noisy = labels.copy()
    noisy[:3] = -1
    keep = noisy != -1
    assert signature_silhouette(Z, noisy, noise_label=-1) == pytest.approx(
        signature_silhouette(Z[keep], labels[keep]))
    assert signature_silhouette(Z, labels, kernel="rbf") > 0.5


def test_signature_davies_bouldin_is_sklearn_on_euclidean_points(data):
    Z, _, labels = data
    # Independent reference: sklearn's centroid-based index on the points
    # whose pairwise distances are passed as the precomputed matrix.
    rng = np.random.default_rng(5)
    P = rng.normal(size=(30, 4))
    P_labels = rng.integers(0, 3, size=30)
    D = pairwise_distances(P)
    assert signature_davies_bouldin(D, P_labels, kernel="precomputed") == \
        pytest.approx(davies_bouldin_score(P, P_labels), rel=1e-10)
    # By hand: centroids 0.5 and 6, spreads 0.5 and 1: (0.5 + 1) / 5.5.
    line = np.array([[0.0], [1.0], [5.0], [7.0]])
    assert signature_davies_bouldin(pairwise_distances(line), [0, 0, 1, 1],
                                    kernel="precomputed") == pytest.approx(1.5 / 5.5)
    # Noise points are left out.
    noisy = P_labels.copy()
    noisy[:4] = -1
    keep = noisy != -1
    assert signature_davies_bouldin(D, noisy, kernel="precomputed", noise_label=-1) == \
        pytest.approx(davies_bouldin_score(P[keep], noisy[keep]), rel=1e-10)
    # On signatures: the families score well, a shuffled labelling badly.
    good = signature_davies_bouldin(Z, labels)
    bad = signature_davies_bouldin(Z, np.random.default_rng(0).permutation(labels))
    assert good < 0.3 < bad
    assert signature_davies_bouldin(signature_distances(Z), labels, kernel="precomputed") == \
        pytest.approx(good)
    with pytest.raises(ValueError, match="at least 2 clusters"):
        signature_davies_bouldin(Z, np.zeros(len(Z)))
    with pytest.raises(ValueError, match="square distance matrix"):
        signature_davies_bouldin(Z, labels, kernel="precomputed")
    with pytest.raises(ValueError, match="labels has shape"):
        signature_davies_bouldin(Z, labels[:-1])


def test_signature_distances_put_incomparable_pairs_at_distance_one():
    # Signatures 0 and 1 share module row 0 (same ranking); 2 has only row 1.
    Z = np.array([[1.0, 2.0, 3.0, np.nan, np.nan, np.nan],
                  [1.0, 2.0, 4.0, np.nan, np.nan, np.nan],
                  [np.nan, np.nan, np.nan, 3.0, 1.0, 2.0]])
    expected = np.array([[0.0, 0.0, 1.0],
                         [0.0, 0.0, 1.0],
                         [1.0, 1.0, 0.0]])
    with pytest.warns(UserWarning, match="no comparable module row.*similarity 0"):
        D = signature_distances(Z, n_modules=2)
    np.testing.assert_allclose(D, expected, atol=1e-12)
    labels = [0, 0, 1]
    with pytest.warns(UserWarning, match="no comparable module row"):
        score = signature_silhouette(Z, labels, n_modules=2)
    # Points 0, 1: a = 0, b = 1, s = 1; the singleton scores 0.
    assert score == pytest.approx(2 / 3)
    assert score == pytest.approx(silhouette_score(expected, labels, metric="precomputed"))
