"""scikit-learn estimators over spectral signatures, one module each."""

from ._transformer import SpectralSignatureTransformer

__all__ = ["SpectralSignatureTransformer"]
