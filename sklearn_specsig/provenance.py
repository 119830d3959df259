"""A defensible lineage answer: an empirical p-value for a similarity.

"Model B is derived from model A" is a claim an auditor must be able to
check.  A similarity of 0.93 on its own says nothing: is 0.93 high for this
kernel, this metric, these architectures?  The answer here is the rank of
the claimed pair's similarity among the similarities of pairs known to be
*unrelated* -- references of different families -- as an empirical p-value

    p = (1 + #{null >= s}) / (1 + n_null)

(the "+1" counts the observed pair itself, so p is never 0 and the test is
valid, not anti-conservative, when the observed similarity is exchangeable
with the null ones under the hypothesis of no relation; Phipson & Smyth,
2010, "Permutation p-values should never be zero").

What this p-value can and cannot say
------------------------------------
* **Resolution.**  The smallest p it can report is ``1 / (1 + n_null)``.
  With K reference families of one base model each there are only
  ``K (K - 1) / 2`` unrelated pairs: 8 families give 28 pairs and a floor
  of 1/29 = 0.034, so "p < 0.01" is *unreachable* whatever the similarity.
  Add unrelated references (more families, or several models per family:
  every cross-family pair counts) to sharpen it.
* **The null is what the references are.**  It describes unrelated pairs
  *like those in the reference set* (their architectures, sizes, training
  recipes).  A candidate from an unusual population (another depth grid,
  a metric the references were not computed with) is not covered.
* **Dependence.**  The null pairs share models, so they are not
  independent draws; the p-value is an honest rank statistic of the
  observed pair among them, not an exact tail probability of a parametric
  model.  With many families tested at once, adjust for multiplicity
  (e.g. multiply by the number of families tested).
* It measures how unusual the similarity is *for unrelated models*; a
  small p rejects "unrelated like the references", it does not by itself
  prove direct descent (a sibling fine-tune of the same base also scores
  high).
"""

from typing import NamedTuple

import numpy as np
from sklearn.utils.validation import check_array

from .kernels import pairwise_similarity

__all__ = ["LineagePValue", "empirical_pvalue", "lineage_pvalue", "null_similarities"]


class LineagePValue(NamedTuple):
    """Result of :func:`lineage_pvalue`.

    Attributes
    ----------
    similarity : float or ndarray
        Kernel similarity of each candidate to its claimed base.
    pvalue : float or ndarray
        Empirical p-value ``(1 + #{null >= similarity}) / (1 + n_null)``;
        NaN where the similarity is NaN (nothing comparable).
    n_null : int
        Number of unrelated (cross-family) reference pairs in the null;
        the smallest reachable p-value is ``1 / (1 + n_null)``.
    """

    similarity: object
    pvalue: object
    n_null: int


def _as_2d(X, name):
    X = check_array(X, ensure_2d=False, ensure_all_finite="allow-nan", dtype=np.float64,
                    input_name=name)
    if X.ndim == 1:
        return X[None, :], True
    if X.ndim != 2:
        raise ValueError(f"{name} should be 1-D or 2-D, got shape {X.shape}.")
    return X, False


def null_similarities(references, labels, *, kernel="spearman", n_modules=7,
                      kernel_params=None):
    """Similarities of all pairs of references from different families.

    Parameters
    ----------
    references : array-like of shape (n_references, n_modules * n_layers)
        Flattened signatures of models of known lineage.
    labels : array-like of shape (n_references,)
        Family of each reference.
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Passed to :func:`sklearn_specsig.kernels.pairwise_similarity`.
    n_modules : int, default=7
        Module rows of a flattened signature.
    kernel_params : dict, default=None
        Extra keyword arguments of the kernel.

    Returns
    -------
    null : ndarray of shape (n_null,)
        Sorted (ascending) similarities of every unordered pair ``i < j``
        with ``labels[i] != labels[j]``; pairs whose similarity is NaN
        (no module row comparable) are left out.

    Notes
    -----
    Costs one ``(n_references, n_references)`` similarity matrix.
    """
    references, _ = _as_2d(references, "references")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != references.shape[0]:
        raise ValueError(
            f"labels should be 1-D with one label per reference "
            f"({references.shape[0]}), got shape {labels.shape}."
        )
    S = pairwise_similarity(references, kernel=kernel, n_modules=n_modules,
                            **(kernel_params or {}))
    i, j = np.triu_indices(references.shape[0], k=1)
    null = S[i, j][labels[i] != labels[j]]
    return np.sort(null[~np.isnan(null)])


def empirical_pvalue(similarity, null, *, assume_sorted=False):
    """Empirical p-value of similarities against a null sample.

    Parameters
    ----------
    similarity : float or array-like
        Observed similarities (any shape).
    null : array-like of shape (n_null,)
        Similarities of unrelated pairs (NaN entries are dropped).
    assume_sorted : bool, default=False
        ``null`` is already sorted ascending without NaN (as
        :func:`null_similarities` returns it): skip the copy and the sort,
        which dominate the cost for a large null queried many times.

    Returns
    -------
    pvalue : float or ndarray
        ``(1 + #{null >= s}) / (1 + n_null)`` elementwise, in
        ``[1 / (1 + n_null), 1]``; NaN where ``s`` is NaN.  With an empty
        null every p-value is 1 (no evidence either way).

    Examples
    --------
    >>> from sklearn_specsig.provenance import empirical_pvalue
    >>> float(empirical_pvalue(0.9, [0.1, 0.2, 0.95, 0.3]))  # (1 + 1) / (1 + 4)
    0.4
    """
    null = np.asarray(null, dtype=np.float64).ravel()
    if not assume_sorted:
        null = np.sort(null[~np.isnan(null)])
    s = np.asarray(similarity, dtype=np.float64)
    n_ge = null.size - np.searchsorted(null, np.nan_to_num(s, nan=np.inf), side="left")
    p = (1.0 + n_ge) / (1.0 + null.size)
    p = np.where(np.isnan(s), np.nan, p)
    return p[()] if p.ndim == 0 else p


def lineage_pvalue(candidate, claimed_base, references, labels, *, kernel="spearman",
                   n_modules=7, kernel_params=None):
    """How unusual is a candidate's similarity to its claimed base?

    Computes the kernel similarity ``s`` of ``candidate`` to
    ``claimed_base`` and its empirical p-value against the null
    distribution of similarities between references of *different*
    families (see the module docstring for what this can and cannot say):

        p = (1 + #{null >= s}) / (1 + n_null)

    Parameters
    ----------
    candidate : array-like of shape (n_features,) or (n_candidates, n_features)
        Flattened signature(s) of the model(s) whose lineage is claimed.
    claimed_base : array-like of shape (n_features,) or (n_candidates, n_features)
        Flattened signature of the claimed base: one for all candidates,
        or one per candidate.
    references : array-like of shape (n_references, n_features)
        Models of known lineage (at least two families) that define the
        null.  The claimed base may be among them.
    labels : array-like of shape (n_references,)
        Family of each reference.
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity (:func:`sklearn_specsig.kernels.pairwise_similarity`).
    n_modules : int, default=7
        Module rows of a flattened signature.
    kernel_params : dict, default=None
        Extra keyword arguments of the kernel.

    Returns
    -------
    result : LineagePValue
        ``(similarity, pvalue, n_null)``; ``similarity`` and ``pvalue`` are
        floats for a 1-D ``candidate``, arrays otherwise.  The smallest
        reachable p-value is ``1 / (1 + n_null)``: with K families of one
        reference each, ``n_null = K (K - 1) / 2`` (8 families: p >= 0.034).

    See Also
    --------
    null_similarities : The null sample itself.
    sklearn_specsig.LineageClassifier.explain : The same p-value for every
        known family, from a fitted classifier.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.provenance import lineage_pvalue
    >>> rng = np.random.default_rng(0)
    >>> bases = rng.normal(size=(6, 7 * 10))          # 6 unrelated families
    >>> child = bases[2] + 0.01 * rng.normal(size=70)  # a fine-tune of base 2
    >>> res = lineage_pvalue(child, bases[2], bases, labels=np.arange(6))
    >>> res.n_null, round(res.pvalue, 4)               # 15 pairs: floor 1/16
    (15, 0.0625)
    >>> bool(res.similarity > 0.99)
    True
    """
    cand, cand_1d = _as_2d(candidate, "candidate")
    base, base_1d = _as_2d(claimed_base, "claimed_base")
    if cand.shape[1] != base.shape[1]:
        raise ValueError(
            f"candidate has {cand.shape[1]} features but claimed_base has "
            f"{base.shape[1]}; both must be flattened signatures of one layout."
        )
    if base.shape[0] not in (1, cand.shape[0]):
        raise ValueError(
            f"claimed_base should be one signature or one per candidate "
            f"({cand.shape[0]}), got {base.shape[0]}."
        )
    null = null_similarities(references, labels, kernel=kernel, n_modules=n_modules,
                             kernel_params=kernel_params)
    S = pairwise_similarity(cand, base, kernel=kernel, n_modules=n_modules,
                            **(kernel_params or {}))
    s = S[:, 0] if base.shape[0] == 1 else np.diagonal(S).copy()
    p = empirical_pvalue(s, null)
    if cand_1d and base_1d:
        return LineagePValue(float(s[0]), float(p[0]), int(null.size))
    return LineagePValue(s, p, int(null.size))
