"""Spectra of weight matrices and the metrics computed from them.

Two rooms, one arrow: :mod:`._solvers` (torch, BLAS, devices) computes a
*spectrum*, the ascending eigenvalues of the smaller Gram matrix of a weight
matrix (its squared singular values); :mod:`._metrics` (numpy only) turns a
spectrum into a number.  Every metric is a cheap function of a spectrum, so
changing the metric never re-reads a model.

The metrics are imported with this package; the solvers on first use, so
that code that only scores stored spectra (the kernels, the estimators)
never loads torch.  See ``docs/design.md``.
"""

import importlib

from ._metrics import (
    METRICS,
    alpha_hill,
    alpha_weighted,
    compute_metric,
    log_alpha_norm,
    log_norm,
    log_spectral_norm,
    spectral_norm,
    stable_rank,
)

_SOLVERS = ("X_MIN_FLOAT32_LIMIT", "reference_spectrum", "resolve_device", "spectra",
            "spectrum")

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
    *_SOLVERS,
]


def __getattr__(name):
    if name in _SOLVERS:
        return getattr(importlib.import_module("._solvers", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SOLVERS))
