"""The engine: checkpoints in, spectra and signatures out, through the store.

``_extract`` streams a checkpoint's mapped tensors (``_prefetch``'s reader
thread), looks every matrix up in the store and queues the rest for the
eigensolver (``_solver``); ``_signing`` turns the spectra into a
:class:`~sklearn_specsig.Signature`, one model or many through joblib.
See ``docs/design.md``.
"""

from ._extract import Extraction, extract_spectra
from ._signing import compute_signature, sign_models

__all__ = ["Extraction", "compute_signature", "extract_spectra", "sign_models"]
