"""The spectral signature of a model, and its flattened array layout.

A :class:`Signature` holds the spectra of every matrix of a model and the
(n_roles, n_layers) array of one metric of them (paper Sec. 4.1, the matrix
Z).  Estimators see signatures flattened module-major: feature
``j = role_index * n_layers + layer`` (``docs/design.md``).
"""

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import SpectralWarning
from .spectral import METRICS, compute_metric

#: The module roles of a signature, its rows in this order (paper Sec. 4.1).
ROLES = ("q", "k", "v", "o", "gate", "up", "down")

__all__ = [
    "MatrixEntry",
    "ROLES",
    "Signature",
    "as_profiles",
    "check_n_modules",
    "feature_names",
    "flatten",
    "metric_name",
    "resample_depth",
    "signature_values",
    "unflatten",
]


@dataclass(frozen=True)
class MatrixEntry:
    """Where one decomposed matrix sits in a signature."""

    label: str
    role: str
    layer: int
    expert: int | None = None


def metric_name(metric):
    """The name a signature records for ``metric`` (a callable's ``__name__``)."""
    return metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")


def signature_values(entries, spectra, metric, n_layers, roles=ROLES):
    """The (n_roles, n_layers) array of ``metric`` over a model's spectra.

    Experts of one (role, layer) are averaged (paper Sec. 5.4), ignoring
    experts whose metric is undefined; a (role, layer) with no matrix is NaN.

    Parameters
    ----------
    entries : sequence of MatrixEntry
    spectra : dict of str to ndarray
        Eigenvalues by entry label.
    metric : str or callable
        See :func:`sklearn_specsig.spectral.compute_metric`.
    n_layers : int
    roles : sequence of str, default=ROLES

    Returns
    -------
    ndarray of shape (len(roles), n_layers)
    """
    row_of = {role: i for i, role in enumerate(roles)}
    sums = np.zeros((len(roles), n_layers))
    counts = np.zeros((len(roles), n_layers))
    for entry in entries:
        value = compute_metric(metric, spectra[entry.label], name=entry.label)
        if not math.isnan(value):
            sums[row_of[entry.role], entry.layer] += value
            counts[row_of[entry.role], entry.layer] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True, eq=False)
class Signature:
    """The spectral signature of one model.

    Attributes
    ----------
    values : ndarray of shape (7, n_layers)
        The metric by module role (rows ``q, k, v, o, gate, up, down``) and
        layer; NaN where the architecture has no such module.
    roles : tuple of str
    n_layers : int
    architecture : str
        The model type (``config.json``'s ``model_type``, GGUF's
        ``general.architecture``), else the naming scheme that mapped it.
    metric : str
    fingerprint : str
        Content hash of the matrices the signature was computed from.
    spectra : dict of str to ndarray
        Eigenvalues (float32, ascending) of every matrix, by label.
    entries : tuple of MatrixEntry
        Role, layer and expert of every label in ``spectra``.
    source : str or None
        What the signature was computed from, as given.
    """

    values: np.ndarray
    roles: tuple
    n_layers: int
    architecture: str
    metric: str
    fingerprint: str
    spectra: dict = field(repr=False)
    entries: tuple = field(repr=False)
    source: str | None = None

    def with_metric(self, metric):
        """The same model under another metric, from the stored spectra.

        Parameters
        ----------
        metric : str or callable

        Returns
        -------
        Signature
        """
        values = signature_values(
            self.entries, self.spectra, metric, self.n_layers, self.roles
        )
        return Signature(
            values=values,
            roles=self.roles,
            n_layers=self.n_layers,
            architecture=self.architecture,
            metric=metric_name(metric),
            fingerprint=self.fingerprint,
            spectra=self.spectra,
            entries=self.entries,
            source=self.source,
        )

    def undefined_matrices(self):
        """Matrices that are there but whose metric is undefined, and why.

        A role the architecture lacks (GPT-2 has no ``gate``) has no matrix
        and is not listed: its NaN row is by design.  See
        :meth:`missing_layers` for a role found at some layers only.

        Returns
        -------
        dict of str to str
            Tensor label -> the reason its value is NaN (the text of the
            :class:`~sklearn_specsig.errors.SpectralWarning` the metric
            gives, e.g. a rank below N/2 or non-finite weights).
        """
        metric = self.metric if self.metric in METRICS else None
        reasons = {}
        for entry in self.entries:
            eig = self.spectra[entry.label]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SpectralWarning)
                if metric is None:  # a callable metric: only NaN weights can be told
                    value = np.nan if np.isnan(eig).any() else 0.0
                else:
                    value = compute_metric(metric, eig, name=entry.label)
            if math.isnan(value):
                said = [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]
                reasons[entry.label] = (
                    "; ".join(dict.fromkeys(said))
                    or f"{self.metric} is NaN for {entry.label}"
                )
        return reasons

    def missing_layers(self):
        """Layers without a matrix, for roles that have matrices elsewhere.

        A role found in some blocks but not in others means that the
        checkpoint, or its naming scheme, left those blocks out.

        Returns
        -------
        dict of str to list of int
            Role -> the layers where it has no matrix; roles complete (or
            absent from every layer) are not listed.
        """
        layers = {}
        for entry in self.entries:
            layers.setdefault(entry.role, set()).add(entry.layer)
        return {
            role: [layer for layer in range(self.n_layers) if layer not in found]
            for role, found in layers.items()
            if len(found) < self.n_layers
        }

    def cell_tensors(self):
        """Which matrices went into each cell of :attr:`values`.

        Returns
        -------
        dict of (str, int) to tuple of str
            ``(role, layer)`` -> the labels of its matrices, in extraction
            order.  A label is the tensor's name, followed by ``[role]`` or
            ``[role:expert]`` when the tensor was cut into several matrices
            (a fused QKV, a stack of experts).  Cells with no matrix (NaN
            by design) are absent; a cell with several labels is the mean
            over them (experts).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_specsig.signature import MatrixEntry, Signature
        >>> entries = (
        ...     MatrixEntry("h.0.attn.c_attn.weight[q]", "q", 0),
        ...     MatrixEntry("h.0.attn.c_attn.weight[k]", "k", 0),
        ...     MatrixEntry("layers.0.experts.down[down:0]", "down", 0, 0),
        ...     MatrixEntry("layers.0.experts.down[down:1]", "down", 0, 1),
        ... )
        >>> sig = Signature(values=np.full((7, 1), np.nan), roles=("q", "k", "v", "o",
        ...                 "gate", "up", "down"), n_layers=1, architecture="demo",
        ...                 metric="alpha_hill", fingerprint="", spectra={}, entries=entries)
        >>> sig.cell_tensors()[("down", 0)]
        ('layers.0.experts.down[down:0]', 'layers.0.experts.down[down:1]')
        >>> sorted(sig.cell_tensors())
        [('down', 0), ('k', 0), ('q', 0)]
        """
        cells = {}
        for entry in self.entries:
            cells.setdefault((entry.role, entry.layer), []).append(entry.label)
        return {cell: tuple(labels) for cell, labels in cells.items()}

    def flatten(self, n_layers=None):
        """The 1-D feature vector (``docs/design.md``), optionally depth-resampled.

        Parameters
        ----------
        n_layers : int, optional
            Resample every profile onto this many points of relative depth.

        Returns
        -------
        ndarray of shape (7 * n_layers,)
        """
        values = self.values if n_layers is None else resample_depth(self.values, n_layers)
        return flatten(values)

    def __repr__(self):
        return (
            f"Signature(source={self.source!r}, architecture={self.architecture!r}, "
            f"metric={self.metric!r}, n_layers={self.n_layers}, "
            f"fingerprint={self.fingerprint[:12]!r})"
        )


def flatten(values):
    """Flatten (n_modules, n_layers) signatures module-major.

    Parameters
    ----------
    values : ndarray of shape (n_modules, n_layers) or (n_models, n_modules, n_layers)

    Returns
    -------
    ndarray of shape (n_modules * n_layers,) or (n_models, n_modules * n_layers)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.signature import flatten, unflatten
    >>> Z = np.arange(6.0).reshape(2, 3)
    >>> flatten(Z)
    array([0., 1., 2., 3., 4., 5.])
    >>> unflatten(flatten(Z)[None], n_modules=2)[0].tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 2:
        return values.reshape(-1)
    if values.ndim == 3:
        return values.reshape(values.shape[0], -1)
    raise ValueError(f"expected a 2-D or 3-D array of signatures, got shape {values.shape}.")


def unflatten(X, n_modules=len(ROLES)):
    """Inverse of :func:`flatten` for a 2-D array of flattened signatures.

    Parameters
    ----------
    X : array-like of shape (n_models, n_modules * n_layers)
    n_modules : int, default=7

    Returns
    -------
    ndarray of shape (n_models, n_modules, n_layers)
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array (n_models, n_features), got shape {X.shape}.")
    check_n_modules(X.shape[1], n_modules)
    return X.reshape(X.shape[0], n_modules, X.shape[1] // n_modules)


def check_n_modules(n_features, n_modules):
    """Raise a ValueError unless ``n_features`` splits into ``n_modules`` rows.

    The one check of the flattened layout that every estimator runs at its
    boundary.

    Parameters
    ----------
    n_features : int
    n_modules : int

    Returns
    -------
    n_layers : int
        ``n_features // n_modules``.
    """
    if n_modules < 1 or n_features % n_modules:
        raise ValueError(
            f"X has {n_features} features, which do not split into "
            f"n_modules={n_modules} module rows of equal depth; pass the "
            "n_modules the signatures were built with (7 for "
            "SpectralSignatureTransformer output, 1 for a generic array)."
        )
    return n_features // n_modules


def feature_names(n_layers, roles=ROLES):
    """Names ``"{role}_{layer:03d}"`` of the flattened features.

    Returns
    -------
    ndarray of str of shape (len(roles) * n_layers,)
    """
    return np.asarray(
        [f"{role}_{layer:03d}" for role in roles for layer in range(n_layers)],
        dtype=object,
    )


def resample_depth(values, n_layers):
    """Resample depth profiles onto ``n_layers`` points of relative depth.

    Layer ``l`` of a model of depth ``L`` sits at relative depth
    ``l / (L - 1)``; each row is linearly interpolated at
    ``linspace(0, 1, n_layers)`` over its finite values.  A row with no
    finite value stays NaN.

    Parameters
    ----------
    values : ndarray of shape (n_modules, L)
    n_layers : int

    Returns
    -------
    ndarray of shape (n_modules, n_layers)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.signature import resample_depth
    >>> resample_depth(np.array([[0.0, 2.0, 4.0]]), 5)
    array([[0., 1., 2., 3., 4.]])
    """
    values = np.asarray(values, dtype=float)
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1:
        raise ValueError(f"n_layers={n_layers!r} must be a positive int or None.")
    depth = values.shape[1]
    source = np.linspace(0.0, 1.0, depth) if depth > 1 else np.zeros(1)
    target = np.linspace(0.0, 1.0, n_layers) if n_layers > 1 else np.full(1, 0.5)
    out = np.full((values.shape[0], n_layers), np.nan)
    for i, row in enumerate(values):
        finite = np.isfinite(row)
        if finite.sum() == 1:
            out[i] = row[finite][0]
        elif finite.any():
            out[i] = np.interp(target, source[finite], row[finite])
    return out


def _profile_of(item, n_modules):
    values = np.asarray(getattr(item, "values", item), dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != n_modules:
        raise ValueError(
            f"a signature of shape {values.shape} is not an (n_modules, n_layers) "
            f"profile with n_modules={n_modules} rows."
        )
    return values


def as_profiles(X, n_modules=len(ROLES), *, n_layers=None, common_depth=True,
                hint="set n_layers=<int> to resample them onto a common "
                     "relative-depth grid"):
    """Signatures, profiles or flattened rows as depth profiles.

    The one coercion of the package: the transformer, the kernels, the
    alignment and the command line all turn what they are given into
    (n_modules, n_layers) profiles here, so that the checks and the message
    about different depths are the same everywhere.

    Parameters
    ----------
    X : sequence of Signature or (n_modules, L) arrays, or array-like
        A list or tuple of :class:`Signature` objects or 2-D profiles (their
        depths may differ); a 3-D array ``(n_models, n_modules, L)``; or a
        2-D array of flattened rows ``(n_models, n_modules * L)``.
    n_modules : int, default=7
        Module rows per signature.
    n_layers : int, optional
        Resample every profile onto this many points of relative depth
        (:func:`resample_depth`).  None keeps each native depth.
    common_depth : bool, default=True
        Require one depth (after resampling) and return a 3-D array.
        False returns a list of (n_modules, L_i) arrays, whatever their depths.
    hint : str
        What the error for different depths tells the user to do (the
        option of the caller: ``n_layers=``, ``--n-layers``, ``depth=``).

    Returns
    -------
    ndarray of shape (n_models, n_modules, L), or list of ndarray
        Float64 profiles, NaN kept.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.signature import as_profiles
    >>> as_profiles([np.zeros((7, 3)), np.ones((7, 3))]).shape
    (2, 7, 3)
    >>> as_profiles([np.zeros((7, 3)), np.ones((7, 5))], n_layers=4).shape
    (2, 7, 4)
    >>> as_profiles([np.zeros((7, 3)), np.ones((7, 5))])
    Traceback (most recent call last):
    ...
    ValueError: the signatures have different depths [3, 5]; set n_layers=<int> \
to resample them onto a common relative-depth grid.
    """
    if isinstance(X, (list, tuple)) and X and all(
            isinstance(z, Signature) or np.ndim(getattr(z, "values", z)) == 2 for z in X):
        profiles = [_profile_of(z, n_modules) for z in X]
    else:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 3:
            profiles = [_profile_of(z, n_modules) for z in X]
        else:
            profiles = list(unflatten(X, n_modules))
    if n_layers is not None:
        profiles = [resample_depth(z, n_layers) for z in profiles]
    if not common_depth:
        return profiles
    depths = sorted({z.shape[1] for z in profiles})
    if len(depths) > 1:
        raise ValueError(f"the signatures have different depths {depths}; {hint}.")
    if not profiles:
        return np.empty((0, n_modules, 0))
    return np.stack(profiles)
