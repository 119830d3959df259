"""Part 3 of the bad-input contract: the store under faults.

A writer killed with SIGKILL leaves whole transactions only, concurrent
writers lose nothing, an extraction killed half-way keeps its finished
spectra for the rerun, a newer format is refused, and a damaged or foreign
file is detected with a message saying how to rebuild it.
"""

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from _checkpoint_factories import llama_dir, llama_tensors
from joblib import Parallel, delayed

from sklearn_specsig import compute_signature
from sklearn_specsig.errors import StoreError, StoreVersionError, StoreWarning
from sklearn_specsig.store import FORMAT_VERSION, SignatureStore


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


def _open_at_the_barrier(path, barrier, results):
    barrier.wait()
    try:
        SignatureStore(path).get_source("any")
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(repr(exc))


def test_processes_opening_a_new_store_at_once_all_get_it(tmp_path):
    # joblib workers on a fresh cache open one new file at the same moment.
    # SQLite answered the losers of the race to set it up "database is
    # locked" at once, not after its busy timeout: 9 rounds in 40 failed
    # before the store retried.  20 rounds of 6 processes, released together.
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = tmp_path / f"round{round_}" / "signatures.sqlite"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        workers = [ctx.Process(target=_open_at_the_barrier, args=(path, barrier, results))
                   for _ in range(6)]
        for w in workers:
            w.start()
        outcomes = [results.get(timeout=60) for _ in workers]
        for w in workers:
            w.join()
        assert outcomes == ["ok"] * 6, f"round {round_}: {outcomes}"
    assert SignatureStore(path).verify()["spectra"] == 0


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
    # Every spectrum has its checksum: they are written in one transaction.
    assert store.verify() == {"spectra": len(rows), "unchecked": 0}
    got = store.get_spectra(key for key, _, _ in rows)
    assert len(got) == len(rows)
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


def test_sigkill_mid_extraction_keeps_finished_spectra_for_the_rerun(tmp_path, count_solves):
    n_layers = 8
    model = llama_dir(
        tmp_path / "model", llama_tensors(seed=3, n_layers=n_layers), num_hidden_layers=n_layers
    )
    n_matrices = 7 * n_layers
    store_dir = tmp_path / "store"
    # The child signs the model with each solve slowed down, so that the
    # kill lands in the middle of the extraction.
    script = textwrap.dedent(
        f"""
        import time
        import sklearn_specsig.engine._solver as solver
        from sklearn_specsig import compute_signature
        real = solver.spectra
        def slow(matrices, **kwargs):
            time.sleep(0.1)
            return real(matrices, **kwargs)
        solver.spectra = slow
        compute_signature({str(model)!r}, cache={str(store_dir)!r}, progress=False)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    store = SignatureStore(store_dir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if store_dir.joinpath("signatures.sqlite").exists() and store.stats()["spectra"] >= 10:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    store = SignatureStore(store_dir)
    store.verify()
    kept = store.stats()
    assert kept["models"] == 0
    assert 10 <= kept["spectra"] < n_matrices
    rows = sqlite3.connect(store.path).execute("SELECT n, length(eigenvalues) FROM spectra").fetchall()
    assert all(size == 4 * n and n == 8 for n, size in rows)

    n_before = count_solves()
    sig = compute_signature(model, cache=store, progress=False)
    assert count_solves() - n_before == n_matrices - kept["spectra"]
    expected = compute_signature(model, cache=None, progress=False)
    np.testing.assert_array_equal(sig.values, expected.values)


def test_damage_inside_a_populated_store_is_detected_and_rebuilt(tmp_path):
    model = llama_dir(tmp_path / "model")
    store = SignatureStore(tmp_path / "store")
    expected = compute_signature(model, cache=store, progress=False)
    store.put_spectra({f"filler-{i}": np.full(2000, i, dtype=np.float32) for i in range(200)})
    store.verify()
    del store  # closes this thread's connection on garbage collection
    path = tmp_path / "store" / "signatures.sqlite"
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    raw = bytearray(path.read_bytes())
    page = 4096
    for start in range(2 * page, len(raw) - page, 7 * page):
        raw[start : start + 64] = b"\xa5" * 64  # smash b-tree page headers
    path.write_bytes(bytes(raw))

    store = SignatureStore(tmp_path / "store")
    with pytest.raises(StoreError, match=r"damaged|malformed") as info:
        store.verify()
    assert "clear()" in str(info.value)
    with pytest.raises(StoreError, match="clear()"):
        for _ in range(3):  # reading through the damaged pages fails too
            compute_signature(model, cache=store, progress=False)
            store.get_spectra([f"filler-{i}" for i in range(200)])
    store.clear()
    rebuilt = compute_signature(model, cache=store, progress=False)
    store.verify()
    np.testing.assert_array_equal(rebuilt.values, expected.values)
    assert store.stats()["models"] == 1


def test_a_flipped_bit_in_a_stored_spectrum_is_caught_and_repaired(tmp_path, count_solves):
    # SQLite's page structure survives a flipped bit inside a blob, so only
    # the spectrum's own CRC-32 can notice it.
    model = llama_dir(tmp_path / "model")
    store = SignatureStore(tmp_path / "store")
    expected = compute_signature(model, cache=store, progress=False)
    label = "model.layers.1.self_attn.v_proj.weight"
    target = expected.spectra[label].astype("<f4").tobytes()
    del store
    path = tmp_path / "store" / "signatures.sqlite"
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    raw = bytearray(path.read_bytes())
    at = raw.find(target)
    assert at > 0 and raw.find(target, at + 1) == -1
    raw[at + 4 * 5] ^= 0x01  # lowest mantissa bit of the 6th eigenvalue
    path.write_bytes(bytes(raw))

    store = SignatureStore(tmp_path / "store")
    with pytest.raises(StoreError, match="1 spectra fail their checksum"):
        store.verify()
    n_before = count_solves()
    with pytest.warns(StoreWarning, match="failed their checksum") as record:
        sig = compute_signature(model, cache=store, progress=False)
    assert len(record) == 1
    assert count_solves() - n_before == 1
    np.testing.assert_array_equal(sig.values, expected.values)
    np.testing.assert_array_equal(sig.spectra[label], expected.spectra[label])
    assert store.verify()["unchecked"] == 0  # the damaged row was stored anew
    n_before = count_solves()
    compute_signature(model, cache=store, progress=False)
    assert count_solves() == n_before


def test_rows_without_a_checksum_are_read_and_bad_rows_removed(tmp_path):
    store = SignatureStore(tmp_path)
    store.put_spectra({"new": np.arange(3, dtype=np.float32)})
    with sqlite3.connect(store.path) as con:
        # What a version before checksums writes: a row and no checksum.
        con.execute(
            "INSERT INTO spectra VALUES (?, ?, ?, ?)",
            ("legacy", 3, np.array([1, 2, 3], "<f4").tobytes(), 0.0),
        )
        con.execute(
            "INSERT INTO spectra VALUES (?, ?, ?, ?)",
            ("short", 3, np.array([1, 2], "<f4").tobytes(), 0.0),
        )
        con.execute(
            "INSERT INTO spectra VALUES (?, ?, ?, ?)",
            ("bad-crc", 2, np.array([1, 2], "<f4").tobytes(), 0.0),
        )
        con.execute("INSERT INTO spectrum_checksums VALUES ('bad-crc', 12345)")
    with pytest.raises(StoreError, match="2 spectra fail their checksum"):
        store.verify()
    with pytest.warns(StoreWarning, match="2 spectra"):
        got = store.get_spectra(["new", "legacy", "short", "bad-crc"])
    assert sorted(got) == ["legacy", "new"]
    np.testing.assert_array_equal(got["legacy"], [1, 2, 3])
    np.testing.assert_array_equal(got["new"], [0, 1, 2])
    # The damaged rows are gone, so storing them again takes.
    assert store.verify() == {"spectra": 2, "unchecked": 1}
    store.put_spectra({"short": np.ones(3, dtype=np.float32)})
    np.testing.assert_array_equal(store.get_spectra(["short"])["short"], [1, 1, 1])
    assert store.verify() == {"spectra": 3, "unchecked": 1}


def test_older_versions_read_and_write_a_store_with_checksums(tmp_path):
    # The SQL of the version before checksums (c826605), run on a new store:
    # its rows must be whole float32 blobs of n values, and its writes must
    # still work and be read back by this version.
    store = SignatureStore(tmp_path)
    store.put_spectra({"a": np.array([1.0, 2.0, 4.0], dtype=np.float32)})
    with sqlite3.connect(store.path) as con:
        ((_, n, blob),) = con.execute("SELECT key, n, eigenvalues FROM spectra")
        assert np.frombuffer(blob, dtype="<f4").size == n == 3
        con.execute(
            "INSERT OR IGNORE INTO spectra VALUES (?, ?, ?, ?)",
            ("old", 2, np.array([5, 6], "<f4").tobytes(), 0.0),
        )
    np.testing.assert_array_equal(store.get_spectra(["old"])["old"], [5, 6])
    assert store.verify() == {"spectra": 2, "unchecked": 1}


def test_a_checksum_is_only_added_to_the_row_it_was_computed_for(tmp_path):
    # Another writer's row came first (slightly different last bits): ours
    # is ignored, and so must our checksum be, or the good row would fail.
    store = SignatureStore(tmp_path)
    store.stats()  # creates the tables
    with sqlite3.connect(store.path) as con:
        con.execute(
            "INSERT INTO spectra VALUES ('k', 2, ?, 0.0)",
            (np.array([1.0, 2.0], "<f4").tobytes(),),
        )
    store.put_spectra({"k": np.array([1.0, 2.0000002], dtype=np.float32)})
    np.testing.assert_array_equal(store.get_spectra(["k"])["k"], [1.0, 2.0])
    assert store.verify() == {"spectra": 1, "unchecked": 1}


def test_verify_counts_damaged_spectra_on_every_page(tmp_path):
    store = SignatureStore(tmp_path)
    store.put_spectra({f"k{i}": np.full(4, i, dtype=np.float32) for i in range(2500)})
    store.verify()
    with sqlite3.connect(store.path) as con:
        for key in ("k0", "k1500", "k2499"):  # first, middle and last page
            data = con.execute("SELECT eigenvalues FROM spectra WHERE key = ?", (key,))
            blob = bytearray(data.fetchone()[0])
            blob[3] ^= 0x80  # the sign bit of the first eigenvalue
            con.execute("UPDATE spectra SET eigenvalues = ? WHERE key = ?", (bytes(blob), key))
    with pytest.raises(StoreError, match="3 spectra fail their checksum"):
        store.verify()


def test_verify_a_path_without_a_store(tmp_path):
    with pytest.raises(StoreError, match="no signature store"):
        SignatureStore(tmp_path / "typo").verify()


def test_foreign_database_at_the_store_path(tmp_path):
    path = tmp_path / "signatures.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE spectra (id INTEGER, note TEXT)")
    store = SignatureStore(tmp_path)
    with pytest.raises(StoreError, match="delete the file"):
        store.put_spectra({"a": np.ones(3, dtype=np.float32)})


def test_store_folder_that_cannot_exist(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    store = SignatureStore(tmp_path / "a-file" / "store")
    with pytest.raises(StoreError, match="writable location"):
        store.get_spectra(["a"])


def test_a_store_held_by_another_process_is_called_busy_not_damaged(tmp_path):
    path = tmp_path / "signatures.sqlite"
    SignatureStore(path).put_source("memo", "fingerprint")  # create it
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as a writer that does not let go
    try:
        store = SignatureStore(path, timeout=0.2)
        with pytest.raises(StoreError, match="is busy") as raised:
            store.put_source("other", "fingerprint")
        assert "delete" not in str(raised.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert SignatureStore(path).get_source("memo") == "fingerprint"


def test_a_file_that_is_not_a_store_is_not_advised_away(tmp_path):
    notes = tmp_path / "notes"  # the user's own file, given as cache=
    notes.write_text("my notes, not a cache\n" * 100)
    with pytest.raises(StoreError) as info:
        SignatureStore(notes).get_spectra(["a"])
    assert "not a signature store this library wrote" in str(info.value)
    assert "delete" not in str(info.value)
    assert notes.read_text().startswith("my notes")
