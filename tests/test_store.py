"""Tests of sklearn_specsig.store: round trips, keys and locations.

Faults (kills, concurrent writers, damaged files) are in test_store_faults.py.
"""

import os
import pickle

import numpy as np
import pytest

from sklearn_specsig.store import (
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
