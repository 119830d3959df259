"""scikit-learn estimators over spectral signatures, one module each."""

from ._clusterer import SignatureClusterer
from ._lineage import LineageClassifier
from ._regressor import KNNPerformanceRegressor
from ._transformer import SpectralSignatureTransformer

__all__ = [
    "KNNPerformanceRegressor",
    "LineageClassifier",
    "SignatureClusterer",
    "SpectralSignatureTransformer",
]
