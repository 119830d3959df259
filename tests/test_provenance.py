"""The empirical lineage p-value: the formula by hand, and its behaviour."""

import numpy as np
import pytest

from sklearn_specsig.provenance import (
    LineagePValue,
    empirical_pvalue,
    lineage_pvalue,
    null_similarities,
)

# A lookup kernel: each "signature" is one feature, the model id; the
# similarity of models a and b is TABLE[a, b].  Every number below can be
# checked by hand.
TABLE = np.array([
    #  0     1     2     3     4 (candidate)
    [1.00, 0.90, 0.30, 0.10, 0.85],  # 0: family A (the claimed base)
    [0.90, 1.00, 0.20, 0.40, 0.95],  # 1: family A
    [0.30, 0.20, 1.00, 0.85, 0.10],  # 2: family B
    [0.10, 0.40, 0.85, 1.00, 0.05],  # 3: family C
    [0.85, 0.95, 0.10, 0.05, 1.00],  # 4: the candidate
])


def lookup(X, Y):
    return TABLE[np.ix_(X[:, 0].astype(int), Y[:, 0].astype(int))]


REFS = np.arange(4.0)[:, None]
LABELS = np.array(["A", "A", "B", "C"])


def test_formula_by_hand():
    # Cross-family pairs: (0,2)=.30 (0,3)=.10 (1,2)=.20 (1,3)=.40 (2,3)=.85;
    # (0,1) is within family A and left out.
    null = null_similarities(REFS, LABELS, kernel=lookup, n_modules=1)
    np.testing.assert_array_equal(null, [0.10, 0.20, 0.30, 0.40, 0.85])
    res = lineage_pvalue([4.0], [0.0], REFS, LABELS, kernel=lookup, n_modules=1)
    assert isinstance(res, LineagePValue)
    # s = TABLE[4, 0] = 0.85; null >= 0.85: one value (0.85, a tie counts).
    assert res.similarity == 0.85
    assert res.n_null == 5
    assert res.pvalue == pytest.approx((1 + 1) / (1 + 5))
    # Against base 3 (family C): s = 0.05, all 5 null values are >= it.
    res = lineage_pvalue([4.0], [3.0], REFS, LABELS, kernel=lookup, n_modules=1)
    assert res.pvalue == 1.0
    # Against base 1: s = 0.95, none >= -> the floor 1 / (1 + n_null).
    res = lineage_pvalue([4.0], [1.0], REFS, LABELS, kernel=lookup, n_modules=1)
    assert res.pvalue == pytest.approx(1 / 6)


def test_vectorised_candidates_and_bases():
    cands = np.array([[4.0], [4.0], [4.0]])
    bases = np.array([[0.0], [1.0], [3.0]])
    res = lineage_pvalue(cands, bases, REFS, LABELS, kernel=lookup, n_modules=1)
    np.testing.assert_allclose(res.similarity, [0.85, 0.95, 0.05])
    np.testing.assert_allclose(res.pvalue, [2 / 6, 1 / 6, 1.0])
    # One base for every candidate.
    res = lineage_pvalue(cands[:2], [0.0], REFS, LABELS, kernel=lookup, n_modules=1)
    np.testing.assert_allclose(res.pvalue, [2 / 6, 2 / 6])
    with pytest.raises(ValueError, match="one per candidate"):
        lineage_pvalue(cands, bases[:2], REFS, LABELS, kernel=lookup, n_modules=1)


def test_empirical_pvalue_edges():
    assert empirical_pvalue(0.5, []) == 1.0  # no null: no evidence
    assert np.isnan(empirical_pvalue(np.nan, [0.1, 0.2]))
    np.testing.assert_allclose(empirical_pvalue([0.0, 0.15, 0.2, 0.3], [0.1, 0.2, np.nan]),
                               [3 / 3, 2 / 3, 2 / 3, 1 / 3])
    assert empirical_pvalue(np.zeros((2, 3)), [1.0]).shape == (2, 3)


def test_related_small_unrelated_large_with_spearman():
    """12 synthetic families of 7 x 16 signatures: a fine-tune of a base
    gets the floor p; an unrelated base gets an unremarkable one."""
    rng = np.random.default_rng(0)
    bases = rng.normal(size=(12, 7 * 16))
    labels = np.arange(12)
    n_null = 12 * 11 // 2
    child = bases[5] + 0.05 * rng.normal(size=bases.shape[1])
    res = lineage_pvalue(child, bases[5], bases, labels)
    assert res.n_null == n_null
    assert res.similarity > 0.9
    assert res.pvalue == pytest.approx(1 / (1 + n_null))
    others = [lineage_pvalue(child, bases[k], bases, labels).pvalue for k in range(12) if k != 5]
    assert min(others) > 0.05 and np.median(others) > 0.3


def test_nan_module_rows_and_validation():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(4, 7, 8))
    Z[2, 4] = np.nan  # a GPT-2-like reference without a gate row
    refs = Z.reshape(4, -1)
    res = lineage_pvalue(refs[2], refs[2], refs, ["a", "b", "c", "d"])
    assert res.similarity == pytest.approx(1.0) and res.n_null == 6
    nothing = np.full(56, np.nan)
    assert np.isnan(lineage_pvalue(nothing, refs[0], refs, ["a", "b", "c", "d"]).pvalue)
    with pytest.raises(ValueError, match="one label per reference"):
        null_similarities(refs, ["a", "b"])
    with pytest.raises(ValueError, match="n_modules"):
        lineage_pvalue(refs[0, :50], refs[1, :50], refs[:, :50], ["a", "b", "c", "d"])
