"""Signature-space distances and internal cluster-validity indices.

The one implementation behind :class:`~sklearn_specsig.SignatureClusterer`
and the public :func:`~sklearn_specsig.metrics.signature_distances`,
:func:`~sklearn_specsig.metrics.signature_silhouette` and
:func:`~sklearn_specsig.metrics.signature_davies_bouldin` (thin wrappers):
every index here is computed from the signature-space distance matrix
``D = max(1 - S, 0)`` (``S`` a similarity kernel of
:mod:`sklearn_specsig.kernels`), never from an embedding (paper Sec. 4.2 and
appendix 7.3).

NaN policy: a pair of signatures with no comparable module row (NaN
similarity) gets similarity 0, i.e. distance 1, with a ``UserWarning``
(:func:`signature_similarity`).
"""

import warnings

import numpy as np
from sklearn.metrics import silhouette_score

from .kernels import pairwise_similarity

__all__ = [
    "davies_bouldin_precomputed",
    "signature_distances",
    "signature_similarity",
    "silhouette_precomputed",
]


def signature_similarity(X, Y=None, *, metric="spearman", n_modules=7, kernel_params=None):
    """Similarity matrix of :func:`~sklearn_specsig.kernels.pairwise_similarity`, no NaN.

    A pair that shares no comparable module row (NaN similarity, e.g. a
    constant profile, or rows missing in one model where the other has
    them) gets similarity 0, the value of uncorrelated profiles ("no
    evidence either way"), with a warning: UMAP, the silhouette and
    spectral clustering cannot take NaN.

    Parameters
    ----------
    X : array-like of shape (n_x, n_modules * n_layers)
    Y : array-like of shape (n_y, n_modules * n_layers), default=None
        Defaults to ``X``.
    metric : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity kernel, as ``kernel`` of ``pairwise_similarity``.
    n_modules : int, default=7
    kernel_params : dict, default=None

    Returns
    -------
    S : ndarray of shape (n_x, n_y)
    """
    S = pairwise_similarity(X, Y, kernel=metric, n_modules=n_modules, **(kernel_params or {}))
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


def signature_distances(X, Y=None, *, metric="spearman", n_modules=7, kernel_params=None):
    """Signature-space distance ``max(1 - S, 0)`` of :func:`signature_similarity`.

    A pair with no comparable module row (NaN similarity) is at distance 1,
    with a ``UserWarning``, as :func:`signature_similarity` says.

    Parameters
    ----------
    X : array-like of shape (n_x, n_modules * n_layers)
    Y : array-like of shape (n_y, n_modules * n_layers), default=None
        Defaults to ``X``; the matrix is then symmetric with an exactly
        zero diagonal, as ``metric="precomputed"`` wants.
    metric : {"spearman", "rbf", "cosine"} or callable, default="spearman"
    n_modules : int, default=7
    kernel_params : dict, default=None

    Returns
    -------
    D : ndarray of shape (n_x, n_y)
        In [0, 2] for spearman / cosine, [0, 1) off the diagonal for rbf.
    """
    S = signature_similarity(X, Y, metric=metric, n_modules=n_modules,
                             kernel_params=kernel_params)
    D = np.maximum(1.0 - S, 0.0)
    if Y is None:
        D = (D + D.T) / 2.0  # a callable kernel may be asymmetric by rounding
        np.fill_diagonal(D, 0.0)
    return D


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
    labels : array-like of shape (n_samples,)
    noise_label : scalar or None, default=-1
        Label of noise points, excluded before scoring.
    strict : bool, default=False
        Raise ``ValueError`` instead of returning NaN when undefined.

    Returns
    -------
    float
        Lower is better; NaN when undefined (fewer than 2 clusters, or as
        many as points).  Coinciding centroids are handled as sklearn does.
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
