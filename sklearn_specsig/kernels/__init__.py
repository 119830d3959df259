"""Similarity kernels between spectral signatures (paper Eq. 2, 6 and 7).

Four rooms, every import pointing down:

- :mod:`._spearman`: the one Spearman core (ranks kept as integers, so
  that a pair's similarity is the same bits however it is computed);
- :mod:`._pairwise`: input checks, row chunks, the Spearman, RBF and cosine
  matrices and :func:`pairwise_similarity`;
- :mod:`._alignment`: :func:`align_depth`, for models of different depths;
- :mod:`._module_kernel`: :class:`SpearmanModuleKernel`, the estimator.

numpy, scipy and scikit-learn only: nothing here loads torch.
"""

from ._alignment import AlignmentResult, align_depth
from ._module_kernel import SpearmanModuleKernel
from ._pairwise import (
    KERNELS,
    cosine_similarity,
    default_gamma,
    pairwise_similarity,
    rbf_similarity,
    spearman_similarity,
)

__all__ = [
    "KERNELS",
    "AlignmentResult",
    "SpearmanModuleKernel",
    "align_depth",
    "cosine_similarity",
    "default_gamma",
    "pairwise_similarity",
    "rbf_similarity",
    "spearman_similarity",
]
