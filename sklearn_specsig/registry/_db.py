"""Reading and writing a registry file: connections, transactions, rows.

Kept apart from :mod:`._index` (signing, search, p-values) so that the
guarantees of the file are read in one place:

- every change is one SQLite transaction (a killed process leaves the
  previous state, and a registry that opens and lists what was committed);
- two processes adding at once both land (SQLite serialises the writers;
  each waits for the other's lock within ``timeout``);
- a change bumps ``generation`` in the same transaction.
"""

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

from ..errors import StoreError, StoreVersionError
from ..store import SQLiteFile, connect
from ._tables import REGISTRY_FORMAT, decode_profile, encode_profile, is_contention, set_up

__all__ = ["RegistryFile", "Row", "resolve_registry_path"]

#: Columns of a recorded model, in the order of ``registry_models``.
Row = tuple  # (name, family, fingerprint, source, architecture, metric, n_modules,
#               n_layers, profile, added)

_COLUMNS = ("name, family, fingerprint, source, architecture, metric, n_modules, "
            "n_layers, profile, added")
# The same columns up to n_layers, without the profile.
_LISTED = "name, family, fingerprint, source, architecture, metric, n_modules, n_layers"


def resolve_registry_path(path):
    """The registry's file: ``path`` itself, or ``path / "registry.sqlite"``
    for a directory."""
    path = Path(os.fspath(path)).expanduser()
    return path / "registry.sqlite" if path.is_dir() else path


class RegistryFile(SQLiteFile):
    """One registry file; each process (and thread) opens its own connection."""

    def __init__(self, path, timeout=60.0):
        super().__init__(resolve_registry_path(path), timeout)

    def _new_connection(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn, version = connect(self.path, self.timeout, set_up)
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc, "cannot be opened") from exc
        if version > REGISTRY_FORMAT:
            conn.close()
            raise StoreVersionError(
                f"The registry {self.path} has format {version}, newer than this "
                f"library's {REGISTRY_FORMAT}. Upgrade sklearn_specsig to read it."
            )
        return conn

    def _failed(self, exc, what="failed"):
        if is_contention(exc):
            return StoreError(
                f"The registry {self.path} is busy: another process held it for "
                f"more than timeout={self.timeout} s ({exc}). Try again; the file "
                "is not damaged."
            )
        return StoreError(
            f"The registry {self.path} {what} ({exc}). If the file is damaged, "
            "restore it from a copy: the registry is a record, not a cache."
        )

    def _read(self, sql, params=()):
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) from exc

    def _write(self, work):
        """Run ``work(conn)`` in one IMMEDIATE transaction that also bumps the
        generation; return what ``work`` returns."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("UPDATE registry_meta SET value = CAST(value AS INTEGER) + 1 "
                             "WHERE key = 'generation'")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) from exc
        return result

    # -- meta -------------------------------------------------------------------

    def generation(self):
        return int(self._read(
            "SELECT value FROM registry_meta WHERE key = 'generation'")[0][0])

    def meta(self, key):
        rows = self._read("SELECT value FROM registry_meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta_once(self, key, value):
        """Set ``key`` unless it is set; return the value in force."""
        conn = self._connection()
        try:
            with conn:
                conn.execute("INSERT OR IGNORE INTO registry_meta VALUES (?, ?)",
                             (key, str(value)))
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) from exc
        return self.meta(key)

    # -- models -----------------------------------------------------------------

    def names_by_source(self, sources):
        """``{source: name}`` of the recorded models signed from ``sources``
        (the first name by sort order where one source has several)."""
        found = {}
        for source in sources:
            rows = self._read("SELECT name FROM registry_models WHERE source = ? "
                              "ORDER BY name LIMIT 1", (source,))
            if rows:
                found[source] = rows[0][0]
        return found

    def count(self):
        """Number of recorded models."""
        return int(self._read("SELECT count(*) FROM registry_models")[0][0])

    def rows(self, names=None):
        """Recorded rows ordered by name (all, or those of ``names``), without
        their profiles (listing a large registry reads no signature)."""
        if names is None:
            return self._read(f"SELECT {_LISTED} FROM registry_models ORDER BY name")
        found = []
        for name in names:
            found += self._read(f"SELECT {_LISTED} FROM registry_models WHERE name = ?",
                                (name,))
        return found

    def profiles(self):
        """(generation, names, families, depths, profiles) of every recorded
        model, read in one transaction (a consistent snapshot)."""
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            try:
                generation = int(conn.execute(
                    "SELECT value FROM registry_meta WHERE key = 'generation'").fetchone()[0])
                rows = conn.execute(
                    "SELECT name, family, n_modules, n_layers, profile FROM registry_models "
                    "ORDER BY name").fetchall()
            finally:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) from exc
        names, families, profiles = [], [], []
        for name, family, n_modules, n_layers, blob in rows:
            profile = decode_profile(blob, n_modules, n_layers)
            if profile is None:
                raise StoreError(
                    f"The registry {self.path} holds a damaged signature for {name!r}; "
                    f"remove it (specsig index remove {self.path} {name}) and add it again."
                )
            names.append(name)
            families.append(family)
            profiles.append(profile)
        return generation, names, families, profiles

    def put(self, records, decide):
        """Record ``records`` in one transaction.

        ``records`` are dicts with the columns of a row (``profile`` an
        array); ``decide(record, existing_row_or_None)`` returns the status,
        seeing the row of the same name as it is *inside* the transaction;
        only "added" and "updated" are written.  Returns the statuses.
        """
        def work(conn):
            statuses = []
            for rec in records:
                old = conn.execute(f"SELECT {_COLUMNS} FROM registry_models WHERE name = ?",
                                   (rec["name"],)).fetchone()
                status = decide(rec, old)
                statuses.append(status)
                if status not in ("added", "updated"):
                    continue
                profile = np.asarray(rec["profile"], dtype=np.float64)
                conn.execute(
                    "INSERT OR REPLACE INTO registry_models VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (rec["name"], rec["family"], rec["fingerprint"], rec["source"],
                     rec["architecture"], rec["metric"], profile.shape[0], profile.shape[1],
                     encode_profile(profile), time.time()),
                )
            return statuses

        return self._write(work)

    def remove(self, names):
        """Delete ``names``, all or none: unknown names raise before any delete."""
        def work(conn):
            missing = [n for n in names if conn.execute(
                "SELECT 1 FROM registry_models WHERE name = ?", (n,)).fetchone() is None]
            if missing:
                raise KeyError(missing)
            conn.executemany("DELETE FROM registry_models WHERE name = ?",
                             [(n,) for n in names])
            conn.execute("DELETE FROM registry_null")

        self._write(work)

    # -- the null ---------------------------------------------------------------

    def cached_null(self, generation):
        """``(null, method, n_cross, tail)`` cached for ``generation``, or None."""
        rows = self._read("SELECT method, n_cross, similarities, tail FROM registry_null "
                          "WHERE generation = ?", (generation,))
        if not rows:
            return None
        method, n_cross, blob, tail = rows[0]
        if len(blob) % 8:
            return None
        try:
            tail = json.loads(tail)
        except ValueError:
            return None
        return np.frombuffer(blob, dtype="<f8").copy(), method, int(n_cross), tail

    def put_null(self, generation, null, method, n_cross, tail):
        """Cache the null of ``generation`` (older ones are dropped); a null
        computed for a generation that has meanwhile passed is not kept."""
        conn = self._connection()
        try:
            with conn:
                current = int(conn.execute(
                    "SELECT value FROM registry_meta WHERE key = 'generation'").fetchone()[0])
                if current != generation:
                    return
                conn.execute("DELETE FROM registry_null")
                conn.execute("INSERT INTO registry_null VALUES (?, ?, ?, ?, ?)",
                             (generation, method, int(n_cross),
                              np.ascontiguousarray(null, dtype="<f8").tobytes(),
                              json.dumps(tail)))
        except sqlite3.DatabaseError:
            # Busy, or a reader without write access: the null is only a
            # cache, and the next reader computes it again.
            return
