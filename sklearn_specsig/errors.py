"""Exceptions and warnings raised by sklearn_specsig.

Every error derives from :class:`SpecsigError` *and* from the built-in
exception a caller would naturally catch (``FileNotFoundError``,
``ValueError``, ...), so ``except ValueError`` keeps working for code that does
not know this library.  Messages name the file or tensor at fault and say what
to do about it.
"""


class SpecsigError(Exception):
    """Base class of every error raised by sklearn_specsig."""


class CheckpointNotFoundError(SpecsigError, FileNotFoundError):
    """A path, directory or hub id does not lead to any weight file."""


class CheckpointAccessError(SpecsigError, PermissionError):
    """A weight or config file exists but this process may not read it."""


class CheckpointFormatError(SpecsigError, ValueError):
    """A weight file is truncated, corrupted, or in a format we cannot read."""


class UnsafeCheckpointError(SpecsigError, ValueError):
    """A checkpoint asks for something we refuse to do (run pickled code,
    read files outside its own directory)."""


class UnknownArchitectureError(SpecsigError, ValueError):
    """No registered naming scheme maps the checkpoint's tensor names to
    module roles."""


class ConfigError(SpecsigError, ValueError):
    """``config.json`` is missing a value we need or disagrees with the
    tensors (e.g. a fused projection that does not split by the head counts)."""


class StoreError(SpecsigError, RuntimeError):
    """The signature store cannot be opened or is corrupted."""


class StoreVersionError(StoreError):
    """The store file was written by a newer format version of the library."""


class DownloadError(SpecsigError, ConnectionError):
    """Weights could not be downloaded (no network, index unreachable, ...)."""


class SpectralWarning(UserWarning):
    """A metric is undefined for a matrix (rank-deficient, all zeros, ...)
    and was set to NaN."""


class StoreWarning(UserWarning):
    """Stored spectra failed their checksum and are being recomputed."""


class RegistryWarning(UserWarning):
    """A model registry records or compares a model less finely than given
    (its profile resampled onto a coarser grid of relative depth)."""
