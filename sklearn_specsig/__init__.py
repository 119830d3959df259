"""Spectral signatures of large language models, with scikit-learn estimators.

Reads the weights of a model, turns every weight matrix into the spectrum of
its Gram matrix and a heavy-tail shape metric (PL_Alpha_Hill), and stacks
those by module role and depth into the model's *spectral signature*
(Zhang et al., "Spectral Signatures of Large Language Models", KDD '26).
"""

import importlib

__version__ = "0.1.0.dev0"

# Public name -> module.  Imported on first use, so that ``import
# sklearn_specsig`` stays cheap and a submodule can be used on its own.
_PUBLIC = {
    "compute_signature": "engine",
    "Signature": "signature",
    "SignatureStore": "store",
    "SpectralSignatureTransformer": "estimators",
    "LineageClassifier": "estimators",
    "KNNPerformanceRegressor": "estimators",
    "SignatureClusterer": "estimators",
    "SpearmanModuleKernel": "kernels",
    "align_depth": "kernels",
    "pairwise_similarity": "kernels",
    "SignatureIndex": "search",
    "lineage_pvalue": "provenance",
    "register_naming_scheme": "architectures",
    "NamingScheme": "architectures",
    "ROLES": "architectures",
    "SpecsigError": "errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        module = importlib.import_module(f".{_PUBLIC[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
