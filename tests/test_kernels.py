"""Kernels: values against a loop-over-pairs reference, invariances, and the
SpearmanModuleKernel in front of scikit-learn estimators."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.stats import spearmanr
from sklearn.cluster import AgglomerativeClustering, SpectralClustering
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_specsig.kernels import (
    SpearmanModuleKernel,
    cosine_similarity,
    pairwise_similarity,
    rbf_similarity,
    spearman_similarity,
)
from sklearn_specsig.signature import Signature, flatten

M, L = 7, 9


# --- straightforward references: one pair and one module row at a time ----


def ref_spearman(X, Y, n_modules):
    S = np.full((len(X), len(Y)), np.nan)
    for a, x in enumerate(X):
        for b, y in enumerate(Y):
            rhos = []
            for zx, zy in zip(x.reshape(n_modules, -1), y.reshape(n_modules, -1)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # constant input
                    rho = spearmanr(zx, zy).statistic  # NaN propagates
                if np.isfinite(rho):
                    rhos.append(rho)
            if rhos:
                S[a, b] = np.mean(rhos)
    return S


def ref_rbf(X, Y, gamma):
    S = np.full((len(X), len(Y)), np.nan)
    for a, x in enumerate(X):
        for b, y in enumerate(Y):
            both = np.isfinite(x) & np.isfinite(y)
            if both.any():
                d2 = np.sum((x[both] - y[both]) ** 2) * x.size / both.sum()
                S[a, b] = np.exp(-gamma * d2)
    return S


def ref_cosine(X, Y):
    S = np.full((len(X), len(Y)), np.nan)
    for a, x in enumerate(X):
        for b, y in enumerate(Y):
            both = np.isfinite(x) & np.isfinite(y)
            nx, ny = np.linalg.norm(x[both]), np.linalg.norm(y[both])
            if nx > 0 and ny > 0:
                S[a, b] = x[both] @ y[both] / (nx * ny)
    return S


def messy_signatures(n, seed):
    """Rounded values (many ties), missing roles, partly-NaN and constant
    rows, and one signature with no usable row at all."""
    rng = np.random.default_rng(seed)
    Z = np.round(rng.normal(3.0, 1.0, size=(n, M, L)), 1)
    Z[: n // 2, 4] = np.nan  # a "GPT-2" half without gate
    Z[1, 2, 3] = np.nan  # one undefined layer
    Z[2, 0] = 3.0  # a constant row
    Z[3, :, : L // 2] = Z[3, :, :1]  # long ties
    Z[4] = np.nan  # nothing to compare
    return flatten(Z)


@pytest.fixture
def data():
    return messy_signatures(12, 0), messy_signatures(7, 1)


def test_spearman_equals_reference(data):
    X, Y = data
    assert_allclose(spearman_similarity(X, Y), ref_spearman(X, Y, M), rtol=0, atol=1e-12)
    assert_allclose(spearman_similarity(X), ref_spearman(X, X, M), rtol=0, atol=1e-12)


@pytest.mark.parametrize("gamma", [None, 0.02])
def test_rbf_equals_reference(data, gamma):
    X, Y = data
    finite = Y[np.isfinite(Y)]
    expected_gamma = gamma if gamma else 1.0 / (X.shape[1] * finite.var())
    assert_allclose(
        rbf_similarity(X, Y, gamma=gamma), ref_rbf(X, Y, expected_gamma), rtol=0, atol=1e-12
    )


def test_cosine_equals_reference(data):
    X, Y = data
    assert_allclose(cosine_similarity(X, Y), ref_cosine(X, Y), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kernel", [spearman_similarity, cosine_similarity, lambda X, Y=None: rbf_similarity(X, Y, gamma=0.1)]
)
def test_symmetric_with_unit_diagonal(data, kernel):
    X = data[0]
    S = kernel(X)
    assert_allclose(S, S.T, rtol=0, atol=0)
    assert_allclose(kernel(X, data[1]), kernel(data[1], X).T, rtol=0, atol=1e-15)
    defined = np.arange(len(X)) != 4  # the all-NaN signature
    assert np.all(np.diag(S)[defined] == 1.0)
    assert np.isnan(S[4]).all()


def test_nan_rules_are_as_documented():
    rng = np.random.default_rng(3)
    llama = rng.normal(size=(M, L))
    gpt2 = llama + 0.0
    gpt2[4] = np.nan  # no gate: averaged over the 6 other rows
    gpt2[0] = -gpt2[0]  # q reversed: correlation -1 on that row
    S = spearman_similarity(flatten(np.stack([llama, gpt2])))
    assert S[0, 1] == pytest.approx((5 - 1) / 6, abs=1e-15)
    const = llama.copy()
    const[1] = 2.5  # constant row: left out, not a 0 in the mean
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning spam
        S = spearman_similarity(flatten(np.stack([llama, const])))
    assert S[0, 1] == pytest.approx(1.0, abs=1e-15)


def test_spearman_invariant_to_monotone_transforms(data):
    X = data[0]
    Z = X.reshape(len(X), M, L).copy()
    Z[:, 3] = np.exp(2.0 * Z[:, 3])  # per-module monotone distortion
    Z[:, 6] = 10.0 * Z[:, 6] + 1.0
    assert np.array_equal(
        spearman_similarity(X), spearman_similarity(flatten(Z)), equal_nan=True
    )


@pytest.mark.parametrize("n_layers", [2, 369, 370, 1000])
def test_spearman_exact_on_both_sides_of_the_float32_limit(n_layers):
    # Integer ranks are multiplied in float32 up to 369 layers, in float64
    # beyond: both are exact, so both equal the reference, and a signature
    # correlates exactly 1 with a copy of itself (not only on the diagonal).
    rng = np.random.default_rng(n_layers)
    X = np.round(rng.normal(size=(5, 2 * n_layers)), 1)  # ties too
    X[1, :n_layers] = np.nan
    assert_allclose(spearman_similarity(X, X[::-1], n_modules=2),
                    ref_spearman(X, X[::-1], 2), rtol=0, atol=1e-12)
    assert np.all(np.diag(spearman_similarity(X, X.copy(), n_modules=2)) == 1.0)


def test_spearman_refuses_profiles_too_deep_to_be_exact():
    with pytest.raises(ValueError, match="300080 layers are too deep"):
        spearman_similarity(np.zeros((1, 300080)), n_modules=1)


def test_large_matrix_is_vectorised():
    # 2000 x 2000 signatures of 7 x 32: a few matrix products, about a
    # second at most (no wall-clock assert; the naive loop takes minutes).
    X = np.random.default_rng(0).normal(size=(2000, 7 * 32))
    S = spearman_similarity(X)
    assert S.shape == (2000, 2000)
    assert np.all(np.diag(S) == 1.0)


def test_pairwise_similarity_dispatch(data):
    X, Y = data
    assert_allclose(pairwise_similarity(X, Y), spearman_similarity(X, Y))
    assert_allclose(
        pairwise_similarity(X, Y, kernel="rbf", gamma=0.3), rbf_similarity(X, Y, gamma=0.3)
    )
    assert_allclose(pairwise_similarity(X, kernel="cosine"), cosine_similarity(X))
    assert_allclose(pairwise_similarity(X, Y, kernel=SpearmanModuleKernel()), spearman_similarity(X, Y))
    with pytest.raises(ValueError, match="kernel='pearson' is not one of"):
        pairwise_similarity(X, kernel="pearson")
    with pytest.raises(ValueError, match="kernel returned shape"):
        pairwise_similarity(X, Y, kernel=lambda A, B: np.zeros((2, 2)))


@pytest.mark.parametrize("kernel", [spearman_similarity, rbf_similarity, cosine_similarity])
def test_input_errors(kernel):
    X = np.ones((3, 7 * 4))
    with pytest.raises(ValueError, match="n_layers=4 at n_modules=7.*Y has 35 \\(n_layers=5\\)"):
        kernel(X, np.ones((2, 35)))
    with pytest.raises(ValueError, match="n_modules=7"):
        kernel(np.ones((3, 10)))
    with pytest.raises(ValueError, match="n_modules=0"):
        kernel(X, n_modules=0)
    with pytest.raises(ValueError, match="flatten"):
        kernel(np.ones((3, 7, 4)))
    with pytest.raises(ValueError, match="infinity"):
        kernel(np.full((2, 7), np.inf))


# --- SpearmanModuleKernel in front of scikit-learn estimators -------------


def families(n_per_family=6, n_layers=12, noise=0.1, seed=0):
    """Three families: a random (7, L) profile each, plus small noise."""
    rng = np.random.default_rng(seed)
    bases = rng.normal(3.0, 1.0, size=(3, M, n_layers))
    y = np.repeat(np.arange(3), n_per_family)
    Z = bases[y] + noise * rng.normal(size=(len(y), M, n_layers))
    return flatten(Z), y


def test_knn_precomputed_distance_pipeline():
    X, y = families()
    Xt, yt = families(seed=0, noise=0.2)[0][1::2], families()[1][1::2]
    pipe = make_pipeline(
        SpearmanModuleKernel(output="distance"), KNeighborsClassifier(3, metric="precomputed")
    )
    assert (pipe.fit(X[::2], y[::2]).predict(Xt) == yt).all()
    D = SpearmanModuleKernel(output="distance").fit(X).transform(X)
    assert D.min() >= 0 and np.all(np.diag(D) == 0)


def test_svc_precomputed_and_callable():
    X, y = families()
    train, test = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
    K = SpearmanModuleKernel().fit(X[train])
    svc = SVC(kernel="precomputed").fit(K.transform(X[train]), y[train])
    assert (svc.predict(K.transform(X[test])) == y[test]).all()
    svc = SVC(kernel=SpearmanModuleKernel()).fit(X[train], y[train])
    assert (svc.predict(X[test]) == y[test]).all()


def test_clustering_on_affinity_and_distance():
    X, y = families()
    A = SpearmanModuleKernel(output="affinity").fit_transform(X)
    assert 0 <= A.min() and A.max() <= 1
    labels = SpectralClustering(3, affinity="precomputed", random_state=0).fit_predict(A)
    assert adjusted_rand_score(y, labels) == 1.0
    D = SpearmanModuleKernel(output="distance").fit_transform(X)
    labels = AgglomerativeClustering(3, metric="precomputed", linkage="average").fit_predict(D)
    assert adjusted_rand_score(y, labels) == 1.0


def test_transform_errors_name_n_layers():
    X, _ = families(n_layers=12)
    K = SpearmanModuleKernel().fit(X)
    with pytest.raises(ValueError, match="expecting 84 features.*n_layers=12"):
        K.transform(families(n_layers=10)[0])
    with pytest.raises(ValueError, match="n_modules=7"):
        SpearmanModuleKernel().fit(np.ones((3, 10)))
    with pytest.raises(ValueError, match="'output' parameter"):
        SpearmanModuleKernel(output="kernel").fit(X)


def _sig(values):
    return Signature(
        values=values, roles=("q", "k", "v", "o", "gate", "up", "down"),
        n_layers=values.shape[1], architecture="llama", metric="alpha_hill",
        fingerprint="0" * 64, spectra={}, entries=(),
    )


def test_depth_mismatched_signatures():
    rng = np.random.default_rng(1)
    parent = rng.normal(size=(M, 12))
    child = np.delete(parent, [2, 7, 9], axis=1)
    other = rng.normal(size=(M, 9))
    sigs = [_sig(parent), _sig(child), _sig(other)]
    S = SpearmanModuleKernel(depth="align")(sigs)
    assert S[0, 1] == pytest.approx(1.0) and S[0, 2] < 0.5
    assert_allclose(S, S.T)
    # equal depths reduce to the plain kernel; arrays work as well as Signatures
    flat = flatten(np.stack([parent, parent + 0.1 * rng.normal(size=parent.shape)]))
    assert_allclose(SpearmanModuleKernel(depth="align")(flat), spearman_similarity(flat))
    T = SpearmanModuleKernel(depth="align").fit(sigs).transform([parent, child])
    assert T.shape == (2, 3) and T[1, 0] == pytest.approx(1.0)
    # resampling onto a common relative-depth grid
    S = SpearmanModuleKernel(depth=12)([parent, child, other])
    assert S.shape == (3, 3) and S[0, 1] > S[0, 2]
    with pytest.raises(ValueError, match="different depths \\[9, 12\\]"):
        SpearmanModuleKernel()(sigs)


@parametrize_with_checks([SpearmanModuleKernel(n_modules=1)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("n_features", [7, 224, 5000])
def test_exact_dot_is_the_same_bits_in_any_shape(n_features):
    from fractions import Fraction

    from sklearn_specsig.kernels._exact import exact_dot, slice_rows

    rng = np.random.default_rng(n_features)
    # Values over many magnitudes, zeros and a zero row: the slicing must
    # not depend on anything but the row itself.
    X = rng.normal(size=(6, n_features)) * 10.0 ** rng.integers(-6, 6, size=(6, 1))
    Y = rng.normal(size=(40, n_features)) * 10.0 ** rng.integers(-6, 6, size=(40, n_features))
    X[0] = 0.0
    Y[3, ::2] = 0.0
    full = exact_dot(slice_rows(X), slice_rows(Y))
    for rows, cols in [(slice(1, 2), slice(0, 40)), (slice(0, 6), slice(5, 12)),
                       (slice(2, 5), slice(39, 40))]:
        part = exact_dot(slice_rows(X[rows]), slice_rows(Y[cols]))
        np.testing.assert_array_equal(part, full[rows, cols])
    assert (full[0] == 0.0).all()
    # Accurate: within a few ulps of |x| |y| of the exact rational dot product.
    for i, j in [(1, 0), (2, 3), (5, 39)]:
        exact = float(sum(Fraction(a) * Fraction(b) for a, b in zip(X[i], Y[j])))
        scale = np.linalg.norm(X[i]) * np.linalg.norm(Y[j])
        assert abs(full[i, j] - exact) <= 4 * np.finfo(float).eps * scale


@pytest.mark.parametrize("kernel", ["rbf", "cosine"])
def test_rbf_and_cosine_chunks_are_bit_equal_to_the_full_matrix(kernel):
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(9, 7 * 12)), rng.normal(size=(50, 7 * 12))
    Y[::4, 24:36] = np.nan
    params = {"gamma": 0.01} if kernel == "rbf" else {}
    full = pairwise_similarity(X, Y, kernel=kernel, **params)
    for start in range(0, 50, 7):
        chunk = pairwise_similarity(X[3:4], Y[start:start + 7], kernel=kernel, **params)
        np.testing.assert_array_equal(chunk, full[3:4, start:start + 7])


@pytest.mark.parametrize("big", [1e4, 1e8, 1e12, 1e100])
def test_rbf_and_cosine_keep_small_entries_when_the_largest_is_masked(big):
    # The features two signatures share may hold only small values of a row
    # whose largest value is masked out by the other's NaN: the products
    # must not lose them (exact slicing keeps every bit of every entry).
    rng = np.random.default_rng(0)
    x = np.r_[big, rng.uniform(0.1, 1.0, 20)]
    y = np.r_[np.nan, rng.uniform(0.1, 1.0, 20)]
    X, Y = x[None], y[None]
    xs, ys = x[1:], y[1:]
    cos = xs @ ys / np.sqrt((xs @ xs) * (ys @ ys))
    assert_allclose(cosine_similarity(X, Y, n_modules=1), [[cos]], rtol=1e-14)
    d2 = np.sum((xs - ys) ** 2) * 21 / 20  # nan_euclidean's rescaling
    assert_allclose(rbf_similarity(X, Y, gamma=0.5, n_modules=1), [[np.exp(-0.5 * d2)]],
                    rtol=1e-12)
