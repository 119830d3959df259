"""Signature-space distances and internal cluster-validity indices.

The one implementation behind :class:`~sklearn_specsig.SignatureClusterer`
and the public :func:`signature_distances`, :func:`signature_silhouette`
and :func:`signature_davies_bouldin`: every index here is computed from the
signature-space distance matrix ``D = max(1 - S, 0)`` (``S`` a similarity
kernel of :mod:`sklearn_specsig.kernels`), never from an embedding (paper
Sec. 4.2 and appendix 7.3).

NaN policy, the same for every function here: a pair of signatures with no
comparable module row (NaN similarity) gets similarity 0, i.e. distance 1,
with a ``UserWarning``.
"""

import warnings

import numpy as np
from sklearn.metrics import silhouette_score

from ..kernels import pairwise_similarity

__all__ = [
    "davies_bouldin_precomputed",
    "signature_davies_bouldin",
    "signature_distances",
    "signature_similarity",
    "signature_silhouette",
    "silhouette_precomputed",
]


# -- similarity and distance -----------------------------------------------------


def _finite_similarity(X, Y, kernel, n_modules, kernel_params):
    """``pairwise_similarity`` with NaN (and inf) replaced by 0, warning once.

    The warning names the line that called the public function calling this
    one (``stacklevel=3``), not this module.
    """
    S = pairwise_similarity(X, Y, kernel=kernel, n_modules=n_modules, **kernel_params)
    bad = np.argwhere(~np.isfinite(S))
    if len(bad):
        pairs = ", ".join(f"({i}, {j})" for i, j in bad[:5])
        warnings.warn(
            f"{len(bad)} pairs of signatures have no comparable module row "
            f"(similarity NaN), e.g. rows {pairs}: every module row one of them "
            "has is constant or missing in the other. They are given "
            "similarity 0 (distance 1, 'no evidence either way'); drop those "
            "models or check n_modules.",
            UserWarning,
            stacklevel=3,
        )
        S = np.where(np.isfinite(S), S, 0.0)
    return S


def signature_similarity(X, Y=None, *, kernel="spearman", n_modules=7, **kernel_params):
    """Similarity matrix of :func:`~sklearn_specsig.kernels.pairwise_similarity`, no NaN.

    A pair that shares no comparable module row (NaN similarity, e.g. a
    constant profile, or rows missing in one model where the other has
    them) gets similarity 0, the value of uncorrelated profiles ("no
    evidence either way"), with a warning: UMAP, the silhouette and
    spectral clustering cannot take NaN.

    Parameters
    ----------
    X : array-like of shape (n_x, n_modules * n_layers)
        Flattened signatures.
    Y : array-like of shape (n_y, n_modules * n_layers), default=None
        Defaults to ``X``.
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity kernel, as ``kernel`` of ``pairwise_similarity``.
    n_modules : int, default=7
        Module rows of a signature.
    **kernel_params
        Extra keyword arguments of the kernel, e.g. ``gamma`` for "rbf".

    Returns
    -------
    S : ndarray of shape (n_x, n_y)
        Finite everywhere.

    Warns
    -----
    UserWarning
        If a pair has no comparable module row (set to similarity 0).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.metrics import signature_similarity
    >>> X = np.array([[1.0, 2.0, 4.0], [1.0, 3.0, 2.0]])
    >>> signature_similarity(X, X[:1], n_modules=1)
    array([[1. ],
           [0.5]])
    """
    return _finite_similarity(X, Y, kernel, n_modules, kernel_params)


def signature_distances(X, Y=None, *, kernel="spearman", n_modules=7, **kernel_params):
    """Distance matrix ``max(1 - S, 0)`` between signatures, ``S`` of :func:`signature_similarity`.

    The distance :class:`~sklearn_specsig.SignatureClusterer` clusters with,
    and the one :func:`signature_silhouette` and
    :func:`signature_davies_bouldin` score in.

    Parameters
    ----------
    X : array-like of shape (n_x, n_modules * n_layers)
        Flattened signatures.
    Y : array-like of shape (n_y, n_modules * n_layers), default=None
        Defaults to ``X``; the matrix is then symmetric with an exactly zero
        diagonal, as ``metric="precomputed"`` of scikit-learn wants.
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity (:func:`sklearn_specsig.kernels.pairwise_similarity`).
    n_modules : int, default=7
        Module rows of a signature.
    **kernel_params
        Extra keyword arguments of the kernel, e.g. ``gamma`` for "rbf".

    Returns
    -------
    D : ndarray of shape (n_x, n_y)
        In [0, 2] for spearman / cosine, [0, 1) off the diagonal for rbf.

    Warns
    -----
    UserWarning
        If a pair has no comparable module row (NaN similarity: e.g. rows
        missing in one model where the other has them, or constant).  Such a
        pair is given similarity 0, i.e. distance 1 ("no evidence either
        way"), so the silhouette and clustering stay defined.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.metrics import signature_distances
    >>> Z = np.array([[1.0, 2.0, 3.0, 4.0],
    ...               [1.0, 2.0, 4.0, 3.0]])
    >>> signature_distances(Z, n_modules=1)
    array([[0. , 0.2],
           [0.2, 0. ]])
    """
    S = _finite_similarity(X, Y, kernel, n_modules, kernel_params)
    D = np.maximum(1.0 - S, 0.0)
    if Y is None:
        D = (D + D.T) / 2.0  # a callable kernel may be asymmetric by rounding
        # Also where a signature is incomparable with itself (S[i, i] NaN).
        np.fill_diagonal(D, 0.0)
    return D


# -- indices of a precomputed distance matrix ---------------------------------------


def _clustered(D, labels, noise_label, strict):
    """``D`` and ``labels`` over the clustered points, or ``(None, None)``.

    Points labelled ``noise_label`` (None: no noise) are left out.  An
    internal index is defined for 2 to n - 1 clusters of the remaining n
    points; otherwise ``(None, None)`` is returned, or with ``strict`` a
    ``ValueError`` is raised.
    """
    D = np.asarray(D, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.shape != (D.shape[0],):
        raise ValueError(f"labels has shape {labels.shape}, expected ({D.shape[0]},).")
    if noise_label is not None:
        keep = labels != noise_label
        D, labels = D[np.ix_(keep, keep)], labels[keep]
    n_labels = len(np.unique(labels))
    if 2 <= n_labels <= len(labels) - 1:
        return D, labels
    if strict:
        raise ValueError(f"Number of labels is {n_labels} on {len(labels)} clustered "
                         "points; the index needs at least 2 clusters and at most "
                         "n_samples - 1.")
    return None, None


def silhouette_precomputed(D, labels, *, noise_label=-1, strict=False):
    """Mean silhouette in the space of ``D``, noise left out.

    Parameters
    ----------
    D : ndarray of shape (n_samples, n_samples)
        Signature-space distances, zero diagonal.
    labels : array-like of shape (n_samples,)
        Cluster labels.
    noise_label : scalar or None, default=-1
        Label of noise points (HDBSCAN's -1), excluded before scoring.
    strict : bool, default=False
        Raise ``ValueError`` instead of returning NaN when undefined.

    Returns
    -------
    float
        ``sklearn.metrics.silhouette_score(D[m][:, m], labels[m],
        metric="precomputed")`` over the clustered points ``m``; NaN when it
        is undefined (fewer than 2 clusters, or as many as points).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics import pairwise_distances
    >>> from sklearn_specsig.metrics._cluster_indices import silhouette_precomputed
    >>> D = pairwise_distances([[0.0], [1.0], [5.0], [7.0], [3.0]])
    >>> round(silhouette_precomputed(D, [0, 0, 1, 1, -1]), 4)  # the point at 3 is noise
    0.7203
    >>> silhouette_precomputed(D, [0, 0, 0, 0, -1])
    nan
    """
    D, labels = _clustered(D, labels, noise_label, strict)
    if D is None:
        return float("nan")
    return float(silhouette_score(D, labels, metric="precomputed"))


def davies_bouldin_precomputed(D, labels, *, noise_label=-1, strict=False):
    """Davies-Bouldin index from a distance matrix, noise left out.

    :func:`sklearn.metrics.davies_bouldin_score` needs coordinates: the
    dispersion ``S_i`` is the mean distance of cluster ``i``'s points to its
    centroid and ``M_ij`` the distance between centroids (appendix 7.3,
    Eq. 9-10).  Both follow from pairwise distances alone, treating ``D`` as
    Euclidean (law of cosines / Huygens)::

        |x - c_i|^2   = mean_{b in i} D[x, b]^2 - W_i / 2
        |c_i - c_j|^2 = mean_{a in i, b in j} D[a, b]^2 - W_i / 2 - W_j / 2

    with ``W_i = mean_{a, b in i} D[a, b]^2``.  For points in a Euclidean
    space this is *exactly* ``davies_bouldin_score`` of the points; for the
    signature distance ``1 - S``, which is not Euclidean, it is the same
    index on the classical-MDS realisation of ``D`` with all its eigenvalues
    (the pseudo-Euclidean one), so the index uses the very distances the
    silhouette uses.  Truncating MDS to its positive eigenvalues instead
    would inflate the small within-family distances.  Squared norms that
    the negative part makes negative are clipped at 0.

    Parameters
    ----------
    D : ndarray of shape (n_samples, n_samples)
        Signature-space distances, zero diagonal.
    labels : array-like of shape (n_samples,)
        Cluster labels.
    noise_label : scalar or None, default=-1
        Label of noise points, excluded before scoring.
    strict : bool, default=False
        Raise ``ValueError`` instead of returning NaN when undefined.

    Returns
    -------
    float
        Lower is better; NaN when undefined (fewer than 2 clusters, or as
        many as points).  Coinciding centroids are handled as sklearn does.

    Examples
    --------
    >>> from sklearn.metrics import pairwise_distances
    >>> from sklearn_specsig.metrics._cluster_indices import davies_bouldin_precomputed
    >>> D = pairwise_distances([[0.0], [1.0], [5.0], [7.0]])
    >>> round(davies_bouldin_precomputed(D, [0, 0, 1, 1]), 4)  # (0.5 + 1) / 5.5
    0.2727
    """
    D, labels = _clustered(D, labels, noise_label, strict)
    if D is None:
        return float("nan")
    ks = np.unique(labels)
    D2 = D ** 2
    members = [np.flatnonzero(labels == k) for k in ks]
    # Mean squared distance of every point to every cluster: (n, k).
    to_cluster = np.stack([D2[:, idx].mean(axis=1) for idx in members], axis=1)
    within = np.array([to_cluster[idx, a].mean() for a, idx in enumerate(members)])
    spread = np.array([
        np.sqrt(np.maximum(to_cluster[idx, a] - within[a] / 2.0, 0.0)).mean()
        for a, idx in enumerate(members)
    ])
    between = np.stack([to_cluster[idx].mean(axis=0) for idx in members])  # (k, k)
    centroid2 = between - within[:, None] / 2.0 - within[None, :] / 2.0
    centroid = np.sqrt(np.maximum(centroid2, 0.0))
    np.fill_diagonal(centroid, 0.0)  # exactly, not up to rounding
    # As sklearn.metrics.davies_bouldin_score does, from here on.
    if np.allclose(spread, 0) or np.allclose(centroid, 0):
        return 0.0
    centroid[centroid == 0] = np.inf
    R = (spread[:, None] + spread[None, :]) / centroid
    return float(np.mean(np.max(R, axis=1)))


# -- indices of signatures -----------------------------------------------------------


def _distance_matrix(Z, kernel, n_modules, kernel_params):
    if isinstance(kernel, str) and kernel == "precomputed":
        D = np.asarray(Z, dtype=np.float64)
        if D.ndim != 2 or D.shape[0] != D.shape[1]:
            raise ValueError(f"kernel='precomputed' needs a square distance matrix, "
                             f"got shape {D.shape}.")
        return D
    return signature_distances(Z, kernel=kernel, n_modules=n_modules, **kernel_params)


def signature_silhouette(Z, labels, *, n_modules=7, kernel="spearman", noise_label=None,
                         **kernel_params):
    """Silhouette score of a clustering, in signature space (paper Sec. 4.2).

    :func:`sklearn.metrics.silhouette_score` on the precomputed distances
    ``1 - similarity`` of :func:`signature_distances`, never on an embedding
    (UMAP) used to find the clusters; the score
    :class:`~sklearn_specsig.SignatureClusterer` reports as ``silhouette_``.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_modules * n_layers)
        Flattened signatures, or with ``kernel="precomputed"`` a square
        distance matrix.
    labels : array-like of shape (n_samples,)
        Cluster of each signature.
    n_modules : int, default=7
        Module rows of a signature.
    kernel : {"spearman", "rbf", "cosine", "precomputed"} or callable, default="spearman"
        Similarity whose ``1 - S`` is the distance; incomparable pairs are
        at distance 1, with a warning (see :func:`signature_distances`).
    noise_label : scalar, default=None
        Points with this label (e.g. HDBSCAN's ``-1``) are left out.
    **kernel_params
        Extra keyword arguments of the kernel.

    Returns
    -------
    score : float
        In [-1, 1], higher is better.

    Raises
    ------
    ValueError
        Unless there are 2 to n - 1 clusters among the n points scored.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.metrics import signature_silhouette
    >>> rng = np.random.default_rng(0)
    >>> bases = rng.normal(size=(3, 7 * 8))
    >>> Z = np.repeat(bases, 4, axis=0) + 0.05 * rng.normal(size=(12, 56))
    >>> labels = np.repeat([0, 1, 2], 4)
    >>> bool(signature_silhouette(Z, labels) > 0.8)
    True
    """
    D = _distance_matrix(Z, kernel, n_modules, kernel_params)
    return silhouette_precomputed(D, labels, noise_label=noise_label, strict=True)


def signature_davies_bouldin(Z, labels, *, n_modules=7, kernel="spearman", noise_label=None,
                             **kernel_params):
    """Davies-Bouldin index of a clustering, in signature space.

    scikit-learn's :func:`~sklearn.metrics.davies_bouldin_score` needs
    centroids, hence coordinates.  Here the point-to-centroid and
    centroid-to-centroid distances are obtained from the pairwise distances
    ``d = 1 - similarity`` alone (law of cosines), so for distances between
    Euclidean points this *is* ``davies_bouldin_score`` of the points, and
    for ``1 - S`` it is that index on the exact (pseudo-Euclidean)
    classical-MDS embedding of the distances.  It is the value
    :class:`~sklearn_specsig.SignatureClusterer` reports as
    ``davies_bouldin_``.  Lower is better; 0 is the ideal.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_modules * n_layers)
        Flattened signatures, or with ``kernel="precomputed"`` a square
        distance matrix.
    labels : array-like of shape (n_samples,)
        Cluster of each signature.
    n_modules : int, default=7
        Module rows of a signature.
    kernel : {"spearman", "rbf", "cosine", "precomputed"} or callable, default="spearman"
        Similarity whose ``1 - S`` is the distance; incomparable pairs are
        at distance 1, with a warning (see :func:`signature_distances`).
    noise_label : scalar, default=None
        Points with this label (e.g. HDBSCAN's ``-1``) are left out.
    **kernel_params
        Extra keyword arguments of the kernel.

    Returns
    -------
    score : float

    Raises
    ------
    ValueError
        Unless there are 2 to n - 1 clusters among the n points scored.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics import davies_bouldin_score, pairwise_distances
    >>> from sklearn_specsig.metrics import signature_davies_bouldin
    >>> P = np.array([[0.0], [1.0], [5.0], [7.0]])
    >>> labels = [0, 0, 1, 1]
    >>> db = signature_davies_bouldin(pairwise_distances(P), labels, kernel="precomputed")
    >>> round(db, 4), round(float(davies_bouldin_score(P, labels)), 4)
    (0.2727, 0.2727)
    """
    D = _distance_matrix(Z, kernel, n_modules, kernel_params)
    return davies_bouldin_precomputed(D, labels, noise_label=noise_label, strict=True)
