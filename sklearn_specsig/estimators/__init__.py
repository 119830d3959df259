"""scikit-learn estimators over spectral signatures, one module each."""

from ._lineage import LineageClassifier
from ._regressor import KNNPerformanceRegressor
from ._transformer import SpectralSignatureTransformer

__all__ = ["KNNPerformanceRegressor", "LineageClassifier", "SpectralSignatureTransformer"]
