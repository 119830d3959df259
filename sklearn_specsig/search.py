"""Top-k retrieval of the most similar stored signatures (a zoo search).

"Which of the 100,000 models on record is this checkpoint closest to?" is
a nearest-neighbour query under the signature similarity.  For the Spearman
module similarity (paper Eq. 2) every stored module row is ranked *once*, at
:meth:`SignatureIndex.fit`; a query is then ranked the same way and scored
against a chunk of the store by the Spearman core of
:mod:`sklearn_specsig.kernels._spearman` (one exact matrix product per
module), and the best ``k`` so far are kept chunk by chunk (ties by lowest
index, whatever numpy's selection algorithm does with them).

Scores equal :func:`sklearn_specsig.kernels.spearman_similarity` bit for
bit, at any ``chunk_size`` and query block: the core makes a pair's value a
function of the pair alone, which the tie rule needs (two stored copies of
one signature tie exactly, so the lower index wins in the index as in a
sort of the full matrix).

This room sits above :mod:`sklearn_specsig.kernels` and imports from it only.
"""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._topk import select_top_k, top_k
from .kernels import default_gamma, pairwise_similarity
from .kernels._pairwise import rows_per_block
from .kernels._spearman import rank_module_rows, spearman_from_ranks
from .signature import check_n_modules, unflatten

__all__ = ["SignatureIndex"]

# (query block, chunk) float64 temporaries of kneighbors at once: the
# scores, the merged candidates with their indices, and select_top_k's
# keys and masks.
_QUERY_TEMPORARIES = 8


class SignatureIndex(BaseEstimator):
    """Top-k most similar stored signatures, vectorised and chunked.

    Parameters
    ----------
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity (:func:`sklearn_specsig.kernels.pairwise_similarity`).
        ``"spearman"`` is the fast path: ranks of the stored signatures are
        precomputed at ``fit`` and a query costs one exact matrix product
        per module per chunk.  Other kernels call ``pairwise_similarity``
        chunk by chunk (exact, but each query re-reads the whole store's
        values).
    n_modules : int, default=7
        Module rows of a flattened signature.
    kernel_params : dict, default=None
        Extra keyword arguments of the kernel.  For ``"rbf"`` without
        ``gamma``, ``gamma`` is fixed at ``fit`` from the whole store
        (:func:`~sklearn_specsig.kernels.default_gamma`, as
        ``rbf_similarity`` computes it from its references), so that
        chunking does not change the kernel.
    chunk_size : int, default=65536
        Stored signatures scored per block.  Queries are processed in blocks
        too, sized so that a block's ``(n_queries, chunk_size)`` float64
        temporaries stay within scikit-learn's ``working_memory``; peak
        extra memory is therefore bounded whatever the store size.

    Attributes
    ----------
    n_samples_fit_ : int
        Number of stored signatures.
    n_features_in_ : int
        Features of a flattened signature.
    X_fit_ : ndarray of shape (n_samples_fit_, n_features_in_)
        The stored signatures (non-Spearman kernels score against these).
    ranked_ : RankedRows
        The integer ranks of every stored module row (``kernel="spearman"``
        only): what a query is scored against, and what other exact
        Spearman computations over the store (the registry's null) reuse.
    kernel_params_ : dict
        The kernel's keyword arguments in force: ``kernel_params`` with the
        RBF ``gamma`` fixed at ``fit``.  An index over a subset of the store
        given these scores it under the same kernel.

    Notes
    -----
    The Spearman fast path stores the integer ranks of every module row
    (float32 up to 369 layers, float64 beyond) and two float64 values per
    module row besides ``X_fit_``: for 100,000 signatures of 7 x 32, 101 MB (and
    179 MB for ``X_fit_``).  Neighbours are returned most similar first;
    exact ties go to the lowest index, at the k-th place too (whatever the
    chunking).
    Stored signatures with no module row comparable to the query (NaN
    similarity) come last, with NaN similarity.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.search import SignatureIndex
    >>> rng = np.random.default_rng(0)
    >>> zoo = rng.normal(size=(1000, 7 * 32))
    >>> index = SignatureIndex(n_modules=7).fit(zoo)
    >>> query = zoo[[42]] + 0.01 * rng.normal(size=(1, 224))
    >>> sim, ind = index.kneighbors(query, n_neighbors=3)
    >>> int(ind[0, 0]), bool(sim[0, 0] > 0.99), sim.shape
    (42, True, (1, 3))
    """

    _parameter_constraints = {
        "kernel": [StrOptions({"spearman", "rbf", "cosine"}), callable],
        "n_modules": [Interval(Integral, 1, None, closed="left")],
        "kernel_params": [dict, None],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, kernel="spearman", *, n_modules=7, kernel_params=None,
                 chunk_size=65536):
        self.kernel = kernel
        self.n_modules = n_modules
        self.kernel_params = kernel_params
        self.chunk_size = chunk_size


    def fit(self, X, y=None):
        """Store the signatures (and, for Spearman, their normalised ranks).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_modules * n_layers)
            Flattened signatures; NaN allowed.
        y : None
            Ignored.

        Returns
        -------
        self : SignatureIndex
        """
        self._validate_params()
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        check_n_modules(X.shape[1], self.n_modules)
        self.X_fit_ = X
        self.n_samples_fit_ = X.shape[0]
        self.kernel_params_ = dict(self.kernel_params or {})
        if self.kernel == "spearman":
            # Ranked in batches of at most 4,096 profiles: scipy's temporaries of a
            # larger batch cost memory (905 MB at 65,536 x 7 x 32) and no time.
            self.ranked_ = rank_module_rows(unflatten(X, self.n_modules),
                                            batch_size=min(self.chunk_size, 4096))
        elif self.kernel == "rbf" and self.kernel_params_.get("gamma") is None:
            self.kernel_params_["gamma"] = default_gamma(X)
        return self

    def _scores(self, Q, ranked_Q, rows):
        """Similarities of the query block to the stored rows ``rows``."""
        if self.kernel == "spearman":
            return spearman_from_ranks(ranked_Q, self.ranked_.take(rows))
        return pairwise_similarity(Q, self.X_fit_[rows], kernel=self.kernel,
                                   n_modules=self.n_modules, **self.kernel_params_)

    def kneighbors(self, X, n_neighbors=5, return_similarity=True):
        """The ``n_neighbors`` stored signatures most similar to each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)
            Query signatures.
        n_neighbors : int, default=5
            Number of neighbours, at most ``n_samples_fit_``.
        return_similarity : bool, default=True
            Also return the similarities.

        Returns
        -------
        similarity : ndarray of shape (n_queries, n_neighbors)
            Similarities, most similar first; only if ``return_similarity``.
        indices : ndarray of shape (n_queries, n_neighbors)
            Row indices into the fitted signatures.
        """
        check_is_fitted(self, "X_fit_")
        if (not isinstance(n_neighbors, Integral) or isinstance(n_neighbors, bool)
                or n_neighbors < 1):
            raise ValueError(f"n_neighbors={n_neighbors!r} must be a positive int.")
        if n_neighbors > self.n_samples_fit_:
            raise ValueError(
                f"Expected n_neighbors <= n_samples_fit, but n_neighbors = "
                f"{n_neighbors}, n_samples_fit = {self.n_samples_fit_}."
            )
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan",
                          dtype=np.float64)
        k = int(n_neighbors)
        n_q = X.shape[0]
        sims = np.empty((n_q, k))
        inds = np.empty((n_q, k), dtype=np.intp)
        q_step = rows_per_block(min(self.chunk_size, self.n_samples_fit_),
                                _QUERY_TEMPORARIES)
        for qrows in gen_batches(n_q, q_step):
            Q = X[qrows]
            ranked_Q = None
            if self.kernel == "spearman":
                ranked_Q = rank_module_rows(unflatten(Q, self.n_modules))
            # The running best k, kept in index order so that a merge with
            # the next chunk (whose indices are all higher) is in index
            # order too, and select_top_k breaks ties by index.
            best_s = np.empty((len(Q), 0))
            best_i = np.empty((len(Q), 0), dtype=np.intp)
            for rows in gen_batches(self.n_samples_fit_, self.chunk_size):
                S = self._scores(Q, ranked_Q, rows)
                idx = np.broadcast_to(np.arange(rows.start, rows.stop), S.shape)
                cand_s = np.concatenate([best_s, S], axis=1)
                cand_i = np.concatenate([best_i, idx], axis=1)
                if cand_s.shape[1] > k:
                    keep = select_top_k(cand_s, k)
                    cand_s = np.take_along_axis(cand_s, keep, axis=1)
                    cand_i = np.take_along_axis(cand_i, keep, axis=1)
                best_s, best_i = cand_s, cand_i
            sims[qrows], inds[qrows] = top_k(best_s, k, index=best_i)
        return (sims, inds) if return_similarity else inds

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
