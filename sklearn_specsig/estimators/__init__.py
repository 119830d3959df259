"""scikit-learn estimators over spectral signatures, one module each."""

from ._lineage import LineageClassifier
from ._transformer import SpectralSignatureTransformer

__all__ = ["LineageClassifier", "SpectralSignatureTransformer"]
