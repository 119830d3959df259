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
        labelled = np.flatnonzero(self.codes >= 0)
        self.labelled = labelled
        # A second index over the labelled models when some are not: the
        # verdict's best match must have a family.
        self.labelled_index = (
            SignatureIndex(n_modules=n_modules).fit(self.X[labelled])
            if 0 < len(labelled) < len(self.X) else None)
        self.null = None  # (sorted null, method, n_cross), computed on demand


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
    if state.labelled_index is None:
        best_s, best_row = sim[:, 0], ind[:, 0]
    elif len(state.labelled):
        position = np.full(len(state.names) + 1, -1)  # [-1] stays -1
        position[state.labelled] = np.arange(len(state.labelled))
        best_s, lab_row = neighbours(state.labelled_index, Q, 1, position[excl])
        best_s, lab_row = best_s[:, 0], lab_row[:, 0]
        best_row = np.where(lab_row >= 0, state.labelled[lab_row], -1)
    else:
        best_s, best_row = np.full(len(Q), np.nan), np.full(len(Q), -1)
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
