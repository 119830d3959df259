"""Top-k with exact ties: most similar first, ties by lowest index, everywhere.

The reference is Python's ``sorted`` on ``(-similarity, index)`` pairs: it
does not depend on numpy's selection or sorting algorithms, which differ
between versions and CPUs.
"""

import math

import numpy as np
import pytest

from sklearn_specsig import KNNPerformanceRegressor, LineageClassifier
from sklearn_specsig._topk import select_top_k, top_k
from sklearn_specsig.kernels import pairwise_similarity
from sklearn_specsig.search import SignatureIndex


def _reference(S, k):
    """Indices of the k best of each row by (-score, index); NaN last."""
    out = []
    for row in np.asarray(S, dtype=float).tolist():
        key = [(math.inf if math.isnan(s) else -s, j) for j, s in enumerate(row)]
        out.append([j for _, j in sorted(key)[:k]])
    return np.array(out)


def _tied_scores(rng, n_rows, n_cols, n_values=4, nan_share=0.1):
    """Scores drawn from a handful of values: every row is full of exact ties."""
    values = rng.normal(size=n_values)
    S = values[rng.integers(0, n_values, size=(n_rows, n_cols))]
    S[rng.random(S.shape) < nan_share] = np.nan
    return S


@pytest.mark.parametrize("k", [1, 2, 5, 17, 39, 40])
def test_top_k_breaks_ties_by_lowest_index(k):
    rng = np.random.default_rng(k)
    S = _tied_scores(rng, 25, 40)
    scores, ind = top_k(S, k)
    expected = _reference(S, k)
    np.testing.assert_array_equal(ind, expected)
    np.testing.assert_array_equal(scores, np.take_along_axis(S, expected, axis=1))
    # select_top_k: the same set, in column order.
    np.testing.assert_array_equal(select_top_k(S, k), np.sort(expected, axis=1))


def test_top_k_with_explicit_index_and_all_nan_rows():
    S = np.array([[np.nan, np.nan, np.nan], [0.2, np.nan, 0.2]])
    index = np.array([[10, 20, 30], [5, 6, 7]])
    scores, ind = top_k(S, 2, index=index)
    np.testing.assert_array_equal(ind, [[10, 20], [5, 7]])
    np.testing.assert_array_equal(scores, [[np.nan, np.nan], [0.2, 0.2]])
    with pytest.raises(ValueError, match="k=4"):
        top_k(S, 4)
    with pytest.raises(ValueError, match="2-D"):
        top_k(S[0], 1)


def _tied_zoo(rng, n_patterns=5, n_copies=12, n_modules=7, n_layers=6):
    """Stored signatures that are exact copies of a few patterns, shuffled:
    every query meets many exact ties, spread over every chunk."""
    patterns = rng.normal(size=(n_patterns, n_modules * n_layers))
    X = np.repeat(patterns, n_copies, axis=0)
    X = X[rng.permutation(len(X))]
    X[::9, 4 * n_layers:5 * n_layers] = np.nan  # some lack the gate row
    Q = patterns[rng.integers(0, n_patterns, size=6)] + 0.05 * rng.normal(
        size=(6, n_modules * n_layers))
    return X, Q


@pytest.mark.parametrize("kernel", ["spearman", "rbf", "cosine"])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 13, 1000])
def test_signature_index_ties_across_chunk_boundaries(kernel, chunk_size):
    rng = np.random.default_rng(7)
    X, Q = _tied_zoo(rng)
    index = SignatureIndex(kernel, chunk_size=chunk_size).fit(X)
    S = pairwise_similarity(Q, X, kernel=kernel, **index.kernel_params_)
    for k in (1, 5, 12, 13, 30):
        sim, ind = index.kneighbors(Q, n_neighbors=k)
        expected = _reference(S, k)
        # Exact ties are exact: the chunked scores are bit-equal per copy.
        np.testing.assert_array_equal(ind, expected)
        np.testing.assert_allclose(sim, np.take_along_axis(S, expected, axis=1),
                                   rtol=0, atol=1e-12)


def test_regressor_and_lineage_keep_the_tie_rule():
    rng = np.random.default_rng(8)
    X, Q = _tied_zoo(rng)
    reg = KNNPerformanceRegressor(5).fit(X, rng.normal(size=len(X)))
    S = pairwise_similarity(Q, X)
    np.testing.assert_array_equal(reg.kneighbors(Q, return_distance=False),
                                  _reference(S, 5))
    # Lineage: one reference per family, two families with identical
    # signatures tie exactly: the one listed first in classes_ wins.
    refs = np.vstack([X[:4], X[:1]])
    labels = np.array(["d", "b", "c", "e", "a"])
    clf = LineageClassifier().fit(refs, labels)
    table = clf.explain(Q, n_families=5)
    S_fam = clf.similarity(Q)
    expected = clf.classes_[_reference(S_fam, 5)]
    np.testing.assert_array_equal(table["family"].to_numpy().reshape(len(Q), 5), expected)
