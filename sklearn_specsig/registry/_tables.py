"""The registry's tables in its SQLite file, and how a row is encoded.

A registry file holds these tables next to the spectra cache's own (by
default the registry *is* the cache of the models it records, so the file
is self-contained).  Every change (an add, a remove) is one transaction that
also bumps ``generation``: a reader holding the registry in memory compares
its generation with the file's to know whether to reload, and the cached
null (``registry_null``) is valid only for the generation it was computed at.
"""

import sqlite3

import numpy as np

from ..store import use_wal

__all__ = [
    "REGISTRY_FORMAT",
    "SCHEMA",
    "decode_profile",
    "encode_profile",
    "set_up",
]

#: Format of the registry tables; a newer file is refused, not misread.
REGISTRY_FORMAT = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registry_models (
    name TEXT PRIMARY KEY,
    family TEXT,
    fingerprint TEXT NOT NULL,
    source TEXT,
    architecture TEXT,
    metric TEXT NOT NULL,
    n_modules INTEGER NOT NULL,
    n_layers INTEGER NOT NULL,
    profile BLOB NOT NULL,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_null (
    generation INTEGER PRIMARY KEY,
    method TEXT NOT NULL,
    n_cross INTEGER NOT NULL,
    similarities BLOB NOT NULL,
    tail TEXT NOT NULL
);
"""


def set_up(conn):
    """Create the tables (idempotent); return the file's registry format."""
    use_wal(conn)
    ready = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                         "name = 'registry_meta'").fetchone()[0]
    if ready:
        version = conn.execute(
            "SELECT value FROM registry_meta WHERE key = 'format'").fetchone()
        if version is not None:
            # Set up already: reading takes no lock, so opening a registry
            # never waits for another process's write.
            return int(version[0])
    with conn:
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO registry_meta VALUES ('format', ?)",
                     (str(REGISTRY_FORMAT),))
        conn.execute("INSERT OR IGNORE INTO registry_meta VALUES ('generation', '0')")
    (version,) = conn.execute(
        "SELECT value FROM registry_meta WHERE key = 'format'").fetchone()
    return int(version)


def encode_profile(values):
    """Little-endian float64 bytes of an (n_modules, n_layers) profile."""
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def decode_profile(blob, n_modules, n_layers):
    """The profile stored by :func:`encode_profile` (a read-only view of
    ``blob``), or None if damaged."""
    if len(blob) != 8 * n_modules * n_layers:
        return None
    return np.frombuffer(blob, dtype="<f8").reshape(n_modules, n_layers)


def is_contention(exc):
    """Another process holds the file (not damage)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))
