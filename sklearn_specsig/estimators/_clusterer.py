"""SignatureClusterer: unsupervised discovery of model families (paper Sec. 4.2)."""

import math
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.cluster import HDBSCAN, KMeans, SpectralClustering
from sklearn.exceptions import ConvergenceWarning
from sklearn.manifold import spectral_embedding
from sklearn.mixture import BayesianGaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..metrics._cluster_indices import (
    davies_bouldin_precomputed,
    signature_distances,
    signature_similarity,
    silhouette_precomputed,
)
from ._base import (
    KERNEL_CONSTRAINT,
    N_MODULES_CONSTRAINT,
    SignatureInputMixin,
    validate_signatures,
    validated_inputs,
)

__all__ = ["SignatureClusterer"]

_UMAP_METHODS = ("hdbscan", "bgmm", "kmeans")
_UMAP_RESERVED = ("metric", "random_state")
# Below this many models every fit is tiny: OpenMP / BLAS threads only add
# synchronisation (on a busy 2-core machine K-Means ran 5x slower with them).
_SINGLE_THREAD_BELOW = 5000


def _relabel(labels):
    """Clusters numbered 0, 1, ... in order of first appearance; -1 kept."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int64)
    clustered = labels >= 0
    _, first, inverse = np.unique(labels[clustered], return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    out[clustered] = rank[inverse]
    return out


class SignatureClusterer(SignatureInputMixin, ClusterMixin, BaseEstimator):
    """Cluster models by their spectral signatures (paper Sec. 4.2).

    Four pipelines, as in the paper: HDBSCAN, a Bayesian Gaussian mixture
    (BGMM) and K-Means on a UMAP embedding, and spectral clustering on the
    precomputed affinity, without UMAP.  The number of clusters (BGMM's
    ``n_components``, HDBSCAN's ``min_cluster_size``) is the candidate of
    highest silhouette, and the silhouette, like the Davies-Bouldin index,
    is measured in the *original signature space*, on the distance
    ``D = max(1 - S, 0)`` of the similarity kernel ``S`` (``kernel``),
    never in the embedding, so that the scores reflect the signatures and
    not the artefacts of UMAP.

    Parameters
    ----------
    method : {"spectral", "hdbscan", "bgmm", "kmeans"}, default="spectral"
        ``"spectral"``: :class:`~sklearn.cluster.SpectralClustering` with
        ``affinity="precomputed"`` on ``(1 + S) / 2`` (``S`` itself for
        ``kernel="rbf"``, already in [0, 1]).  The others run on
        ``embedding_``, UMAP of ``D`` with ``metric="precomputed"``:
        UMAP then sees exactly the distances the silhouette uses, NaN rows
        (a role an architecture lacks) are handled by the kernel, and the
        alpha scale, which the Spearman kernel ignores, cannot leak in.
        ``"hdbscan"`` is :class:`sklearn.cluster.HDBSCAN` (``copy=True``;
        it never sees ``D``, so its in-place overwrite of a precomputed
        matrix cannot bite), chosen over the ``hdbscan`` package for one
        API and no second compiled dependency: that package's
        ``approximate_predict`` would need a UMAP transform of new models,
        which :meth:`predict` does without; ``"bgmm"`` a full-covariance
        :class:`~sklearn.mixture.BayesianGaussianMixture` (see Notes);
        ``"kmeans"`` :class:`~sklearn.cluster.KMeans` with ``n_init=10``.
    n_clusters : "auto" or int, default="auto"
        ``"auto"`` selects over ``candidate_clusters`` by silhouette; an int
        fits that many clusters (BGMM components), ignoring
        ``candidate_clusters`` (with 1 the silhouette and Davies-Bouldin
        are NaN).  HDBSCAN finds the number itself and takes
        only ``"auto"``.
    n_modules : int, default=7
        Module rows of a flattened signature; the feature count must be a
        multiple of it.  ``n_modules=1`` treats a whole row as one profile.
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity kernel of the signature space
        (:func:`~sklearn_specsig.kernels.pairwise_similarity`); the distance
        is ``max(1 - S, 0)``.  A callable ``kernel(X, Y, **kernel_params)``
        returns the ``(n_x, n_y)`` similarity matrix (larger = closer).
    kernel_params : dict, default=None
        Extra keyword arguments of the kernel (e.g. ``gamma`` for "rbf").
    candidate_clusters : array-like of int, default=None
        Values tried when ``n_clusters="auto"``, e.g. ``range(2, 11)``:
        numbers of clusters
        (``n_components`` for BGMM, ``min_cluster_size`` for HDBSCAN).
        Values the data cannot take (a silhouette needs 2 to
        ``n_samples - 1`` clusters) are dropped.  None: 2 to
        ``max(10, sqrt(n_samples))`` clusters, at most ``n_samples - 1``;
        for HDBSCAN a ``min_cluster_size`` of 2 to ``min(10, n_samples // 2)``.
    umap_params : dict, default=None
        Keyword arguments of :class:`umap.UMAP`, over the defaults
        ``n_neighbors=min(15, n_samples - 2)``, ``n_components=min(5,
        n_samples - 2)``, ``min_dist=0.0`` (dense clusters, as UMAP's guide
        to clustering advises).  ``metric`` and ``random_state`` are set by
        the clusterer.  UMAP needs ``n_samples > n_neighbors + 1``.
    random_state : int, RandomState instance or None, default=None
        Seeds UMAP, K-Means, BGMM and spectral clustering.  With a seed UMAP
        runs single-threaded (reproducible); None lets it use all cores.
    metric : {"spearman", "rbf", "cosine"} or callable, default="deprecated"
        The similarity kernel, under its former name.

        .. deprecated:: 0.1
           ``metric`` was renamed ``kernel`` (the transformer's ``metric`` is
           the spectral metric, not a similarity) and will be removed in
           0.2; it still works, with a ``FutureWarning``.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training model, numbered in order of first
        appearance; -1 is HDBSCAN's noise.
    n_clusters_ : int
        Clusters found (noise not counted).
    best_candidate_ : int
        The candidate (or ``n_clusters``) that gave ``labels_``.
    selection_scores_ : dict of int to float
        Silhouette in signature space of every candidate tried (NaN where
        undefined, e.g. a single cluster).
    silhouette_ : float
        Silhouette of ``labels_`` on ``D`` (``metric="precomputed"``),
        noise excluded.
    davies_bouldin_ : float
        Davies-Bouldin index of ``labels_`` computed from ``D`` itself,
        noise excluded (see Notes).
    n_noise_ : int
        Models labelled noise (-1); always 0 except for HDBSCAN.
    embedding_ : ndarray of shape (n_samples, n_components)
        UMAP output, or for ``"spectral"`` the spectral embedding
        (``n_clusters_`` eigenvectors of the affinity's normalised
        Laplacian) that the labels were assigned on.
    X_fit_ : ndarray of shape (n_samples, n_features_in_)
        Training signatures, for :meth:`predict`.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when ``X`` has string feature names.

    See Also
    --------
    LineageClassifier : supervised: route a model to a known base.

    Notes
    -----
    *Davies-Bouldin.*  The index needs centroids, hence coordinates.  It is
    computed from ``D`` by the identities that give point-to-centroid and
    centroid-to-centroid distances from pairwise ones; for a Euclidean
    ``D`` this equals :func:`sklearn.metrics.davies_bouldin_score` on the
    points, and for ``1 - S`` it is the same index on the exact
    (pseudo-Euclidean) classical-MDS embedding of ``D``.  Raw flattened
    alphas were not used: their Euclidean geometry is not the signature
    space's, depends on the alpha scale and needs NaN imputation.

    *BGMM.*  With its default Wishart prior (the covariance of all the
    data) a family of a handful of models is too small to outweigh the
    prior and the mixture merges families.  The prior covariance is
    therefore the data covariance scaled by ``k ** (-2 / d)`` for ``k``
    components in ``d`` dimensions (``k`` equal clusters share the volume),
    and the weights have a finite Dirichlet prior, so that a candidate
    ``k`` means ``k`` components and the silhouette chooses among them.

    *HDBSCAN's noise* (label -1) is left out of the silhouette and the
    Davies-Bouldin index and counted in ``n_noise_``.  A candidate that
    calls more models noise can therefore score higher; compare
    ``n_noise_`` when reading ``silhouette_``.  UMAP tends to glue an
    isolated model to its nearest cluster, so few models end up noise.

    *Incomparable pairs.*  Two signatures with no module row comparable
    (a constant profile, or rows one model lacks; the kernel's NaN) get
    similarity 0, distance 1, the value of uncorrelated profiles, with a
    warning: UMAP, the silhouette and spectral clustering take no NaN.

    *predict.*  A new model joins the cluster of highest mean similarity
    to its members (average linkage in signature space, noise excluded);
    this rule is the same for all methods, never returns noise, and need
    not reproduce ``labels_`` on the training models.

    *Cost.*  UMAP (umap-learn, imported on first use) compiles with numba
    on its first call in a process, about 20 s; later fits of tens of
    models take milliseconds.  Below 5000 models the candidate fits run
    with one OpenMP / BLAS thread: on problems this small threads only add
    synchronisation (K-Means ran 5x slower with them on a busy 2-core
    machine).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig import SignatureClusterer
    >>> rng = np.random.default_rng(0)
    >>> bases = rng.normal(size=(3, 7 * 8))          # 3 families, 8 layers
    >>> X = np.repeat(bases, 4, axis=0) + 0.05 * rng.normal(size=(12, 56))
    >>> cl = SignatureClusterer(method="spectral", random_state=0).fit(X)
    >>> cl.labels_.tolist()
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    >>> cl.n_clusters_, round(cl.silhouette_, 2)
    (3, 0.98)
    >>> cl.predict(bases + 0.05 * rng.normal(size=bases.shape)).tolist()
    [0, 1, 2]
    """

    _parameter_constraints: dict = {
        "method": [StrOptions({"spectral", "hdbscan", "bgmm", "kmeans"})],
        "n_clusters": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "n_modules": N_MODULES_CONSTRAINT,
        "kernel": KERNEL_CONSTRAINT,
        "kernel_params": [dict, None],
        "candidate_clusters": ["array-like", None],
        "umap_params": [dict, None],
        "random_state": ["random_state"],
        "metric": [*KERNEL_CONSTRAINT, Hidden(StrOptions({"deprecated"}))],
    }

    def __init__(
        self,
        method="spectral",
        n_clusters="auto",
        *,
        n_modules=7,
        kernel="spearman",
        kernel_params=None,
        candidate_clusters=None,
        umap_params=None,
        random_state=None,
        metric="deprecated",
    ):
        self.method = method
        self.n_clusters = n_clusters
        self.n_modules = n_modules
        self.kernel = kernel
        self.kernel_params = kernel_params
        self.candidate_clusters = candidate_clusters
        self.umap_params = umap_params
        self.random_state = random_state
        self.metric = metric

    # -- validation -----------------------------------------------------

    def _resolve_kernel(self):
        """The kernel in force: ``kernel``, or the deprecated ``metric``."""
        if isinstance(self.metric, str) and self.metric == "deprecated":
            return self.kernel
        warnings.warn(
            "SignatureClusterer's parameter `metric` was renamed `kernel` in 0.1 "
            "and will be removed in 0.2; pass kernel= instead.",
            FutureWarning,
            stacklevel=4,  # _resolve_kernel < fit < _fit_context < the caller
        )
        if not (isinstance(self.kernel, str) and self.kernel == "spearman"):
            raise ValueError(
                f"both kernel={self.kernel!r} and the deprecated metric="
                f"{self.metric!r} are set; pass kernel only."
            )
        return self.metric

    def _check_layout(self, X, kernel):
        # n_modules is checked by validate_signatures; this is the kernel's need.
        n_features = X.shape[1]
        if isinstance(kernel, str) and kernel == "spearman" and n_features // self.n_modules < 2:
            raise ValueError(
                f"X has {n_features} feature(s), {n_features // self.n_modules} "
                f"layer(s) per module row at n_modules={self.n_modules}: a "
                "Spearman depth profile needs at least 2 layers."
            )

    def _min_samples(self):
        return 4 if self.method in _UMAP_METHODS else 3

    def _check_n_samples(self, n_samples):
        need = self._min_samples()
        if n_samples < need:
            why = ("UMAP needs n_samples > n_neighbors + 1 with n_neighbors >= 2"
                   if self.method in _UMAP_METHODS
                   else "a silhouette needs 2 clusters and a point more")
            raise ValueError(
                f"SignatureClusterer(method={self.method!r}) needs at least "
                f"{need} models to cluster ({why}); got {n_samples} sample(s)."
            )

    def _candidates(self, n_samples):
        """The values to try, and the label of what they are."""
        if self.method == "hdbscan":
            if self.n_clusters != "auto":
                raise ValueError(
                    f"n_clusters={self.n_clusters!r}: HDBSCAN finds the number of "
                    "clusters itself; use n_clusters='auto' and steer it with "
                    "candidate_clusters (values of min_cluster_size)."
                )
            lo, hi, what = 2, n_samples, "min_cluster_size"
            default = range(2, max(2, min(10, n_samples // 2)) + 1)
        else:
            lo, hi = 2, n_samples - 1
            what = "n_components" if self.method == "bgmm" else "n_clusters"
            if self.n_clusters != "auto":
                if self.n_clusters > hi:
                    raise ValueError(
                        f"n_clusters={self.n_clusters} needs at least "
                        f"{self.n_clusters + 1} models for a silhouette; got "
                        f"{n_samples} sample(s)."
                    )
                return [int(self.n_clusters)], what
            default = range(2, min(hi, max(10, math.isqrt(n_samples))) + 1)
        given = default if self.candidate_clusters is None else self.candidate_clusters
        values = []
        for c in np.asarray(list(given)).ravel():
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (Integral, np.integer)):
                raise TypeError(f"candidate_clusters must hold ints, got {c!r}.")
            if lo <= c <= hi and int(c) not in values:
                values.append(int(c))
        if not values:
            raise ValueError(
                f"no value of candidate_clusters={list(given)!r} is a usable {what} "
                f"for {n_samples} models (from {lo} to {hi})."
            )
        return values, what

    def _umap(self, D, seed):
        params = dict(self.umap_params or {})
        reserved = sorted(set(params) & set(_UMAP_RESERVED))
        if reserved:
            raise ValueError(
                f"umap_params may not set {reserved}: UMAP gets the signature-"
                "space distance as metric='precomputed' and the clusterer's "
                "random_state."
            )
        n = len(D)
        params.setdefault("n_neighbors", min(15, n - 2))
        params.setdefault("n_components", min(5, n - 2))
        params.setdefault("min_dist", 0.0)
        if not isinstance(params["n_neighbors"], Integral) or params["n_neighbors"] < 2:
            raise ValueError(f"umap_params n_neighbors={params['n_neighbors']!r} must be "
                             "an int of at least 2.")
        if n <= params["n_neighbors"] + 1:
            raise ValueError(
                f"UMAP with n_neighbors={params['n_neighbors']} needs more than "
                f"{params['n_neighbors'] + 1} models; got {n} sample(s). Lower "
                "umap_params['n_neighbors'] or cluster more models."
            )
        if seed is not None:
            params.setdefault("n_jobs", 1)  # what a seed forces; UMAP warns otherwise
        import umap  # heavy (numba): imported on first use

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "using precomputed metric", UserWarning)
            reducer = umap.UMAP(metric="precomputed", random_state=seed, **params)
            return np.asarray(reducer.fit_transform(D), dtype=np.float64)

    def _affinity(self, D):
        # rbf similarities are already in (0, 1]; spearman / cosine map [-1, 1] -> [0, 1].
        S = 1.0 - D
        rbf = isinstance(self._kernel, str) and self._kernel == "rbf"
        return S if rbf else (1.0 + S) / 2.0

    def _fit_one(self, c, data, seed):
        """Labels for one candidate value ``c`` (and whether it converged)."""
        if self.method == "spectral":
            model = SpectralClustering(n_clusters=c, affinity="precomputed",
                                       random_state=seed)
            return model.fit_predict(data), True
        if self.method == "kmeans":
            return KMeans(n_clusters=c, n_init=10, random_state=seed).fit_predict(data), True
        if self.method == "hdbscan":
            return HDBSCAN(min_cluster_size=c, copy=True).fit_predict(data), True
        d = data.shape[1]
        prior = np.atleast_2d(np.cov(data, rowvar=False)) * c ** (-2.0 / d)
        model = BayesianGaussianMixture(
            n_components=c, covariance_type="full",
            weight_concentration_prior_type="dirichlet_distribution",
            covariance_prior=prior + 1e-6 * np.eye(d), max_iter=500, random_state=seed,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            labels = model.fit_predict(data)
        return labels, model.converged_

    # -- fit -------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Cluster the signatures, choosing the number of clusters by silhouette.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_modules * n_layers)
            Flattened signatures (NaN allowed: a module row the architecture
            lacks).
        y : None
            Ignored.

        Returns
        -------
        self : SignatureClusterer
        """
        self._kernel = self._resolve_kernel()
        X = validate_signatures(self, X, reset=True)
        self._check_layout(X, self._kernel)
        n = X.shape[0]
        self._check_n_samples(n)
        candidates, what = self._candidates(n)
        with validated_inputs(self._kernel):
            D = signature_distances(X, kernel=self._kernel, n_modules=self.n_modules,
                                    **(self.kernel_params or {}))
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))

        if self.method == "spectral":
            data = self._affinity(D)
        else:
            data = self._umap(D, None if self.random_state is None else seed)

        scores, fits = {}, {}
        with threadpool_limits(limits=1 if n < _SINGLE_THREAD_BELOW else None):
            for c in candidates:
                labels, converged = self._fit_one(c, data, seed)
                fits[c] = (_relabel(labels), converged)
                scores[c] = silhouette_precomputed(D, fits[c][0])
        finite = [c for c in candidates if np.isfinite(scores[c])]
        if finite:
            best = max(finite, key=lambda c: scores[c])  # ties: the first tried
        else:
            best = candidates[0]
            if self.n_clusters == "auto":
                warnings.warn(
                    f"no {what} in {candidates} gave a defined silhouette (at least "
                    f"2 clusters); keeping {what}={best}.", UserWarning, stacklevel=2)
        labels, converged = fits[best]
        if not converged:
            warnings.warn(f"BayesianGaussianMixture with n_components={best} did not "
                          "converge in 500 iterations.", ConvergenceWarning, stacklevel=2)

        self.labels_ = labels
        self.n_clusters_ = int(labels.max() + 1)
        self.n_noise_ = int(np.sum(labels < 0))
        self.best_candidate_ = best
        self.selection_scores_ = scores
        self.silhouette_ = scores[best]
        self.davies_bouldin_ = davies_bouldin_precomputed(D, labels)
        if self.method == "spectral":
            self.embedding_ = spectral_embedding(
                data, n_components=max(self.n_clusters_, 1), drop_first=False,
                random_state=check_random_state(seed))
        else:
            self.embedding_ = data
        self.X_fit_ = X
        return self

    # -- predict ---------------------------------------------------------

    def predict(self, X):
        """Cluster of highest mean similarity to its members, in signature space.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)
            Flattened signatures of new models.

        Returns
        -------
        labels : ndarray of shape (n_queries,)
            Indices into the clusters of ``labels_``; never noise, except
            that all queries get -1 when the fit found no cluster.
        """
        check_is_fitted(self)
        X = validate_signatures(self, X, reset=False)
        self._check_layout(X, self._kernel)
        if self.n_clusters_ == 0:
            return np.full(X.shape[0], -1, dtype=np.int64)
        with validated_inputs(self._kernel):
            S = signature_similarity(X, self.X_fit_, kernel=self._kernel,
                                     n_modules=self.n_modules, **(self.kernel_params or {}))
        # Mean similarity to each cluster's members (noise, -1, in none).
        onehot = self.labels_[:, None] == np.arange(self.n_clusters_)[None, :]
        M = (S @ onehot) / onehot.sum(axis=0)
        return np.argmax(M, axis=1).astype(np.int64)
