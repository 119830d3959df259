"""SignatureIndex: top-k equals brute force, whatever the chunking.

Speed is measured in benchmarks/bench_search.py, never asserted here.
"""

import pickle

import numpy as np
import pytest
from sklearn import config_context

from sklearn_specsig.kernels import align_depth, pairwise_similarity, spearman_similarity
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


def _tied_spearman_store(rng, n_layers=12):
    """Stored signatures whose Spearman similarities to the queries tie in
    exact arithmetic in many ways, and queries that meet those ties.

    Per pattern: the pattern, a monotone transform of it (the same ranks),
    and copies with two adjacent layers of the ``q`` row swapped at several
    depths (the ``q`` row increases, so each swap lowers the correlation
    with an increasing query row by the same rational amount); a few without
    a ``gate`` row; everything three times, shuffled across chunks.
    """
    patterns = rng.normal(size=(4, 7, n_layers))
    patterns[:, 0] = np.arange(n_layers)
    store = []
    for z in patterns:
        store += [z, np.exp(z)]
        for i in range(0, n_layers - 1, 2):
            swapped = z.copy()
            swapped[0, [i, i + 1]] = swapped[0, [i + 1, i]]
            store.append(swapped)
        no_gate = z.copy()
        no_gate[4] = np.nan
        store += [no_gate, 2.0 * no_gate + 1.0]
    X = np.stack(store * 3).reshape(-1, 7 * n_layers)
    X = X[rng.permutation(len(X))]
    Q = patterns[[0, 1, 2, 3, 0, 2]] + 0.3 * rng.normal(size=(6, 7, n_layers))
    Q[:, 0] = np.arange(n_layers) + 0.5 * rng.random(size=(6, n_layers))  # still increasing
    Q[5, 0] = rng.normal(size=n_layers)  # and one query without that structure
    return X, Q.reshape(6, -1)


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_spearman_ties_are_bit_identical_everywhere(chunk_size, monkeypatch):
    rng = np.random.default_rng(5)
    X, Q = _tied_spearman_store(rng)
    S = spearman_similarity(Q, X)
    # The ties are there: most rows of S hold far fewer values than columns.
    assert max(len(np.unique(row)) for row in S) < len(X) // 3
    # The same bits from the kernel at other shapes and tilings ...
    np.testing.assert_array_equal(np.vstack([spearman_similarity(q[None], X) for q in Q]), S)
    np.testing.assert_array_equal(spearman_similarity(np.vstack([Q, X]))[: len(Q), len(Q):], S)
    with monkeypatch.context() as patch:
        patch.setattr("sklearn_specsig.kernels._spearman._TILE_ROWS", 4)
        patch.setattr("sklearn_specsig.kernels._spearman._TILE_ELEMENTS", 4 * chunk_size)
        np.testing.assert_array_equal(spearman_similarity(Q, X), S)
    # ... from the alignment (equal depths: the identity matching) ...
    for a, b in [(0, 0), (0, 5), (3, 17), (5, 40)]:
        res = align_depth(Q[a].reshape(7, -1), X[b].reshape(7, -1))
        assert res.similarity == S[a, b] or np.isnan(res.similarity) and np.isnan(S[a, b])
    # ... and from the index, at any chunk size, one query per block.
    index = SignatureIndex(chunk_size=chunk_size).fit(X)
    order = np.argsort(-np.where(np.isnan(S), -np.inf, S), axis=1, kind="stable")
    with config_context(working_memory=0.0001):
        for k in (5, 13, len(X)):
            sim, ind = index.kneighbors(Q, n_neighbors=k)
            np.testing.assert_array_equal(ind, order[:, :k])
            np.testing.assert_array_equal(sim, np.take_along_axis(S, order[:, :k], axis=1))


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
