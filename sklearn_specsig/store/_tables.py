"""The tables of the store, and the SQL that reads and writes their rows.

What each table holds and why is said in the package docstring.  Kept
apart from :mod:`._sqlite` (connections, transactions, recovery) so that the
row format, which older versions of the library read too, is read in one
place: a change here must keep those readers working or bump
:data:`~._keys.FORMAT_VERSION`.
"""

import zlib

import numpy as np

__all__ = [
    "DELETE_CHECKSUM",
    "DELETE_SPECTRUM",
    "INSERT_CHECKSUM",
    "INSERT_SPECTRUM",
    "SCHEMA",
    "SELECT_SPECTRA",
    "decode_spectrum",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spectra (
    key TEXT PRIMARY KEY,
    n INTEGER NOT NULL,
    eigenvalues BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spectrum_checksums (
    key TEXT PRIMARY KEY,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    fingerprint TEXT NOT NULL,
    settings TEXT NOT NULL,
    architecture TEXT NOT NULL,
    n_layers INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (fingerprint, settings)
);
CREATE TABLE IF NOT EXISTS sources (
    stat_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL
);
"""


def decode_spectrum(n, blob, crc):
    """Float32 eigenvalues of a stored row, or None if it is damaged.

    ``crc`` is None for a row without a checksum (written by a version of
    the library before checksums): it is accepted when its length is right.
    """
    blob = bytes(blob)
    if len(blob) != 4 * n or (crc is not None and zlib.crc32(blob) != crc):
        return None
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


SELECT_SPECTRA = (
    "SELECT s.{id}, s.n, s.eigenvalues, c.crc FROM spectra AS s "
    "LEFT JOIN spectrum_checksums AS c ON c.key = s.key "
)
INSERT_SPECTRUM = "INSERT OR IGNORE INTO spectra VALUES (?, ?, ?, ?)"
# A checksum goes in only if the stored row holds these very bytes: when
# another writer's (or an older version's) row was there first, ours was
# ignored and must not be checked against.
INSERT_CHECKSUM = (
    "INSERT OR IGNORE INTO spectrum_checksums SELECT ?, ? "
    "WHERE EXISTS (SELECT 1 FROM spectra WHERE key = ? AND eigenvalues = ?)"
)
# Compare-and-delete: a row another process has meanwhile replaced with a
# good one is left alone.
DELETE_SPECTRUM = "DELETE FROM spectra WHERE key = ? AND eigenvalues = ?"
DELETE_CHECKSUM = "DELETE FROM spectrum_checksums WHERE key = ? AND crc IS ?"
