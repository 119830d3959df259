"""The queue of matrices waiting for an eigensolve, flushed into the store."""

import warnings
from collections import defaultdict

import numpy as np

from ..errors import SpectralWarning
from ..spectral import spectra

#: Same-shape matrices solved in one batched call on a GPU.
CUDA_BATCH = 4


class SpectrumSolver:
    """Matrices to decompose, solved by shape and committed batch by batch.

    Parameters
    ----------
    device : torch.device
    precision : {"float32", "float64"}
    store : SignatureStore or None
        Every solved batch is committed at once, so an interrupted
        extraction keeps its work.
    progress_bar : tqdm
        Advanced by one per spectrum, solved or found.
    """

    def __init__(self, device, precision, store, progress_bar):
        self.device = device
        self.precision = precision
        self.store = store
        self.bar = progress_bar
        self.batch = CUDA_BATCH if device.type == "cuda" else 1
        self._pending = defaultdict(list)
        self._spectra = {}

    def found(self, stored):
        """Spectra that the store already had: counted, not solved."""
        self._spectra.update(stored)
        self.bar.update(len(stored))

    def add(self, key, label, matrix):
        """Queue one matrix under its spectrum key (``label`` names it in
        warnings)."""
        shape = tuple(matrix.shape)
        self._pending[shape].append((key, label, matrix))
        if len(self._pending[shape]) >= self.batch:
            self._flush(shape)

    def _flush(self, shape):
        batch = self._pending.pop(shape, [])
        if not batch:
            return
        eigs = spectra([m for _, _, m in batch], device=self.device, precision=self.precision)
        for (_, label, _), eig in zip(batch, eigs):
            if np.isnan(eig).any():
                warnings.warn(
                    f"{label} contains NaN or Inf weights; its metrics are "
                    "NaN. Check the checkpoint: it may be corrupted or badly "
                    "converted.",
                    SpectralWarning,
                    stacklevel=5,
                )
        solved = {key: e.astype(np.float32) for (key, _, _), e in zip(batch, eigs)}
        if self.store is not None:
            self.store.put_spectra(solved)
        self._spectra.update(solved)
        self.bar.update(len(solved))

    def close(self):
        """Solve what is still queued; return every spectrum by key."""
        for shape in list(self._pending):
            self._flush(shape)
        return self._spectra
