"""SignatureIndex: top-k equals brute force, whatever the chunking.

Speed is measured in benchmarks/bench_search.py, never asserted here.
"""

import pickle

import numpy as np
import pytest
from sklearn import config_context

from sklearn_specsig.kernels import pairwise_similarity
from sklearn_specsig.search import SignatureIndex


def _signatures(rng, n, n_modules=7, n_layers=12):
    X = rng.normal(size=(n, n_modules, n_layers))
    X[::7, 4] = np.nan  # GPT-2-like: no gate row
    X[3, 2, 5] = np.nan  # one missing layer: the whole row is left out
    X[::11, 1] = 3.0  # a constant row: undefined Spearman, left out
    return X.reshape(n, -1)


def _assert_topk(sim, ind, S, k):
    """Top-k of brute-force S: a stable sort, so exact ties by lowest index."""
    filled = np.where(np.isnan(S), -np.inf, S)
    order = np.argsort(-filled, axis=1, kind="stable")
    expected = np.take_along_axis(filled, order, axis=1)
    np.testing.assert_array_equal(ind, order[:, :k])
    np.testing.assert_allclose(np.nan_to_num(sim, nan=-np.inf), expected[:, :k], rtol=0,
                               atol=1e-12)
    # Each index holds the similarity reported for it, each at most once.
    np.testing.assert_allclose(np.take_along_axis(S, ind, axis=1), sim, rtol=0, atol=1e-12)
    assert all(len(set(row)) == k for row in ind.tolist())


@pytest.mark.parametrize("kernel", ["spearman", "rbf", "cosine"])
@pytest.mark.parametrize("chunk_size", [7, 1000])
def test_topk_equals_brute_force(kernel, chunk_size):
    rng = np.random.default_rng(0)
    X = _signatures(rng, 300)
    Q = _signatures(rng, 9)
    index = SignatureIndex(kernel, chunk_size=chunk_size).fit(X)
    sim, ind = index.kneighbors(Q, n_neighbors=10)
    assert sim.shape == ind.shape == (9, 10)
    S = pairwise_similarity(Q, X, kernel=kernel, n_modules=7)
    _assert_topk(sim, ind, S, 10)
    # No ties here (continuous data, or checked): the exact stable argsort.
    order = np.argsort(-np.where(np.isnan(S), -np.inf, S), axis=1, kind="stable")[:, :10]
    gaps = np.diff(np.take_along_axis(S, order, axis=1), axis=1)
    if np.all(gaps < -1e-12):
        np.testing.assert_array_equal(ind, order)


def test_query_blocks_under_a_small_working_memory():
    rng = np.random.default_rng(1)
    X, Q = _signatures(rng, 200), _signatures(rng, 5)
    with config_context(working_memory=0.001):  # one query per block
        sim, ind = SignatureIndex(chunk_size=16).fit(X).kneighbors(Q, n_neighbors=3)
    _assert_topk(sim, ind, pairwise_similarity(Q, X), 3)


def test_finds_the_fine_tuned_base_among_many():
    rng = np.random.default_rng(2)
    zoo = rng.normal(size=(5000, 7 * 32))
    query = zoo[[123, 4567]] + 0.01 * rng.normal(size=(2, 224))
    sim, ind = SignatureIndex(chunk_size=1024).fit(zoo).kneighbors(query, n_neighbors=1)
    assert ind[:, 0].tolist() == [123, 4567]
    assert np.all(sim > 0.99)


def test_rbf_gamma_is_fixed_on_the_whole_store():
    # Chunks must not each pick their own gamma="scale".
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 14)) * np.linspace(0.1, 10, 50)[:, None]
    Q = rng.normal(size=(2, 14))
    sim, ind = SignatureIndex("rbf", n_modules=2, chunk_size=5).fit(X).kneighbors(Q, 50)
    _assert_topk(sim, ind, pairwise_similarity(Q, X, kernel="rbf", n_modules=2), 50)


def test_nothing_comparable_comes_last_as_nan():
    X = np.arange(4 * 14, dtype=float).reshape(4, 14) % 5
    X[1] = np.nan
    index = SignatureIndex(n_modules=2).fit(X)
    sim, ind = index.kneighbors(X[:1], n_neighbors=4)
    assert ind[0, -1] == 1 and np.isnan(sim[0, -1]) and np.isfinite(sim[0, :3]).all()


def test_api_edges():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 21))
    index = SignatureIndex(n_modules=3).fit(X)
    assert index.n_samples_fit_ == 20 and index.n_features_in_ == 21
    ind = index.kneighbors(X[:2], n_neighbors=2, return_similarity=False)
    assert ind[:, 0].tolist() == [0, 1]  # each signature is its own best match
    restored = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(restored.kneighbors(X[:2], 2, return_similarity=False), ind)
    with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit"):
        index.kneighbors(X[:1], n_neighbors=21)
    with pytest.raises(ValueError, match="positive int"):
        index.kneighbors(X[:1], n_neighbors=0)
    with pytest.raises(ValueError, match="n_modules=4"):
        SignatureIndex(n_modules=4).fit(X)
    with pytest.raises(ValueError, match="21 features"):
        index.kneighbors(X[:1, :14])
