"""``specsig index add|query|list|remove`` and their exit codes."""

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from sklearn_specsig.cli import main
from sklearn_specsig.datasets import make_model_zoo
from sklearn_specsig.errors import StoreError
from sklearn_specsig.registry import ModelIndex


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def recorded(small_zoo, tmp_path):
    path = tmp_path / "registry.sqlite"
    for family in small_zoo.families:
        members = [p for p in small_zoo.paths if family in p and not p.endswith("ft02")]
        code, out, err = _cli("index", "add", path, *members, "--family", family,
                              "--no-progress")
        assert code == 0, err
        assert out.count(" added") == 2
    return path


def test_query_json_has_the_documented_shape(recorded, small_zoo):
    queries = [p for p in small_zoo.paths if p.endswith("ft02")]
    code, out, err = _cli("index", "query", recorded, *queries, "--json", "--top", "3",
                          "--no-progress")
    assert code == 0, err
    answer = json.loads(out)
    assert [q["model"] for q in answer["queries"]] == [p.rsplit("/", 1)[1] for p in queries]
    index = ModelIndex(recorded)
    expected = index.query(queries, top=3)
    for q, e in zip(answer["queries"], expected):
        assert set(q) == {"model", "verdict", "neighbours"}
        assert set(q["verdict"]) == {"family", "p_value"}
        assert all(set(n) == {"name", "family", "similarity", "p_value"}
                   for n in q["neighbours"])
        sims = [n["similarity"] for n in q["neighbours"]]
        assert sims == sorted(sims, reverse=True)  # most similar first
        assert q["verdict"] == e["verdict"] and q["neighbours"] == e["neighbours"]
        # The nearest recorded model is the query's own family's.
        assert q["neighbours"][0]["family"] in q["model"]
    assert answer["null"]["n_null"] == (8 * 8 - 4 * 2 * 2) // 2  # 4 families of 2: 24 pairs


def test_add_twice_is_unchanged_and_list_remove(recorded, small_zoo):
    members = [p for p in small_zoo.paths if "fam00" in p and not p.endswith("ft02")]
    code, out, _ = _cli("index", "add", recorded, *members, "--family",
                        small_zoo.families[0], "--no-progress")
    assert code == 0
    assert [line.split()[-1] for line in out.splitlines()[2:4]] == ["unchanged"] * 2
    code, out, _ = _cli("index", "list", recorded, "--json")
    listed = json.loads(out)["models"]
    assert code == 0 and len(listed) == 8
    name = listed[0]["name"]
    code, out, err = _cli("index", "remove", recorded, name, "not-there")
    assert code == 1 and "not-there" in err and "nothing was removed" in err
    code, out, _ = _cli("index", "remove", recorded, name)
    assert code == 0 and "7 left" in out
    code, out, _ = _cli("index", "list", recorded)
    assert name not in out and "7 models" in out


def test_add_with_unreadable_models_records_the_rest(small_zoo, tmp_path):
    path = tmp_path / "r.sqlite"
    code, out, err = _cli("index", "add", path, small_zoo.paths[0], tmp_path / "missing",
                          "--no-progress")
    assert code == 3  # partial: one recorded, one not
    assert "cannot add missing" in err and "No checkpoint" in err
    assert [m["name"] for m in ModelIndex(path).list()] == [small_zoo.paths[0].rsplit("/")[-1]]
    code, _, err = _cli("index", "add", path, small_zoo.paths[0], small_zoo.paths[1],
                        "--name", "x")
    assert code == 1 and "--name names one model" in err


def test_query_says_when_no_verdict_can_reach_alpha(recorded, small_zoo):
    code, out, err = _cli("index", "query", recorded, small_zoo.paths[2], "--no-progress")
    assert code == 0
    assert "verdict" in out and "p-value: rank among 24 similarities" in out
    # 4 families of 2: the smallest verdict p-value is 1 - (1 - 1/25)**4 = 0.15.
    assert "no verdict can reach alpha = 0.01" in err


def _specsig(*argv):
    return subprocess.Popen([sys.executable, "-m", "sklearn_specsig.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def zoo32(tmp_path_factory):
    """32 checkpoints, each chunk of 8 taking ~0.2 s to sign: a kill after the
    first chunk lands in the middle of the add."""
    root = tmp_path_factory.mktemp("two-writers")
    return make_model_zoo(root, n_families=8, n_derived=3, n_layers=6, hidden_size=64,
                          random_state=1)


def test_two_adds_at_once_into_one_file_lose_nothing(zoo32, tmp_path):
    """Two ``specsig index add`` processes, each signing its own half into the
    registry, which is also their spectra cache: every model is recorded."""
    path = tmp_path / "registry.sqlite"
    halves = zoo32.paths[::2], zoo32.paths[1::2]
    procs = [_specsig("index", "add", path, *half, "--no-progress") for half in halves]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    names = [m["name"] for m in ModelIndex(path).list()]
    assert names == sorted(os.path.basename(p) for p in zoo32.paths)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_killed_cli_add_keeps_what_it_committed(zoo32, tmp_path):
    path = tmp_path / "registry.sqlite"
    proc = _specsig("index", "add", path, *zoo32.paths, "--no-progress")
    deadline = time.monotonic() + 300
    recorded = 0
    while recorded < 8 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if path.exists():
            try:
                recorded = len(ModelIndex(path, timeout=1).list())
            except StoreError:
                recorded = 0  # busy for a moment: ask again
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    listed = [m["name"] for m in ModelIndex(path).list()]
    assert len(listed) >= 8  # the chunks committed before the kill
    assert set(listed) <= {os.path.basename(p) for p in zoo32.paths}
    # Adding again completes the registry; what was recorded is unchanged.
    code, out, err = _cli("index", "add", path, *zoo32.paths, "--no-progress")
    assert code == 0, err
    assert sum(line.endswith("unchanged") for line in out.splitlines()) == len(listed)
    assert len(ModelIndex(path).list()) == len(zoo32.paths)


def test_read_commands_refuse_a_missing_registry_and_create_nothing(tmp_path, small_zoo):
    path = tmp_path / "typo.sqlite"
    for argv in (["index", "list", path], ["index", "query", path, small_zoo.paths[0]],
                 ["index", "remove", path, "x"], ["report", path, "-o", tmp_path / "r.html"]):
        code, _, err = _cli(*argv)
        assert code == 1 and "no registry at" in err and "specsig index add" in err
    assert not path.exists()


def test_an_emptied_registry_lists_nothing(recorded):
    names = [m["name"] for m in ModelIndex(recorded).list()]
    code, _, err = _cli("index", "remove", recorded, *names)
    assert code == 0, err
    code, out, err = _cli("index", "list", recorded)
    assert code == 0 and "0 models in" in out
    code, _, err = _cli("index", "query", recorded, "anything")
    assert code == 1 and "is empty; add models first" in err


def test_add_says_when_a_model_is_resampled_coarser(tmp_path, small_zoo):
    path = tmp_path / "registry.sqlite"
    code, _, err = _cli("index", "add", path, small_zoo.paths[0], "--n-layers", "4",
                        "--no-progress")
    assert code == 0, err
    assert "has 6 layers; the registry compares profiles on 4 points" in err


def test_read_commands_refuse_a_file_that_is_not_a_registry(tmp_path, small_zoo):
    cache = tmp_path / "signatures.sqlite"
    code, _, err = _cli("signature", small_zoo.paths[0], "--cache", cache, "--no-progress")
    assert code == 0, err
    code, _, err = _cli("index", "list", cache)
    assert code == 1 and "is not a model registry" in err
    with sqlite3.connect(cache) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert not any(t.startswith("registry_") for t in tables)
