"""The SQLite store: its tables, and reading and writing them safely.

What the tables hold and why is said in the package docstring; the keys
rows are stored under are made in :mod:`._keys`.
"""

import json
import os
import sqlite3
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..errors import StoreError, StoreVersionError, StoreWarning
from ._connection import SQLiteFile, connect, file_kind, use_wal
from ._keys import FORMAT_VERSION, stat_key
from ._tables import (
    DELETE_CHECKSUM,
    DELETE_SPECTRUM,
    INSERT_CHECKSUM,
    INSERT_SPECTRUM,
    SCHEMA,
    SELECT_SPECTRA,
    decode_spectrum,
)

__all__ = ["SignatureStore", "default_cache_dir", "resolve_store"]

def default_cache_dir():
    """Directory of the default store (``cache="auto"``).

    ``$SPECSIG_CACHE`` if set, else ``$XDG_CACHE_HOME/sklearn_specsig``, else
    ``~/.cache/sklearn_specsig``.

    Returns
    -------
    pathlib.Path
    """
    if os.environ.get("SPECSIG_CACHE"):
        return Path(os.environ["SPECSIG_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sklearn_specsig"


class SignatureStore(SQLiteFile):
    """An SQLite file of spectra, shared by processes and sessions.

    Parameters
    ----------
    path : str or os.PathLike
        The database file; created (with its directory) on first use.  A
        directory, or a path without a suffix that is not an existing file,
        is taken to mean ``path / "signatures.sqlite"`` (an existing file is
        used as it is: a model registry's file, for one).
    timeout : float, default=60.0
        Seconds a writer waits for another writer's lock before failing.

    Notes
    -----
    The object holds only its path: each process (and thread) opens its own
    connection on first use, so a store pickles into joblib workers.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from sklearn_specsig.store import SignatureStore
    >>> folder = tempfile.TemporaryDirectory()
    >>> store = SignatureStore(folder.name)
    >>> store.put_spectra({"abc": np.array([1.0, 2.0], dtype=np.float32)})
    >>> store.get_spectra(["abc", "missing"])
    {'abc': array([1., 2.], dtype=float32)}
    >>> folder.cleanup()
    """

    def __init__(self, path, timeout=60.0):
        path = Path(path).expanduser()
        if path.is_dir() or (path.suffix == "" and not path.is_file()):
            path = path / "signatures.sqlite"
        super().__init__(path, timeout)

    def __repr__(self):
        return f"SignatureStore({str(self.path)!r})"

    # Two stores on one file are the same cache (clone() copies parameters).
    def __eq__(self, other):
        return isinstance(other, SignatureStore) and other.path == self.path

    def __hash__(self):
        return hash(self.path)

    # -- connection ---------------------------------------------------------

    def _new_connection(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the folder of the signature store {self.path} "
                f"({exc}). Point cache= at a writable location, or cache=None."
            ) from exc
        try:
            conn, version = self._open()
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc, "cannot be read") from exc
        if int(version) > FORMAT_VERSION:
            conn.close()
            raise StoreVersionError(
                f"The signature store {self.path} has format version {version}, "
                f"newer than this library's {FORMAT_VERSION}. Upgrade "
                "sklearn_specsig, or point cache= at another location."
            )
        return conn

    def _open(self):
        return connect(self.path, self.timeout, self._set_up)

    @staticmethod
    def _set_up(conn):
        use_wal(conn)
        with conn:
            conn.executescript(SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('format_version', ?)",
                (str(FORMAT_VERSION),),
            )
        (version,) = conn.execute(
            "SELECT value FROM meta WHERE key = 'format_version'"
        ).fetchone()
        return version

    def _execute(self, sql, params=(), *, write=False, many=False):
        if write:
            return self._write_many([(sql, params if many else [params])])
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) from exc

    def _write_many(self, statements):
        """Run ``(sql, rows)`` statements with executemany, in one transaction."""
        conn = self._connection()
        try:
            with conn:
                for sql, rows in statements:
                    conn.executemany(sql, rows)
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc, what="failed"):
        if isinstance(exc, sqlite3.OperationalError) and (
                "locked" in str(exc) or "busy" in str(exc)):
            # Another process holds the file: it is busy, not damaged, and
            # deleting it would pull it from under that process.
            return StoreError(
                f"The signature store {self.path} is busy: another process held "
                f"it for more than timeout={self.timeout} s ({exc}). Try again, "
                "pass SignatureStore(path, timeout=...) with a longer wait, or "
                "point cache= at another location. The file is not damaged."
            )
        kind = file_kind(self.path)
        if kind == "registry":
            # Deleting a model registry to "rebuild a cache" loses the record.
            return StoreError(
                f"The signature store {self.path} {what} ({exc}). The file is also a "
                "model registry: do not delete it. Check its permissions and free "
                "space, or sign through another cache (cache='auto', --cache auto)."
            )
        # A damaged file under the store's own name is ours to rebuild; a file
        # the user named, or another database, is not.
        if kind == "sqlite" or (kind == "other" and self.path.name != "signatures.sqlite"):
            return StoreError(
                f"The signature store {self.path} {what} ({exc}). The file is not a "
                "signature store this library wrote: point cache= at another location."
            )
        return StoreError(
            f"The signature store {self.path} {what} ({exc}). It is only a "
            "cache: delete the file (or call .clear()) to rebuild it."
        )

    # -- spectra ------------------------------------------------------------

    def get_spectra(self, keys):
        """Stored spectra among ``keys``.

        Parameters
        ----------
        keys : iterable of str

        Returns
        -------
        dict of str to ndarray
            The keys found, each with its float32 eigenvalues.  A spectrum
            that fails its checksum is left out and deleted from the store
            (so that it is solved and stored again), with a
            :class:`~sklearn_specsig.errors.StoreWarning`.
        """
        found, damaged = self._read_spectra(keys)
        if damaged:
            self._write_many(
                [
                    (DELETE_SPECTRUM, [(key, blob) for key, blob, _ in damaged]),
                    (DELETE_CHECKSUM, [(key, crc) for key, _, crc in damaged]),
                ]
            )
            warnings.warn(
                f"{len(damaged)} spectra in the signature store {self.path} failed "
                "their checksum (the file was damaged on disk); they were removed "
                "and extraction solves those matrices again.",
                StoreWarning,
                stacklevel=2,
            )
        return found

    def _read_spectra(self, keys):
        """``(found, damaged)`` where ``damaged`` lists ``(key, blob, crc)``
        of the rows that fail their check; no warning, no writes."""
        keys = list(keys)
        found, damaged = {}, []
        # SQLite caps the number of bound parameters per statement.
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._execute(
                SELECT_SPECTRA.format(id="key") + f"WHERE s.key IN ({marks})", chunk
            )
            for key, n, blob, crc in rows:
                eig = decode_spectrum(n, blob, crc)
                if eig is None:
                    damaged.append((key, blob, crc))
                else:
                    found[key] = eig
        return found, damaged

    def put_spectra(self, spectra):
        """Store spectra with their checksums, in one transaction.

        Parameters
        ----------
        spectra : dict of str to array-like
            Spectrum key to eigenvalues (stored as little-endian float32).
            A key already stored keeps its first value.
        """
        now = time.time()
        rows, checks = [], []
        for key, eig in spectra.items():
            blob = np.asarray(eig, dtype="<f4").tobytes()
            rows.append((key, int(np.size(eig)), blob, now))
            checks.append((key, zlib.crc32(blob), key, blob))
        if rows:
            self._write_many([(INSERT_SPECTRUM, rows), (INSERT_CHECKSUM, checks)])

    # -- models ---------------------------------------------------------------

    def get_model(self, fingerprint, settings):
        """The manifest of a model, or None.

        Returns
        -------
        dict or None
            ``{"architecture", "n_layers", "entries"}`` where ``entries`` is a
            list of ``[label, role, layer, expert, spectrum_key]``.
        """
        rows = self._execute(
            "SELECT architecture, n_layers, manifest FROM models "
            "WHERE fingerprint = ? AND settings = ?",
            (fingerprint, settings),
        )
        if not rows:
            return None
        architecture, n_layers, manifest = rows[0]
        return {
            "architecture": architecture,
            "n_layers": n_layers,
            "entries": json.loads(manifest),
        }

    def put_model(self, fingerprint, settings, architecture, n_layers, entries):
        """Record a model's manifest (its spectra must be stored first)."""
        self._execute(
            "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)",
            (
                fingerprint,
                settings,
                architecture,
                int(n_layers),
                json.dumps(entries),
                time.time(),
            ),
            write=True,
        )

    # -- source memo ----------------------------------------------------------

    @staticmethod
    def stat_key(file_stats, extra=""):
        """Key of a checkpoint's files as they are on disk now (see
        :func:`stat_key`)."""
        return stat_key(file_stats, extra)

    def get_source(self, stat_key):
        """Fingerprint remembered for unchanged files, or None."""
        rows = self._execute(
            "SELECT fingerprint FROM sources WHERE stat_key = ?", (stat_key,)
        )
        return rows[0][0] if rows else None

    def put_source(self, stat_key, fingerprint):
        """Remember the fingerprint of files as they are on disk now."""
        self._execute(
            "INSERT OR REPLACE INTO sources VALUES (?, ?, ?)",
            (stat_key, fingerprint, time.time()),
            write=True,
        )

    # -- maintenance ------------------------------------------------------------

    def stats(self):
        """Counts of stored spectra, models and source memos.

        Returns
        -------
        dict
        """
        return {
            table: self._execute(f"SELECT COUNT(*) FROM {table}")[0][0]
            for table in ("spectra", "models", "sources")
        }

    def verify(self):
        """Check the store for damage: SQLite's integrity check, then every
        spectrum's checksum.

        A damaged store is only a lost cache: :meth:`clear` deletes it and
        the next extraction rebuilds what it needs.

        Returns
        -------
        dict
            ``{"spectra": n, "unchecked": k}``: the stored spectra, and how
            many of them have no checksum (written by a version of the
            library before checksums), so could only be checked for length.

        Raises
        ------
        StoreError
            The file is damaged: SQLite's integrity check fails (the message
            lists what it found) or stored spectra fail their CRC-32.  Or
            there is no store file at this path.

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from sklearn_specsig import SignatureStore
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     store = SignatureStore(folder)
        ...     store.put_spectra({"abc": np.array([1.0, 2.0], dtype=np.float32)})
        ...     store.verify()
        {'spectra': 1, 'unchecked': 0}
        """
        if not self.path.is_file():
            raise StoreError(
                f"There is no signature store at {self.path}: check the path (a "
                "store is created on first use, so there is nothing to verify)."
            )
        problems = [row[0] for row in self._execute("PRAGMA integrity_check")]
        if problems == ["ok"]:
            counts = self._check_spectra()
            if counts["damaged"]:
                problems = [f"{counts['damaged']} spectra fail their checksum"]
        if problems != ["ok"]:
            raise StoreError(
                f"The signature store {self.path} is damaged: "
                f"{'; '.join(problems[:5])}. It is only a cache: call .clear() "
                "(or delete the file) to rebuild it."
            )
        return {"spectra": counts["spectra"], "unchecked": counts["unchecked"]}

    def _check_spectra(self, page=200):
        # Paged by rowid: a store of 100k spectra holds gigabytes of blobs.
        counts = dict.fromkeys(("spectra", "damaged", "unchecked"), 0)
        last = -1
        while True:
            rows = self._execute(
                SELECT_SPECTRA.format(id="rowid")
                + "WHERE s.rowid > ? ORDER BY s.rowid LIMIT ?",
                (last, page),
            )
            if not rows:
                return counts
            for _, n, blob, crc in rows:
                counts["spectra"] += 1
                counts["damaged"] += decode_spectrum(n, blob, crc) is None
                counts["unchecked"] += crc is None
            last = rows[-1][0]

    def clear(self):
        """Delete the store file (and its WAL side files); it is rebuilt on use."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)


def resolve_store(cache):
    """The store that a ``cache=`` parameter names.

    Parameters
    ----------
    cache : "auto", None, str, os.PathLike or SignatureStore
        ``"auto"``: the user cache directory (see :func:`default_cache_dir`);
        None: no cache; a path: a store file (or directory) there.

    Returns
    -------
    SignatureStore or None
    """
    if cache is None or cache is False:
        return None
    if isinstance(cache, SignatureStore):
        return cache
    if isinstance(cache, str) and cache == "auto":
        return SignatureStore(default_cache_dir())
    if isinstance(cache, (str, os.PathLike)):
        return SignatureStore(cache)
    raise TypeError(
        f"cache={cache!r}: use 'auto', None, a path or a SignatureStore."
    )
