"""scikit-learn estimators over spectral signatures, one module each.

Each estimator is imported on first use (PEP 562), so that the similarity
estimators never load torch: only :class:`SpectralSignatureTransformer`
reads checkpoints, and it loads the engine (and torch) when it signs.
"""

import importlib

# Public name -> module of this package.
_ESTIMATORS = {
    "KNNPerformanceRegressor": "_regressor",
    "LineageClassifier": "_lineage",
    "SignatureClusterer": "_clusterer",
    "SpectralSignatureTransformer": "_transformer",
}

__all__ = sorted(_ESTIMATORS)


def __getattr__(name):
    if name in _ESTIMATORS:
        return getattr(importlib.import_module(f".{_ESTIMATORS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ESTIMATORS))
