"""Opening SQLite files safely from many processes at once.

The spectra store and the model registry's file both open their files
here: :func:`connect` (retrying the losers of a race to set up a new file),
:func:`use_wal`, and :class:`SQLiteFile`, one connection per thread of each
process.
"""

import os
import sqlite3
import threading
import time

__all__ = ["SQLiteFile", "connect", "file_kind", "use_wal"]

_SQLITE_HEADER = b"SQLite format 3\x00"


def file_kind(path):
    """What an existing file is, for an error message that must not advise
    deleting the wrong thing: ``"registry"`` (a model registry, whatever
    else it holds), ``"store"`` (a spectra cache), ``"sqlite"`` (another
    SQLite file), ``"other"`` (not SQLite), or ``"unknown"`` (unreadable, or
    its tables cannot be listed, as in a damaged store).

    Examples
    --------
    >>> import tempfile, os
    >>> from sklearn_specsig.store import file_kind
    >>> folder = tempfile.TemporaryDirectory()
    >>> notes = os.path.join(folder.name, "notes")
    >>> with open(notes, "w") as f:
    ...     _ = f.write("my notes")
    >>> file_kind(notes)
    'other'
    >>> folder.cleanup()
    """
    try:
        with open(path, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError:
        return "unknown"
    if header and header != _SQLITE_HEADER:
        return "other"
    try:
        conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=1.0)
        try:
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return "unknown"
    if "registry_meta" in tables:
        return "registry"
    if "spectra" in tables or not tables:
        return "store"
    return "sqlite"


def connect(path, timeout, set_up):
    """A new SQLite connection to ``path``, set up by ``set_up(conn)``.

    Returns ``(conn, set_up(conn))``.  Several processes opening a new file
    at the same moment (joblib workers on a fresh cache, two ``specsig
    index add`` at once) race to turn it to WAL mode and create its tables,
    and SQLite answers the losers "database is locked" at once, without
    waiting for its busy timeout (measured: 9 rounds in 40 of six processes
    opening one new file).  The losers wait and try again, within
    ``timeout`` seconds.  The store and the model registry
    (:mod:`sklearn_specsig.registry`) both open their files here.

    Parameters
    ----------
    path : str or os.PathLike
        The SQLite file.
    timeout : float
        Seconds to wait for another process's lock, in SQLite and here.
    set_up : callable
        ``set_up(conn)``: creates the tables; its result is returned.

    Returns
    -------
    conn : sqlite3.Connection
    result : object
        What ``set_up`` returned.

    Examples
    --------
    >>> import tempfile, os
    >>> from sklearn_specsig.store import connect, use_wal
    >>> folder = tempfile.TemporaryDirectory()
    >>> def set_up(conn):
    ...     use_wal(conn)
    ...     conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    ...     return "ready"
    >>> conn, result = connect(os.path.join(folder.name, "db.sqlite"), 5.0, set_up)
    >>> result, conn.execute("PRAGMA journal_mode").fetchone()
    ('ready', ('wal',))
    >>> conn.close(); folder.cleanup()
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        conn = sqlite3.connect(path, timeout=timeout)
        try:
            return conn, set_up(conn)
        except sqlite3.OperationalError as exc:
            conn.close()
            contended = "locked" in str(exc) or "busy" in str(exc)
            if not contended or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.25)
        except BaseException:
            conn.close()
            raise


class SQLiteFile:
    """A SQLite file that each process (and thread) opens on its own.

    The object holds only its path and timeout, so it pickles into joblib
    workers; :meth:`_connection` opens the file (:meth:`_new_connection`,
    given by the subclass) once per thread of each process, and a forked
    child never reuses its parent's connection.  The spectra store and the
    model registry's file are both such files.
    """

    def __init__(self, path, timeout=60.0):
        self.path = path
        self.timeout = timeout
        self._local = threading.local()

    def __getstate__(self):
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state):
        self.__init__(state["path"], state["timeout"])

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self._new_connection()
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _new_connection(self):
        raise NotImplementedError


def use_wal(conn):
    """Switch ``conn``'s file to WAL mode unless it is already (the mode is
    stored in the file; a switch takes an exclusive lock, asking does not)."""
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    if mode.lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
