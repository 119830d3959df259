"""KNNPerformanceRegressor: paper Sec. 4.2 / 5.3 benchmark-score prediction.

The weights are checked by hand, the neighbours against a brute-force
argsort of the similarity matrix, missing scores per output, and the whole
claim (beats a per-benchmark mean predictor; Kendall tau significant in
nearly all of 100 random half splits) on a synthetic zoo whose benchmark
table is built as documented in :func:`_benchmark_table`.
"""

import pickle
import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.dummy import DummyRegressor
from sklearn.model_selection import ShuffleSplit, cross_validate
from sklearn.neighbors import KNeighborsRegressor
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_specsig import KNNPerformanceRegressor, SpectralSignatureTransformer
from sklearn_specsig.datasets import make_model_zoo
from sklearn_specsig.kernels import pairwise_similarity
from sklearn_specsig.metrics import (
    benchmark_scoring,
    kendall_significance,
    nan_mean_absolute_error,
)

KERNELS = ["spearman", "rbf", "cosine"]


# -- scikit-learn's estimator checks ---------------------------------------
# All pass, with no expected failure: on training data every query is its own
# nearest neighbour (d = 0, weight 1 / eps), so even the 2-feature toy data
# where the Spearman similarity is only +1 or -1 is predicted well enough.


@parametrize_with_checks([KNNPerformanceRegressor(n_modules=1, kernel=k) for k in KERNELS])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        # 1-feature or constant rows make a Spearman similarity undefined;
        # predict then warns (NaN prediction), which the checks do not test.
        warnings.filterwarnings("ignore", ".*share no comparable", UserWarning)
        check(estimator)


# -- the weights, by hand ----------------------------------------------------------

# Four training models and two queries, identified by their single feature
# (the model id); the "kernel" looks their similarity up in this table.
_SIM = np.array([
    # train 0   1     2     3    (rows: queries 4, 5)
    [0.90, 0.50, 0.99, -0.20],
    [0.10, 0.80, 0.30, 0.60],
])


def _table_kernel(X, Y):
    """Similarity looked up by model id: queries (ids 4, 5) vs training (0-3)."""
    X, Y = np.asarray(X)[:, 0].astype(int), np.asarray(Y)[:, 0].astype(int)
    if X.max() < 4:  # train vs train (not used by predict)
        return np.where(X[:, None] == Y[None, :], 1.0, 0.0)
    return _SIM[np.ix_(X - 4, Y)]


def test_weights_are_one_over_distance_plus_eps_by_hand():
    X_train, X_query = np.arange(4.0)[:, None], np.array([[4.0], [5.0]])
    y = np.array([10.0, 20.0, 30.0, 40.0])
    reg = KNNPerformanceRegressor(3, kernel=_table_kernel, eps=0.01, n_modules=1)
    reg.fit(X_train, y)
    # Query 4: neighbours 2 (d = 0.01), 0 (d = 0.10), 1 (d = 0.50);
    # weights 1/0.02 = 50, 1/0.11 = 9.0909..., 1/0.51 = 1.9607...
    w = np.array([50.0, 1 / 0.11, 1 / 0.51])
    expected_4 = (50.0 * 30 + w[1] * 10 + w[2] * 20) / w.sum()
    # Query 5: neighbours 1 (d = 0.2), 3 (d = 0.4), 2 (d = 0.7).
    v = np.array([1 / 0.21, 1 / 0.41, 1 / 0.71])
    expected_5 = (v[0] * 20 + v[1] * 40 + v[2] * 30) / v.sum()
    pred, std = reg.predict(X_query, return_std=True)
    np.testing.assert_allclose(pred, [expected_4, expected_5], rtol=1e-12)
    # The uncertainty: weighted spread of the neighbours' scores.
    spread_4 = np.sqrt((w * (np.array([30, 10, 20]) - expected_4) ** 2).sum() / w.sum())
    np.testing.assert_allclose(std[0], spread_4, rtol=1e-12)
    dist, ind = reg.kneighbors(X_query)
    np.testing.assert_array_equal(ind, [[2, 0, 1], [1, 3, 2]])
    np.testing.assert_allclose(dist, [[0.01, 0.10, 0.50], [0.20, 0.40, 0.70]], atol=1e-12)
    # Not scikit-learn's weights="distance" (1 / d), which would give
    # (100 * 30 + 10 * 10 + 2 * 20) / 112 for query 4.
    assert not np.isclose(pred[0], (100 * 30 + 10 * 10 + 2 * 20) / 112)


def test_weights_match_a_precomputed_kneighbors_regressor_with_spearman():
    """Spearman by hand (scipy.spearmanr) and KNeighborsRegressor(weights=1/(d+eps))."""
    rng = np.random.default_rng(1)
    X, Q = rng.normal(size=(12, 9)), rng.normal(size=(5, 9))
    Y = rng.normal(50, 10, size=(12, 2))
    eps = 1e-3
    S = np.array([[spearmanr(q, x).statistic for x in X] for q in Q])
    ref = KNeighborsRegressor(3, metric="precomputed", weights=lambda d: 1 / (d + eps))
    ref.fit(np.zeros((12, 12)), Y)  # metric="precomputed": a square train matrix
    reg = KNNPerformanceRegressor(3, eps=eps, n_modules=1).fit(X, Y)
    np.testing.assert_allclose(reg.predict(Q), ref.predict(1 - S), rtol=1e-10)


def test_exact_match_dominates_with_the_default_eps():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(10, 7 * 5)), rng.normal(size=10)
    reg = KNNPerformanceRegressor().fit(X, y)
    assert reg.eps == 1e-6
    # Each training model is its own neighbour at d = 0 (weight 1e6).
    np.testing.assert_allclose(reg.predict(X), y, atol=1e-3)


# -- neighbours ------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_kneighbors_equals_brute_force_argsort(kernel):
    rng = np.random.default_rng(3)
    X, Q = rng.normal(3.5, 1, size=(40, 7 * 6)), rng.normal(3.5, 1, size=(9, 7 * 6))
    X[::5, 4 * 6:5 * 6] = np.nan  # some models lack the gate row
    reg = KNNPerformanceRegressor(5, kernel=kernel).fit(X, rng.normal(size=40))
    dist, ind = reg.kneighbors(Q)
    S = pairwise_similarity(Q, X, kernel=kernel)
    order = np.argsort(-S, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ind, order)
    np.testing.assert_allclose(dist, 1 - np.take_along_axis(S, order, axis=1), atol=1e-12)
    # n_neighbors and return_distance as in scikit-learn.
    assert reg.kneighbors(Q, n_neighbors=2, return_distance=False).shape == (9, 2)
    with pytest.raises(ValueError, match="n_neighbors"):
        reg.kneighbors(Q, n_neighbors=41)


# -- missing scores, per output ---------------------------------------------------


def test_nan_in_y_is_handled_per_output():
    rng = np.random.default_rng(4)
    X, Q = rng.normal(size=(30, 7 * 6)), rng.normal(size=(8, 7 * 6))
    Y = rng.normal(50, 10, size=(30, 3))
    Y[::3, 1] = np.nan  # a third of the models lack benchmark 1
    Y[5, 2] = np.nan
    reg = KNNPerformanceRegressor(3).fit(X, Y)
    pred, std = reg.predict(Q, return_std=True)
    assert np.isfinite(pred).all() and np.isfinite(std).all()
    np.testing.assert_array_equal(reg.n_scores_, [30, 20, 29])
    for j in range(3):
        have = ~np.isnan(Y[:, j])
        alone = KNNPerformanceRegressor(3).fit(X[have], Y[have, j])
        np.testing.assert_allclose(pred[:, j], alone.predict(Q), rtol=1e-12)
        ind = reg.kneighbors(Q, output=j, return_distance=False)
        assert have[ind].all()  # only models with that score
        np.testing.assert_array_equal(ind, np.flatnonzero(have)[alone.kneighbors(Q)[1]])
    # Benchmark 0 has every score: its neighbours are the plain ones.
    np.testing.assert_array_equal(reg.kneighbors(Q, output=0)[1], reg.kneighbors(Q)[1])


def test_missing_scores_edge_cases():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(6, 7 * 4))
    Y = rng.normal(size=(6, 2))
    Y[:4, 1] = np.nan  # only 2 scores for output 1 < n_neighbors
    with pytest.warns(UserWarning, match="fewer training scores"):
        reg = KNNPerformanceRegressor(3).fit(X, Y)
    assert reg.kneighbors(X[:1], output=1)[1].shape == (1, 2)
    Y[:, 1] = np.nan
    with pytest.raises(ValueError, match="no score"):
        KNNPerformanceRegressor(3).fit(X, Y)
    with pytest.raises(ValueError, match="n_samples = 6"):
        KNNPerformanceRegressor(7).fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="infinity"):
        KNNPerformanceRegressor(3).fit(X, np.r_[np.inf, Y[1:, 0]])


def test_query_with_nothing_comparable_is_nan_with_a_warning():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(5, 2 * 4))
    X[:, 4:] = np.nan  # training models: only module 0
    Q = rng.normal(size=(2, 8))
    Q[1, :4] = np.nan  # query 1: only module 1
    reg = KNNPerformanceRegressor(2, n_modules=2).fit(X, rng.normal(size=5))
    with pytest.warns(UserWarning, match="share no comparable"):
        pred = reg.predict(Q)
    assert np.isfinite(pred[0]) and np.isnan(pred[1])
    assert np.isnan(reg.kneighbors(Q)[0][1]).all()


# -- API ------------------------------------------------------------------------------


def test_pandas_y_keeps_names_and_output_by_name():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(7)
    X = rng.normal(size=(10, 7 * 4))
    y = pd.DataFrame(rng.normal(size=(10, 2)), columns=["ARC", "MMLU"])
    y.iloc[2, 1] = np.nan
    reg = KNNPerformanceRegressor().fit(X, y)
    assert reg.target_names_.tolist() == ["ARC", "MMLU"]
    np.testing.assert_array_equal(reg.kneighbors(X[:3], output="MMLU")[1],
                                  reg.kneighbors(X[:3], output=1)[1])
    np.testing.assert_allclose(reg.predict(X), clone(reg).fit(X, y.to_numpy()).predict(X))
    with pytest.raises(ValueError, match="not a benchmark name"):
        reg.kneighbors(X[:1], output="HellaSwag")
    # Refit on a plain array forgets the names; a Series keeps its name.
    assert not hasattr(reg.fit(X, y.to_numpy()), "target_names_")
    reg.fit(X, y["ARC"])
    assert reg.target_names_.tolist() == ["ARC"] and reg.predict(X).shape == (10,)


def test_shapes_pickle_and_layout_error():
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(12, 7 * 3)), rng.normal(size=(12, 4))
    reg = KNNPerformanceRegressor(kernel="rbf").fit(X, y)
    assert reg.predict(X[:2]).shape == (2, 4) and reg.n_outputs_ == 4
    assert reg.predict(X[:2], return_std=True)[1].shape == (2, 4)
    copy = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(copy.predict(X), reg.predict(X))
    one = KNNPerformanceRegressor(1).fit(X, y).predict(X[:3], return_std=True)[1]
    np.testing.assert_allclose(one, 0, atol=1e-12)  # a single neighbour: no spread
    with pytest.raises(ValueError, match="n_modules=7"):
        KNNPerformanceRegressor().fit(rng.normal(size=(5, 10)), rng.normal(size=5))
    with pytest.raises(ValueError, match="eps"):
        KNNPerformanceRegressor(eps=0).fit(X, y)


# -- the paper's protocol on a synthetic zoo ----------------------------------


def _benchmark_table(zoo, seed=0):
    """Four benchmark columns for the zoo's models, *not* computed from signatures.

    Construction (only ``zoo.labels``, ``zoo.edits`` and ``seed`` enter):

    - each family ``f`` gets a base score per benchmark,
      ``low_b + (high_b - low_b) * U(0, 1)``, with the ranges of the Open
      LLM Leaderboard models (ARC 25-65, HellaSwag 30-85, MMLU 23-70,
      TruthfulQA 35-55);
    - a derived model adds the effect of its recorded edit recipe:
      ``+3 * lora_relative_norm / 0.05 - 2 * noise_gamma / 0.1
      - 4 * prune_fraction / 0.1`` points (a fine-tune helps, noise and
      pruning hurt);
    - every model gets independent N(0, 1) noise.

    Between-family spread is ~10 points, within-family ~2.  The regressor
    sees only the signatures read from the checkpoints, never the labels or
    the recipes: it can only succeed if a model's nearest signatures belong
    to its own family (the paper's claim), which the permuted control in
    the test rules out as an artefact of the protocol.
    """
    rng = np.random.default_rng(seed)
    low = np.array([25.0, 30.0, 23.0, 35.0])
    high = np.array([65.0, 85.0, 70.0, 55.0])
    families = list(dict.fromkeys(zoo.labels))
    family_score = low + (high - low) * rng.uniform(size=(len(families), 4))
    scores = np.array([family_score[families.index(f)] for f in zoo.labels])
    for i, edit in enumerate(zoo.edits):
        if edit is not None:
            scores[i] += (3 * edit["lora_relative_norm"] / 0.05 - 2 * edit["noise_gamma"] / 0.1
                          - 4 * edit["prune_fraction"] / 0.1)
    return scores + rng.standard_normal(scores.shape)


@pytest.fixture(scope="module")
def zoo_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("perf-zoo")
    zoo = make_model_zoo(root, n_families=8, n_derived=7, n_layers=8, hidden_size=32,
                         random_state=0)
    Z = SpectralSignatureTransformer(cache=None).fit_transform(zoo.paths)
    return Z, _benchmark_table(zoo), zoo


def test_paper_protocol_beats_the_mean_and_is_significant(zoo_table):
    Z, y, _ = zoo_table
    cv = ShuffleSplit(n_splits=100, test_size=0.5, random_state=0)
    scoring = benchmark_scoring(4)
    ours = cross_validate(KNNPerformanceRegressor(3), Z, y, cv=cv, scoring=scoring)
    mean = cross_validate(DummyRegressor(), Z, y, cv=cv, scoring=scoring)
    for b in range(4):
        mae, mae_dummy = -ours[f"test_{b}_mae"].mean(), -mean[f"test_{b}_mae"].mean()
        significant = ours[f"test_{b}_significant"].sum()
        assert mae < 0.5 * mae_dummy, (b, mae, mae_dummy)
        assert significant >= 95, (b, significant)
        assert mean[f"test_{b}_significant"].sum() == 0  # constant: tau undefined


def test_paper_protocol_permuted_scores_are_at_chance(zoo_table):
    """Control: the same protocol with y shuffled afresh in every split."""
    Z, y, _ = zoo_table
    rng = np.random.default_rng(1)
    cv = ShuffleSplit(n_splits=100, test_size=0.5, random_state=0)
    hits, maes = np.zeros(4), []
    for train, test in cv.split(Z):
        yp = y[rng.permutation(len(y))]
        pred = KNNPerformanceRegressor(3).fit(Z[train], yp[train]).predict(Z[test])
        hits += kendall_significance(yp[test], pred, multioutput="raw_values")
        maes.append(nan_mean_absolute_error(yp[test], pred, multioutput="raw_values"))
    # Chance level is 2.5 of 100 (two-sided 5%, positive tau only).
    assert hits.max() <= 10, hits
