"""Depth alignment: the DP against brute force, and recovery of dropped layers."""

from itertools import combinations, pairwise

import numpy as np
import pytest
from numpy.testing import assert_allclose

from sklearn_specsig.kernels import AlignmentResult, align_depth, spearman_similarity
from sklearn_specsig.signature import Signature, flatten


def ref_cost_matrix(Z1, Z2):
    """Loops: z-score every module row of each model, mean |difference|."""

    def z(Z):
        out = np.full_like(Z, np.nan)
        for m, row in enumerate(Z):
            ok = np.isfinite(row)
            if ok.sum() >= 2 and row[ok].std() > 0:
                out[m, ok] = (row[ok] - row[ok].mean()) / row[ok].std()
        return out

    A, B = z(Z1), z(Z2)
    D = np.empty((Z1.shape[1], Z2.shape[1]))
    for i in range(Z1.shape[1]):
        for j in range(Z2.shape[1]):
            D[i, j] = np.nanmean(np.abs(A[:, i] - B[:, j]))
    return D


def brute_force(D):
    """Least total cost over all order-preserving injections of columns into rows."""
    n_long, n_short = D.shape
    return min(
        sum(D[i, j] for j, i in enumerate(rows)) for rows in combinations(range(n_long), n_short)
    )


@pytest.mark.parametrize("seed", range(12))
def test_dp_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_long = rng.integers(2, 9)
    n_short = rng.integers(2, n_long + 1)
    Z1 = rng.normal(size=(7, n_long))
    Z2 = rng.normal(size=(7, n_short))
    Z1[4] = Z2[4] = np.nan  # a missing role on both sides
    res = align_depth(Z1, Z2)
    assert_allclose(res.cost_matrix, ref_cost_matrix(Z1, Z2), rtol=0, atol=1e-12)
    total = res.cost * n_short
    assert total == pytest.approx(brute_force(res.cost_matrix), abs=1e-12)
    assert total == pytest.approx(sum(res.cost_matrix[i, j] for i, j in res.pairs), abs=1e-12)
    rows, cols = zip(*res.pairs)
    assert list(cols) == list(range(n_short))
    assert all(a < b for a, b in pairwise(rows))
    assert sorted(set(range(n_long)) - set(rows)) == res.skipped


def test_dropped_layers_are_recovered():
    rng = np.random.default_rng(0)
    parent = rng.normal(3.0, 1.0, size=(7, 24))
    dropped = [5, 11, 17, 23]
    child = np.delete(parent, dropped, axis=1)
    res = align_depth(parent, child)
    assert isinstance(res, AlignmentResult)
    assert res.skipped == dropped and not res.swapped
    assert res.pairs == list(zip(np.delete(np.arange(24), dropped).tolist(), range(20)))
    assert res.similarity == 1.0
    # reversed arguments: same matching, pairs still as (layer of Z1, layer of Z2)
    rev = align_depth(_sig(child), _sig(parent))
    assert rev.swapped and rev.skipped == dropped
    assert rev.pairs == [(j, i) for i, j in res.pairs]
    assert rev.cost == res.cost and rev.cost_matrix.shape == (20, 24)


def test_related_pair_costs_much_less_than_unrelated():
    rng = np.random.default_rng(1)
    parent = rng.normal(3.0, 1.0, size=(7, 32))
    child = np.delete(parent, [8, 20, 30], axis=1) + 0.1 * rng.normal(size=(7, 29))
    unrelated = rng.normal(3.0, 1.0, size=(7, 28))
    related, other = align_depth(parent, child), align_depth(parent, unrelated)
    assert related.cost * 3 < other.cost
    assert related.similarity > 0.9 > other.similarity
    expected = spearman_similarity(
        flatten(parent[:, [i for i, _ in other.pairs]])[None], flatten(unrelated)[None]
    )[0, 0]
    assert other.similarity == pytest.approx(expected, abs=1e-15)


def test_alignment_errors():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="Z1 has 7 module rows but Z2 has 6"):
        align_depth(rng.normal(size=(7, 5)), rng.normal(size=(6, 4)))
    with pytest.raises(ValueError, match="no module row is usable"):
        align_depth(np.full((7, 5), np.nan), rng.normal(size=(7, 4)))
    with pytest.raises(ValueError, match="unflatten"):
        align_depth(rng.normal(size=35), rng.normal(size=(7, 4)))
    with pytest.raises(ValueError, match="at least two layers"):
        align_depth(rng.normal(size=(7, 5)), rng.normal(size=(7, 1)))


def _sig(values):
    return Signature(
        values=values, roles=("q", "k", "v", "o", "gate", "up", "down"),
        n_layers=values.shape[1], architecture="llama", metric="alpha_hill",
        fingerprint="0" * 64, spectra={}, entries=(),
    )
