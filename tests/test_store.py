import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from joblib import Parallel, delayed

from sklearn_specsig.errors import StoreError, StoreVersionError
from sklearn_specsig.store import (
    FORMAT_VERSION,
    SignatureStore,
    default_cache_dir,
    resolve_store,
)


def test_spectra_round_trip_exactly(tmp_path):
    store = SignatureStore(tmp_path)
    eig = np.random.default_rng(0).random(100).astype(np.float32)
    store.put_spectra({"a": eig, "b": eig[:3]})
    got = store.get_spectra(["a", "b", "c"])
    assert sorted(got) == ["a", "b"]
    np.testing.assert_array_equal(got["a"], eig)
    assert got["a"].dtype == np.float32
    assert store.path == tmp_path / "signatures.sqlite"


def test_many_keys_beyond_sqlite_parameter_limit(tmp_path):
    store = SignatureStore(tmp_path / "s.sqlite")
    store.put_spectra({str(i): np.array([i], dtype=np.float32) for i in range(1200)})
    got = store.get_spectra([str(i) for i in range(1300)])
    assert len(got) == 1200 and got["1199"][0] == 1199


def test_models_and_sources(tmp_path):
    store = SignatureStore(tmp_path)
    entries = [["m.q", "q", 0, None, "k1"], ["m.e", "gate", 1, 3, "k2"]]
    store.put_model("fp", "s1", "llama", 2, entries)
    assert store.get_model("fp", "s1") == {
        "architecture": "llama",
        "n_layers": 2,
        "entries": entries,
    }
    assert store.get_model("fp", "s2") is None
    key = SignatureStore.stat_key([("/x", 10, 123)], "extra")
    assert key != SignatureStore.stat_key([("/x", 10, 124)], "extra")
    assert store.get_source(key) is None
    store.put_source(key, "fp")
    assert store.get_source(key) == "fp"
    assert store.stats() == {"spectra": 0, "models": 1, "sources": 1}


def test_store_pickles_and_reconnects(tmp_path):
    store = SignatureStore(tmp_path)
    store.put_spectra({"a": np.ones(2, dtype=np.float32)})
    clone = pickle.loads(pickle.dumps(store))
    assert clone.path == store.path
    np.testing.assert_array_equal(clone.get_spectra(["a"])["a"], [1, 1])


def _write_block(path, worker, n):
    store = SignatureStore(path)
    for i in range(n):
        store.put_spectra({f"{worker}-{i}": np.full(50, worker, dtype=np.float32)})
    return n


def test_concurrent_writers_lose_nothing(tmp_path):
    counts = Parallel(n_jobs=4, backend="loky")(
        delayed(_write_block)(tmp_path, w, 40) for w in range(4)
    )
    assert counts == [40] * 4
    got = SignatureStore(tmp_path).get_spectra(f"{w}-{i}" for w in range(4) for i in range(40))
    assert len(got) == 160
    assert all(np.all(v == int(k.split("-")[0])) for k, v in got.items())


def test_sigkill_mid_write_leaves_a_readable_store(tmp_path):
    # A child writes large entries in a loop; we SIGKILL it while it writes,
    # then check every stored entry is whole.
    script = textwrap.dedent(
        f"""
        import numpy as np, sys
        from sklearn_specsig.store import SignatureStore
        store = SignatureStore({str(tmp_path)!r})
        i = 0
        while True:
            store.put_spectra({{f"k{{i}}-{{j}}": np.full(20000, i, dtype=np.float32) for j in range(5)}})
            i += 1
            if i == 3:
                print("writing", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"writing"
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    store = SignatureStore(tmp_path)
    rows = sqlite3.connect(store.path).execute("SELECT key, n, length(eigenvalues) FROM spectra").fetchall()
    assert len(rows) >= 15
    assert all(n == 20000 and size == 80000 for _, n, size in rows)
    # Each transaction wrote 5 entries: never a partial transaction.
    batches = {key.split("-")[0] for key, _, _ in rows}
    assert len(rows) == 5 * len(batches)
    got = store.get_spectra(key for key, _, _ in rows)
    assert all(np.all(v == float(k[1:].split("-")[0])) for k, v in got.items())


def test_newer_format_is_refused(tmp_path):
    store = SignatureStore(tmp_path)
    store.put_spectra({"a": np.ones(1, dtype=np.float32)})
    con = sqlite3.connect(store.path)
    with con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION + 1),))
    con.close()
    with pytest.raises(StoreVersionError, match="newer than this library"):
        SignatureStore(tmp_path).get_spectra(["a"])


def test_corrupted_store_is_detected_and_rebuilt(tmp_path):
    path = tmp_path / "signatures.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = SignatureStore(tmp_path)
    with pytest.raises(StoreError, match="delete the file"):
        store.get_spectra(["a"])
    store.clear()
    store.put_spectra({"a": np.ones(1, dtype=np.float32)})
    assert list(store.get_spectra(["a"])) == ["a"]


def test_resolve_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSIG_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert resolve_store("auto").path == tmp_path / "env" / "signatures.sqlite"
    assert resolve_store(None) is None
    assert resolve_store(tmp_path / "x.sqlite").path == tmp_path / "x.sqlite"
    store = SignatureStore(tmp_path)
    assert resolve_store(store) is store
    with pytest.raises(TypeError, match="cache=3"):
        resolve_store(3)
    monkeypatch.delenv("SPECSIG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "sklearn_specsig"
    assert os.fspath(default_cache_dir()).endswith("sklearn_specsig")
