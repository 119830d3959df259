"""Metrics of a spectrum: PL_Alpha_Hill and the scale metrics.

Pure numpy functions of the ascending eigenvalues of a Gram matrix (the
squared singular values of a weight matrix); no torch, no I/O.  Each takes
an optional ``name`` that only its warnings use.
"""

import math
import warnings

import numpy as np

from ..errors import SpectralWarning

__all__ = [
    "METRICS",
    "alpha_hill",
    "alpha_weighted",
    "compute_metric",
    "log_alpha_norm",
    "log_norm",
    "log_spectral_norm",
    "spectral_norm",
    "stable_rank",
]


def _undefined(metric, name, reason):
    warnings.warn(
        f"{metric} is undefined for {name or 'a matrix'} ({reason}); "
        "its value is NaN.",
        SpectralWarning,
        stacklevel=3,
    )
    return math.nan


def _as_spectrum(eigenvalues, metric, name):
    """Sorted float64 copy of a spectrum, or None (with a warning) when it
    holds NaN or Inf, as it does for a matrix with non-finite weights."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1:
        raise ValueError(f"a spectrum is a 1-D array, got shape {lam.shape}.")
    if not np.isfinite(lam).all():
        _undefined(metric, name, "its weights or eigenvalues are NaN or Inf")
        return None
    return np.sort(np.clip(lam, 0.0, None))


def alpha_hill(eigenvalues, *, name=None, convention="net_esd"):
    """PL_Alpha_Hill, the Hill estimate of the power-law tail index.

    With the ``N`` ascending eigenvalues λ, ``i = N // 2`` and
    ``x_min = λ[i]``, the tail is ``λ[i:]`` (``n = N - i`` values, ``x_min``
    included) and ``α = 1 + n / Σ ln(λ[j] / x_min)``.  This is
    ``net_esd_estimator(fix_fingers="xmin_mid")``, the code of the paper's
    group, and the library's definition.

    Parameters
    ----------
    eigenvalues : array-like of shape (N,)
        A spectrum (any order).
    name : str, optional
        Tensor name used in the warning when α is undefined.
    convention : {"net_esd", "paper"}, default="net_esd"
        ``"paper"`` follows Eq. 1 of the paper literally: ``k = N // 2`` top
        eigenvalues, ``x_min = λ[N - k - 1]``, one rank *below* the tail and
        not part of it.  The two differ slightly; ``"net_esd"`` is the
        reference.

    Returns
    -------
    float
        α, or NaN (with a :class:`~sklearn_specsig.errors.SpectralWarning`)
        when ``N <= 1``, ``x_min <= 0`` (rank below ``N / 2``, e.g. a LoRA
        delta or an all-zero matrix) or the tail is flat.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.spectral import alpha_hill
    >>> lam = np.array([1.0, 1.0, np.e, np.e ** 2])
    >>> float(alpha_hill(lam))  # tail [e, e^2] over x_min = e: 1 + 2 / 1
    3.0
    """
    lam = _as_spectrum(eigenvalues, "alpha_hill", name)
    if lam is None:
        return math.nan
    n_eig = lam.size
    if n_eig <= 1:
        return _undefined("alpha_hill", name, f"{n_eig} eigenvalue(s)")
    if convention == "net_esd":
        i = n_eig // 2
        tail = lam[i:]
        x_min = lam[i]
    elif convention == "paper":
        k = n_eig // 2
        tail = lam[n_eig - k :]
        x_min = lam[n_eig - k - 1]
    else:
        raise ValueError(f"convention={convention!r}; use 'net_esd' or 'paper'.")
    if not x_min > 0.0:
        return _undefined(
            "alpha_hill", name, "x_min is zero: the matrix has rank below N/2"
        )
    log_sum = float(np.sum(np.log(tail / x_min)))
    if not log_sum > 0.0 or not math.isfinite(log_sum):
        return _undefined("alpha_hill", name, "the tail of the spectrum is flat")
    return 1.0 + tail.size / log_sum


def _log10_positive(value, metric, name):
    if not value > 0.0:
        return _undefined(metric, name, "the matrix is all zeros")
    return math.log10(value)


def log_norm(eigenvalues, *, name=None):
    """``log10 Σλ``, the log of the squared Frobenius norm."""
    lam = _as_spectrum(eigenvalues, "log_norm", name)
    if lam is None:
        return math.nan
    return _log10_positive(float(np.sum(lam)), "log_norm", name)


def spectral_norm(eigenvalues, *, name=None):
    """``λ_max``, the largest eigenvalue (the squared largest singular value)."""
    lam = _as_spectrum(eigenvalues, "spectral_norm", name)
    if lam is None:
        return math.nan
    if lam.size == 0:
        return _undefined("spectral_norm", name, "empty spectrum")
    return float(lam[-1])


def log_spectral_norm(eigenvalues, *, name=None):
    """``log10 λ_max``."""
    lam = _as_spectrum(eigenvalues, "log_spectral_norm", name)
    if lam is None:
        return math.nan
    return _log10_positive(float(lam[-1]) if lam.size else 0.0, "log_spectral_norm", name)


def alpha_weighted(eigenvalues, *, name=None):
    """``α · log10 λ_max``, PL_Alpha_Hill weighted by the log spectral norm."""
    return alpha_hill(eigenvalues, name=name) * log_spectral_norm(eigenvalues, name=name)


def log_alpha_norm(eigenvalues, *, name=None):
    """``log10 Σ λ^α`` over all eigenvalues, with α = PL_Alpha_Hill."""
    alpha = alpha_hill(eigenvalues, name=name)
    if math.isnan(alpha):
        return math.nan
    lam = _as_spectrum(eigenvalues, "log_alpha_norm", name)
    # Σ λ^α overflows float64 for large λ and α: sum in log space.
    log_terms = alpha * np.log10(lam[lam > 0.0])
    top = float(log_terms.max())
    return top + math.log10(float(np.sum(10.0 ** (log_terms - top))))


def stable_rank(eigenvalues, *, name=None):
    """``Σλ / λ_max``, the stable rank."""
    lam = _as_spectrum(eigenvalues, "stable_rank", name)
    if lam is None:
        return math.nan
    if lam.size == 0 or not lam[-1] > 0.0:
        return _undefined("stable_rank", name, "the matrix is all zeros")
    return float(np.sum(lam) / lam[-1])


METRICS = {
    "alpha_hill": alpha_hill,
    "log_norm": log_norm,
    "spectral_norm": spectral_norm,
    "log_spectral_norm": log_spectral_norm,
    "alpha_weighted": alpha_weighted,
    "log_alpha_norm": log_alpha_norm,
    "stable_rank": stable_rank,
}


def compute_metric(metric, eigenvalues, *, name=None):
    """Value of ``metric`` on a spectrum.

    Parameters
    ----------
    metric : str or callable
        A key of :data:`METRICS` or a callable ``f(eigenvalues) -> float``.
    eigenvalues : array-like of shape (N,)
    name : str, optional
        Tensor name used in warnings.

    Returns
    -------
    float
    """
    if callable(metric):
        return float(metric(np.asarray(eigenvalues)))
    try:
        function = METRICS[metric]
    except KeyError:
        raise ValueError(
            f"metric={metric!r} is unknown; use one of {sorted(METRICS)} or a "
            "callable taking the eigenvalues."
        ) from None
    return function(eigenvalues, name=name)
