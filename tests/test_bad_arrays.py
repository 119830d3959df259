"""Part 5 of the bad-input contract, the array side: kernels and estimators
fed Inf, empty arrays, wrong widths, wrong ``n_modules``, wrong dimensions,
strings and too few samples answer with a ValueError that says what is
wrong. NaN is not an error: it marks a module a model does not have (GPT-2's
gate row), so it is skipped, and a query with nothing comparable warns.
"""

import numpy as np
import pytest

from sklearn_specsig import (
    KNNPerformanceRegressor,
    LineageClassifier,
    SignatureClusterer,
    SpearmanModuleKernel,
)
from sklearn_specsig.kernels import (
    cosine_similarity,
    rbf_similarity,
    spearman_similarity,
)

DEPTH = 4
RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 7 * DEPTH))
LABELS = np.repeat(["a", "b", "c"], 4)
SCORES = RNG.normal(size=12)


def _with(value):
    bad = X.copy()
    bad[0, 3] = value
    return bad


BAD_X = {
    "inf": (_with(np.inf), "infinity"),
    "minus-inf": (_with(-np.inf), "infinity"),
    "empty": (np.empty((0, 7 * DEPTH)), r"0 sample\(s\)"),
    "no-features": (np.empty((12, 0)), r"0 feature\(s\)"),
    "width-not-7-rows": (X[:, :27], "do not split into n_modules=7"),
    "1-D": (X[0], "Expected 2D array"),
    "3-D": (X[None], "dim 3|pass flattened signatures"),
    "strings": (np.full((12, 7 * DEPTH), "a"), "(?i)convert"),
}

# What each estimator or kernel does with X: (name, callable).
FITS = {
    "SpearmanModuleKernel": lambda A: SpearmanModuleKernel()(A),
    "spearman_similarity": lambda A: spearman_similarity(A),
    "rbf_similarity": lambda A: rbf_similarity(A),
    "cosine_similarity": lambda A: cosine_similarity(A),
    "LineageClassifier.fit": lambda A: LineageClassifier().fit(A, LABELS[: len(A)]),
    "SignatureClusterer.fit": lambda A: SignatureClusterer(method="spectral").fit(A),
    "KNNPerformanceRegressor.fit": lambda A: KNNPerformanceRegressor().fit(A, SCORES[: len(A)]),
}


@pytest.mark.parametrize("fit", list(FITS.values()), ids=list(FITS))
@pytest.mark.parametrize("bad, fragment", list(BAD_X.values()), ids=list(BAD_X))
def test_bad_arrays_raise_a_clear_value_error(fit, bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        fit(bad)


PREDICTS = {
    "LineageClassifier": LineageClassifier().fit(X, LABELS),
    "KNNPerformanceRegressor": KNNPerformanceRegressor().fit(X, SCORES),
}


@pytest.mark.parametrize("model", list(PREDICTS.values()), ids=list(PREDICTS))
@pytest.mark.parametrize("bad, fragment", [
    (_with(np.inf), "infinity"),
    (X[:, :21], "has 21 features, but"),
    (np.empty((0, 7 * DEPTH)), "0 sample"),
    (X[0], "Expected 2D array"),
], ids=["inf", "other-depth", "empty", "1-D"])
def test_bad_arrays_at_predict_time(model, bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        model.predict(bad)


@pytest.mark.parametrize("fit", [
    lambda: SpearmanModuleKernel(n_modules=5)(X),
    lambda: LineageClassifier(n_modules=5).fit(X, LABELS),
    lambda: SignatureClusterer(n_modules=5).fit(X),
    lambda: KNNPerformanceRegressor(n_modules=5).fit(X, SCORES),
], ids=["kernel", "lineage", "clusterer", "regressor"])
def test_wrong_n_modules(fit):
    with pytest.raises(ValueError, match="28 features, which do not split into n_modules=5"):
        fit()


def test_too_few_samples():
    with pytest.raises(ValueError, match="needs at least 3 models"):
        SignatureClusterer().fit(X[:2])
    with pytest.raises(ValueError, match="lower n_neighbors"):
        KNNPerformanceRegressor(n_neighbors=3).fit(X[:2], SCORES[:2])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        KNNPerformanceRegressor().fit(X, SCORES[:5])
    with pytest.raises(ValueError, match="infinity"):
        KNNPerformanceRegressor().fit(X, np.r_[SCORES[:-1], np.inf])


def test_a_single_sample_is_a_valid_query():
    # One model is enough to ask about: its nearest reference is itself.
    assert LineageClassifier().fit(X, LABELS).predict(X[4:5]).tolist() == ["b"]
    np.testing.assert_allclose(
        KNNPerformanceRegressor(n_neighbors=1).fit(X, SCORES).predict(X[7:8]), SCORES[7:8]
    )


def test_nan_skips_a_module_and_nothing_comparable_warns():
    with_gap = X.copy()
    with_gap[:, 4 * DEPTH : 5 * DEPTH] = np.nan  # no gate row, like GPT-2
    K = SpearmanModuleKernel()(with_gap)
    np.testing.assert_allclose(np.diag(K), 1.0)
    model = LineageClassifier().fit(X, LABELS)
    assert model.predict(with_gap[[9]]).tolist() == ["c"]
    with pytest.warns(UserWarning, match="share no comparable module row"):
        model.predict(np.full((1, 7 * DEPTH), np.nan))
