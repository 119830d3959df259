"""The signature store: an embedded SQLite cache of spectra.

Reading weights and solving eigenproblems is the only expensive step of the
library, so its product, the spectrum of every matrix, is kept on disk:

``spectra``
    one row per decomposed matrix, keyed by a hash of the matrix's *content*
    (the bytes of the tensor it comes from, how it was split, the precision
    and the store's format version).  A re-saved copy of a model elsewhere, or
    a fine-tune that froze some matrices, hits the cache for those matrices.
``models``
    one row per model fingerprint and extraction settings: the list of
    matrices (label, module role, layer, expert, spectrum key) that make up
    its signature.
``sources``
    a memo from the files' (path, size, mtime) to the fingerprint, so that
    asking again for an unchanged checkpoint reads no weights at all.  A file
    modified in place changes its size or mtime and misses.

SQLite gives atomic transactions: a process killed mid-write leaves the
previous state, and WAL mode lets several processes (joblib workers) read
and write one file at once.

``spectrum_checksums``
    a CRC-32 of each spectrum's eigenvalue bytes, written in the same
    transaction.  SQLite does not checksum its pages, so a flipped bit inside
    a stored spectrum would otherwise go unnoticed; a spectrum that fails its
    check is removed and its matrix solved again.  The checksums live in a
    table of their own so that the ``spectra`` rows keep the layout older
    versions of the library read and write (rows those versions add have no
    checksum and are read unchecked).
"""

from ._connection import SQLiteFile, connect, file_kind, use_wal
from ._keys import (
    FORMAT_VERSION,
    code_digest,
    digest,
    model_fingerprint,
    plan_key,
    plan_stat_key,
    quick_key,
    settings_key,
    spectrum_key,
    stat_key,
    tensor_digest,
)
from ._sqlite import SignatureStore, default_cache_dir, resolve_store

__all__ = [
    "FORMAT_VERSION",
    "SQLiteFile",
    "SignatureStore",
    "code_digest",
    "connect",
    "default_cache_dir",
    "digest",
    "file_kind",
    "model_fingerprint",
    "plan_key",
    "plan_stat_key",
    "quick_key",
    "resolve_store",
    "settings_key",
    "spectrum_key",
    "stat_key",
    "tensor_digest",
    "use_wal",
]
