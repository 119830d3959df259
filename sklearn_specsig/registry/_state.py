"""The registry in memory at one generation, and the answers computed on it.

Kept apart from :class:`~sklearn_specsig.registry.ModelIndex` (files,
signing) so that what a query returns is read in one place: the neighbours
(:class:`~sklearn_specsig.search.SignatureIndex` on the registry's grid),
their p-values against the cross-family null, and the verdict.
"""

import numpy as np

from ..provenance import empirical_pvalue
from ..search import SignatureIndex
from ..signature import ROLES, resample_depth
from ._null import verdict_pvalue

__all__ = ["RegistryState", "answer_profiles", "neighbours"]


class RegistryState:
    """The registry in memory at one generation (rebuilt when it moves)."""

    def __init__(self, generation, names, families, profiles, grid):
        self.generation = generation
        self.names = np.asarray(names, dtype=object)
        self.families = np.asarray(families, dtype=object)
        self.family_names = sorted({f for f in families if f is not None})
        code = {f: i for i, f in enumerate(self.family_names)}
        self.codes = np.array([code.get(f, -1) for f in families], dtype=np.intp)
        self.row_of = {n: i for i, n in enumerate(names)}
        n_modules = profiles[0].shape[0] if profiles else len(ROLES)
        self.P = (np.stack([p if p.shape[1] == grid else resample_depth(p, grid)
                            for p in profiles]) if profiles
                  else np.empty((0, n_modules, grid)))
        self.X = self.P.reshape(len(self.P), n_modules * grid)
        self.index = (SignatureIndex(n_modules=n_modules).fit(self.X)
                      if len(self.X) else None)
        self.labelled = np.flatnonzero(self.codes >= 0)
        self.mixed = 0 < len(self.labelled) < len(self.X)
        self._labelled_index = None
        self.null = None  # (sorted null, method, n_cross, tail), computed on demand

    def labelled_index(self):
        """An index over the labelled models alone, built the first time a
        query's top neighbours hold no labelled model (the verdict's best
        match must have a family)."""
        if self._labelled_index is None:
            self._labelled_index = SignatureIndex(n_modules=self.P.shape[1]).fit(
                self.X[self.labelled])
        return self._labelled_index


def neighbours(index, Q, k, exclude):
    """Top ``k`` of ``index`` for each query, leaving out row ``exclude[q]``."""
    n = index.n_samples_fit_
    extra = int((exclude >= 0).any())
    kk = min(k + extra, n)
    sim, ind = index.kneighbors(Q, n_neighbors=kk)
    if not extra:
        return sim, ind
    out_s = np.full((len(Q), k), np.nan)
    out_i = np.full((len(Q), k), -1, dtype=np.intp)
    for q in range(len(Q)):
        keep = ind[q] != exclude[q]
        s, i = sim[q][keep][:k], ind[q][keep][:k]
        out_s[q, :len(s)], out_i[q, :len(i)] = s, i
    return out_s, out_i


def _best_labelled(state, Q, sim, ind, excl):
    """Similarity and row of each query's best labelled model.

    The first labelled model among the neighbours found is the best one
    (they are sorted, ties by row, NaN last); a query whose neighbours are
    all unlabelled searches the labelled models alone.
    """
    labelled = (ind >= 0) & (state.codes[np.maximum(ind, 0)] >= 0)
    first = np.argmax(labelled, axis=1)
    found = labelled[np.arange(len(Q)), first]
    best_s = np.where(found, sim[np.arange(len(Q)), first], np.nan)
    best_row = np.where(found, ind[np.arange(len(Q)), first], -1)
    missing = np.flatnonzero(~found)
    if len(missing):
        position = np.full(len(state.names) + 1, -1)  # [-1] stays -1
        position[state.labelled] = np.arange(len(state.labelled))
        s, lab_row = neighbours(state.labelled_index(), Q[missing], 1, position[excl[missing]])
        best_s[missing] = s[:, 0]
        best_row[missing] = np.where(lab_row[:, 0] >= 0, state.labelled[lab_row[:, 0]], -1)
    return best_s, best_row


def answer_profiles(state, null, tail, profiles, *, top, alpha, exclude=None):
    """Neighbours, p-values and verdict of each (n_modules, L) profile.

    ``null`` is the sorted cross-family null of ``state`` and ``tail`` its
    :class:`~._null.VerdictTail`; ``exclude[i]``, a recorded name or None,
    is left out of query ``i``'s answer.
    """
    grid = state.P.shape[2]
    Q = np.stack([p if p.shape[1] == grid else resample_depth(p, grid) for p in profiles])
    Q = Q.reshape(len(Q), -1)
    excl = np.array([state.row_of.get(e, -1) if e is not None else -1
                     for e in (exclude or [None] * len(Q))])
    sim, ind = neighbours(state.index, Q, min(top, len(state.names)), excl)
    p_nb = empirical_pvalue(sim, null, assume_sorted=True)
    if not len(state.labelled):  # nothing to name: no evidence, p = 1
        best_s, best_row = np.full(len(Q), -np.inf), np.full(len(Q), -1)
    elif not state.mixed:
        best_s, best_row = sim[:, 0], ind[:, 0]
    else:
        best_s, best_row = _best_labelled(state, Q, sim, ind, excl)
    k = len(state.family_names)
    p_best = verdict_pvalue(best_s, tail, null.size, k)
    out = []
    for q in range(len(Q)):
        fam = state.families[best_row[q]] if best_row[q] >= 0 else None
        p = float(p_best[q])
        out.append({
            "verdict": {"family": fam if (fam is not None and p < alpha) else None,
                        "p_value": p},
            "neighbours": [
                {"name": state.names[i], "family": state.families[i],
                 "similarity": float(s), "p_value": float(pv)}
                for s, i, pv in zip(sim[q], ind[q], p_nb[q]) if i >= 0],
        })
    return out
