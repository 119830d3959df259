"""Top-k retrieval of the most similar stored signatures (a zoo search).

"Which of the 100,000 models on record is this checkpoint closest to?" is
a nearest-neighbour query under the signature similarity.  For the Spearman
module similarity (paper Eq. 2) every stored module row is ranked, centred
and scaled to unit norm *once*, at :meth:`SignatureIndex.fit`; a query is
then ranked the same way and scored against a chunk of the store by two
matrix products (sum of correlations, number of comparable rows), and the
best ``k`` so far are kept chunk by chunk (ties by lowest index, whatever
numpy's selection algorithm does with them).  Scores
equal :func:`sklearn_specsig.kernels.spearman_similarity` exactly (same
ranking code, same NaN rules).
"""

from numbers import Integral

import numpy as np
from sklearn import get_config
from sklearn.base import BaseEstimator
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._topk import select_top_k, top_k
from .kernels import _ranked_rows, pairwise_similarity
from .signature import check_n_modules

__all__ = ["SignatureIndex"]


class SignatureIndex(BaseEstimator):
    """Top-k most similar stored signatures, vectorised and chunked.

    Parameters
    ----------
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity (:func:`sklearn_specsig.kernels.pairwise_similarity`).
        ``"spearman"`` is the fast path: ranks of the stored signatures are
        precomputed at ``fit`` and a query costs two matrix products per
        chunk.  Other kernels call ``pairwise_similarity`` chunk by chunk
        (exact, but each query re-reads the whole store's values).
    n_modules : int, default=7
        Module rows of a flattened signature.
    kernel_params : dict, default=None
        Extra keyword arguments of the kernel.  For ``"rbf"`` without
        ``gamma``, ``gamma`` is fixed at ``fit`` from the whole store
        (``1 / (n_features * var)``, as ``rbf_similarity`` computes it from
        its references), so that chunking does not change the kernel.
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

    Notes
    -----
    The Spearman fast path stores a float64 ``(n_samples_fit_,
    n_features_in_ + n_modules)`` matrix of normalised ranks and usable-row
    flags besides ``X_fit_``: for 100,000 signatures of 7 x 32, 185 MB
    (and 179 MB for ``X_fit_``).  Neighbours are returned
    most similar first; exact ties go to the lowest index, at the k-th
    place too (whatever the chunking).
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
        self._params = dict(self.kernel_params or {})
        if self.kernel == "spearman":
            # One matrix [ranks | usable]: a query block [[RQ, 0], [0, VQ]]
            # then gets each pair's sum of correlations and number of
            # comparable rows from a single pass over the store.
            n, f = X.shape
            self._ranked = np.empty((n, f + self.n_modules))
            for rows in gen_batches(n, self.chunk_size):
                R, V = _ranked_rows(X[rows], self.n_modules)
                self._ranked[rows, :f], self._ranked[rows, f:] = R, V
        elif self.kernel == "rbf" and self._params.get("gamma") is None:
            finite = X[np.isfinite(X)]
            var = np.var(finite) if finite.size else 0.0
            self._params["gamma"] = (1.0 / (X.shape[1] * var) if var > 0
                                     else 1.0 / X.shape[1])
        return self

    def _scores(self, Q, QR, rows):
        """Similarities of the query block to the stored rows ``rows``."""
        if self.kernel == "spearman":
            both = QR @ self._ranked[rows].T
            total, count = both[: len(Q)], both[len(Q):]
            with np.errstate(invalid="ignore", divide="ignore"):
                S = np.where(count > 0, total / count, np.nan)
            return np.clip(S, -1.0, 1.0)
        return pairwise_similarity(Q, self.X_fit_[rows], kernel=self.kernel,
                                   n_modules=self.n_modules, **self._params)

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
        # Query blocks: about eight 8-byte (block, chunk) temporaries (scores,
        # the merged candidates, and select_top_k's keys and masks).
        budget = get_config()["working_memory"] * 2**20
        q_step = max(1, int(budget // (8 * 8 * self.chunk_size)))
        for qrows in gen_batches(n_q, q_step):
            Q = X[qrows]
            QR = None
            if self.kernel == "spearman":
                RQ, VQ = _ranked_rows(Q, self.n_modules)
                f = RQ.shape[1]
                QR = np.zeros((2 * len(Q), f + self.n_modules))
                QR[: len(Q), :f], QR[len(Q):, f:] = RQ, VQ
            # The running best k, kept in index order so that a merge with
            # the next chunk (whose indices are all higher) is in index
            # order too, and select_top_k breaks ties by index.
            best_s = np.empty((len(Q), 0))
            best_i = np.empty((len(Q), 0), dtype=np.intp)
            for rows in gen_batches(self.n_samples_fit_, self.chunk_size):
                S = self._scores(Q, QR, rows)
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
