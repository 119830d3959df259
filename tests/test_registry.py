"""ModelIndex: recording, answers against independent references, safety."""

import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy.stats import norm, spearmanr

from sklearn_specsig.errors import (
    CheckpointNotFoundError,
    RegistryWarning,
    StoreError,
    StoreVersionError,
)
from sklearn_specsig.kernels._spearman import rank_module_rows, spearman_from_ranks
from sklearn_specsig.registry import ModelIndex
from sklearn_specsig.registry._null import (
    cross_family_null,
    family_wise_pvalue,
    n_cross_family_pairs,
)
from sklearn_specsig.signature import resample_depth


def _family_arrays(rng, n_families, n_members, n_layers, noise=0.05):
    """Bases drawn independently, members as small perturbations of them."""
    bases = rng.normal(3.5, 1.0, size=(n_families, 7, n_layers))
    X, names, fams = [], [], []
    for f, base in enumerate(bases):
        for m in range(n_members):
            X.append(base + noise * rng.normal(size=base.shape))
            names.append(f"fam{f:02d}-m{m}")
            fams.append(f"fam{f:02d}")
    return np.stack(X), names, fams, bases


def _spearman_ref(a, b):
    """Paper Eq. 2 in float64 with scipy: mean Spearman rho over module rows."""
    return float(np.mean([spearmanr(x, y).statistic for x, y in zip(a, b)]))


def _null_ref(P, fams):
    vals = [_spearman_ref(P[i], P[j]) for i in range(len(P)) for j in range(i + 1, len(P))
            if fams[i] != fams[j]]
    return np.sort(vals)


def test_answers_equal_an_independent_float64_reference(tmp_path):
    rng = np.random.default_rng(0)
    X, names, fams, bases = _family_arrays(rng, 5, 3, 9)
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(X, names=names, families=fams)
    query = bases[2] + 0.05 * rng.normal(size=bases[2].shape)
    (answer,) = index.query([query], names=["q"], top=4)

    sims = np.array([_spearman_ref(query, x) for x in X])
    order = sorted(range(len(X)), key=lambda i: (-sims[i], names[i]))[:4]
    assert [n["name"] for n in answer["neighbours"]] == [names[i] for i in order]
    got = np.array([n["similarity"] for n in answer["neighbours"]])
    np.testing.assert_allclose(got, sims[order], rtol=1e-12)

    null = _null_ref(X, fams)
    assert index.summary()["n_null"] == len(null) == 5 * 4 / 2 * 9  # 90 cross pairs
    for nb in answer["neighbours"]:
        expected = (1 + np.sum(null >= nb["similarity"] - 1e-12)) / (1 + len(null))
        assert nb["p_value"] == pytest.approx(expected, abs=1e-15)
    # A derivative beyond every null pair: the verdict sits at its floor.
    assert answer["verdict"]["p_value"] == pytest.approx(1 - (1 - 1 / 91) ** 5, rel=1e-12)
    assert answer["verdict"]["family"] is None  # 1 - (1 - 1/91)**5 = 0.054 > alpha


def _verdict_ref(query, X, fams):
    """The verdict's p-value written out again: T_ig = best similarity of
    model i to family g != f(i), weighted 1/n_f, normal tail, floor, Sidak."""
    families = sorted(set(fams))
    sizes = {f: fams.count(f) for f in families}
    T, w = [], []
    for i, f in enumerate(fams):
        for g in families:
            if g != f:
                T.append(max(_spearman_ref(X[i], X[j]) for j in range(len(X)) if fams[j] == g))
                w.append(1.0 / sizes[f])
    mean = np.average(T, weights=w)
    std = np.sqrt(np.average((np.array(T) - mean) ** 2, weights=w))
    best = max(_spearman_ref(query, x) for x in X)
    n_null = len(_null_ref(X, fams))
    p_family = max(norm.sf((best - mean) / std), 1 / (1 + n_null))
    return 1 - (1 - p_family) ** len(families)


def test_verdict_pvalue_equals_an_independent_reference(tmp_path):
    rng = np.random.default_rng(10)
    X, names, fams, bases = _family_arrays(rng, 6, 3, 9, noise=0.3)
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(X, names=names, families=fams)
    # Half-way between a base and noise: a similarity inside the null's tail.
    queries = [0.5 * bases[k] + rng.normal(size=bases[k].shape) for k in range(6)]
    answers = index.query(queries, top=1)
    got = np.array([a["verdict"]["p_value"] for a in answers])
    expected = np.array([_verdict_ref(q, X, fams) for q in queries])
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert (got > 1 - (1 - 1 / (1 + index.summary()["n_null"])) ** 6).any()  # not all floors
    assert all((a["verdict"]["family"] is not None) == (a["verdict"]["p_value"] < 0.01)
               for a in answers)


def test_sampled_null_draws_real_cross_family_pairs():
    rng = np.random.default_rng(1)
    X, _, fams, _ = _family_arrays(rng, 6, 4, 8)
    codes = np.array([int(f[3:]) for f in fams])
    ranked = rank_module_rows(X)
    exact, method, n_cross = cross_family_null(ranked, codes)
    assert method == "exact" and n_cross == n_cross_family_pairs(codes) == (24**2 - 6 * 16) // 2
    S = spearman_from_ranks(ranked, ranked)
    i, j = np.triu_indices(len(X), 1)
    cross = codes[i] != codes[j]
    np.testing.assert_array_equal(exact, np.sort(S[i, j][cross]))
    sampled, method, _ = cross_family_null(ranked, codes, seed=7, exact_max=10, n_sample=5000)
    assert method == "sampled" and sampled.size == 5000
    # Every draw is the (bit-identical) similarity of some cross-family pair.
    assert np.isin(sampled, exact).all()
    again, _, _ = cross_family_null(ranked, codes, seed=7, exact_max=10, n_sample=5000)
    np.testing.assert_array_equal(sampled, again)
    # Uniform over the pairs: its quantiles follow the exact null's.
    np.testing.assert_allclose(np.quantile(sampled, [0.1, 0.5, 0.9]),
                               np.quantile(exact, [0.1, 0.5, 0.9]), atol=0.05)


def test_sidak_verdict_pvalue():
    assert family_wise_pvalue(0.5, 1) == 0.5
    assert family_wise_pvalue(0.1, 2) == pytest.approx(0.19, rel=1e-12)
    assert np.isnan(family_wise_pvalue(np.nan, 3))


def test_any_depth_is_compared_on_the_registry_grid(tmp_path):
    rng = np.random.default_rng(2)
    grid = 10
    base_a = rng.normal(size=(7, grid))
    base_b = rng.normal(size=(7, 14))
    index = ModelIndex(tmp_path / "r.sqlite")  # grid: the first model's depth
    with pytest.warns(RegistryWarning, match="b has 14 layers; the registry compares"):
        index.add([base_a, base_b], names=["a", "b"], families=["A", "B"])
    assert index.settings()["n_layers"] == grid
    query = resample_depth(base_b, 7) + 0.01 * rng.normal(size=(7, 7))  # 7 layers
    (answer,) = index.query([query], names=["q"], top=2)
    assert answer["neighbours"][0]["name"] == "b"
    expected = _spearman_ref(resample_depth(query, grid), resample_depth(base_b, grid))
    assert answer["neighbours"][0]["similarity"] == pytest.approx(expected, rel=1e-12)
    listed = {m["name"]: m["n_layers"] for m in index.list()}
    assert listed == {"a": 10, "b": 14}  # recorded at their native depth
    with pytest.raises(ValueError, match="10 points of relative depth"):
        ModelIndex(tmp_path / "r.sqlite", n_layers=12).query([query])


def test_unlabelled_models_are_neighbours_but_not_verdicts_nor_null(tmp_path):
    rng = np.random.default_rng(3)
    X, names, fams, bases = _family_arrays(rng, 4, 2, 8)
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(X, names=names, families=fams)
    n_null = index.summary()["n_null"]
    stray = bases[1] + 0.001 * rng.normal(size=bases[1].shape)
    index.add([stray], names=["stray"])  # no family
    assert index.summary()["n_null"] == n_null
    (answer,) = index.query([stray + 0.0001], top=2)
    assert answer["neighbours"][0]["name"] == "stray"
    assert answer["neighbours"][0]["family"] is None
    # The verdict's best match is the best *labelled* model.
    assert answer["verdict"]["p_value"] == pytest.approx(
        _verdict_ref(stray + 0.0001, X, fams), rel=1e-9)
    # With top=1 the neighbours hold no labelled model: the labelled models
    # are searched alone, to the same verdict.
    (alone,) = index.query([stray + 0.0001], top=1)
    assert [n["name"] for n in alone["neighbours"]] == ["stray"]
    assert alone["verdict"] == answer["verdict"]


def test_remove_is_exact(tmp_path):
    rng = np.random.default_rng(4)
    X, names, fams, bases = _family_arrays(rng, 5, 2, 8)
    queries = [b + 0.05 * rng.normal(size=b.shape) for b in bases]
    only = ModelIndex(tmp_path / "only.sqlite")
    only.add(X, names=names, families=fams)
    more = ModelIndex(tmp_path / "more.sqlite")
    more.add(X[::-1], names=names[::-1], families=fams[::-1])
    more.add([bases[0] + 0.01, bases[3]], names=["extra", "fam02-m9"],
             families=["fam00", "fam02"])
    assert len(more) == len(only) + 2
    with pytest.raises(KeyError, match="nope"):
        more.remove(["extra", "nope"])
    assert len(more) == len(only) + 2  # all or nothing
    more.remove(["extra", "fam02-m9"])
    assert more.list() == only.list()  # names, families, fingerprints, by name
    assert more.query(queries, top=4) == only.query(queries, top=4)
    s_more, s_only = more.summary(), only.summary()
    assert {k: v for k, v in s_more.items() if k != "path"} == \
        {k: v for k, v in s_only.items() if k != "path"}


def test_add_twice_signs_once_and_names_stay_unique(tmp_path, small_zoo, count_solves):
    index = ModelIndex(tmp_path / "r.sqlite")
    records = index.add(small_zoo.paths, families=small_zoo.labels)
    assert {r["status"] for r in records} == {"added"}
    first = count_solves()
    assert first > 0
    again = index.add(small_zoo.paths, families=small_zoo.labels)
    assert {r["status"] for r in again} == {"unchanged"}
    assert count_solves() == first
    # A new family label for a known model updates it, signing nothing.
    (changed,) = index.add(small_zoo.paths[:1], families=["relabelled"])
    assert changed["status"] == "updated" and count_solves() == first
    # A default name held by another checkpoint is refused, not overwritten.
    other = tmp_path / "elsewhere" / os.path.basename(small_zoo.paths[1])
    shutil.copytree(small_zoo.paths[4], other)  # another checkpoint, under a taken name
    with pytest.raises(ValueError, match="is taken by another model"):
        index.add([other])
    (explicit,) = index.add([other], names=["twin"])
    assert explicit["status"] == "added" and explicit["family"] is None
    # A link to a recorded checkpoint is that checkpoint: its record, unchanged.
    link = tmp_path / "link"
    os.symlink(small_zoo.paths[2], link)
    (same,) = index.add([link])
    assert same["name"] == os.path.basename(small_zoo.paths[2])
    assert same["status"] == "unchanged" and same["family"] == small_zoo.labels[2]
    # An explicit name over another model takes the family given, not the old one.
    (taken,) = index.add([small_zoo.paths[5]], names=[os.path.basename(small_zoo.paths[0])])
    assert taken["status"] == "updated" and taken["family"] is None
    assert count_solves() == first


def test_registry_is_the_cache_and_recorded_signature(tmp_path, small_zoo, count_solves):
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(small_zoo.paths[:3], families="x")
    before = count_solves()
    name = index.list()[0]["name"]
    signature = index.recorded_signature(name)
    assert count_solves() == before  # the spectra live in the registry file
    assert signature.spectra
    index.add(np.zeros((1, 7, 6)) + np.arange(6), names=["array"])
    with pytest.raises(ValueError, match="recorded from an array"):
        index.recorded_signature("array")


@pytest.mark.slow
def test_a_thousand_checkpoints_added_twice_sign_each_once(tmp_path, count_solves):
    from sklearn_specsig.datasets import make_model_zoo

    zoo = make_model_zoo(tmp_path / "zoo", n_families=50, n_derived=19, n_layers=2,
                         hidden_size=16, random_state=0)
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(zoo.paths, families=zoo.labels)
    n_matrices = count_solves()
    assert len(index) == 1000
    assert n_matrices >= 1000 * 2 * 4  # at least q/k/v/o of 2 layers each
    records = index.add(zoo.paths, families=zoo.labels)
    assert count_solves() == n_matrices
    assert [r["status"] for r in records] == ["unchanged"] * 1000


def _add_one_by_one(path, prefix, n, seed):
    rng = np.random.default_rng(seed)
    index = ModelIndex(path)
    for i in range(n):
        index.add(rng.normal(size=(1, 7, 6)), names=[f"{prefix}{i:03d}"], families=[prefix])


def test_two_processes_adding_at_once_lose_nothing(tmp_path):
    path = tmp_path / "r.sqlite"
    ModelIndex(path).add(np.ones((1, 7, 6)) * np.arange(6), names=["seed"], families=["s"])
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_one_by_one, args=(path, p, 60, k))
               for k, p in enumerate(["a", "b"])]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    names = [m["name"] for m in ModelIndex(path).list()]
    assert names == sorted(["seed", *(f"a{i:03d}" for i in range(60)),
                            *(f"b{i:03d}" for i in range(60))])
    with sqlite3.connect(path) as conn:
        # 1 + 2 * 60 transactions, each bumping the generation once.
        assert conn.execute("SELECT value FROM registry_meta WHERE key = 'generation'"
                            ).fetchone() == ("121",)


_LOOP = """
import sys, numpy as np
from sklearn_specsig.registry import ModelIndex
index = ModelIndex(sys.argv[1])
rng = np.random.default_rng(0)
for i in range(100000):
    index.add(rng.normal(size=(3, 7, 8)), names=[f"m{i:06d}-{j}" for j in range(3)],
              families=["f%d" % (i % 5)] * 3)
    print(i, flush=True)
"""


def test_a_killed_add_leaves_an_openable_registry_with_what_was_committed(tmp_path):
    path = tmp_path / "r.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _LOOP, str(path)], stdout=subprocess.PIPE,
                            text=True)
    committed = -1
    deadline = time.monotonic() + 120
    while committed < 20 and time.monotonic() < deadline:
        committed = int(proc.stdout.readline())
    time.sleep(0.05)  # kill it somewhere inside a later add
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    index = ModelIndex(path)
    names = [m["name"] for m in index.list()]
    assert len(names) % 3 == 0  # whole transactions only
    assert len(names) >= 3 * (committed + 1)
    assert names == sorted(f"m{i:06d}-{j}" for i in range(len(names) // 3) for j in range(3))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    (answer,) = index.query(np.random.default_rng(9).normal(size=(1, 7, 8)))
    assert len(answer["neighbours"]) == 5


def test_bad_input_gets_a_clear_error(tmp_path):
    index = ModelIndex(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="is empty; add models first"):
        index.query(np.zeros((1, 7, 4)))
    with pytest.raises(ValueError, match="need names="):
        index.add(np.zeros((2, 7, 4)))
    with pytest.raises(ValueError, match="not a multiple of 7"):
        index.add(np.zeros((2, 30)), names=["a", "b"])
    with pytest.raises(ValueError, match="2 names for 1"):
        index.add(np.zeros((1, 7, 4)), names=["a", "b"])
    with pytest.raises(ValueError, match="holds inf"):
        index.add(np.full((1, 7, 4), np.inf), names=["a"])
    with pytest.raises(ValueError, match="alpha"):
        ModelIndex(tmp_path / "x.sqlite", alpha=0)
    missing = tmp_path / "no-such-model"
    with pytest.raises(CheckpointNotFoundError, match="no-such-model"):
        index.add([missing])
    assert len(index) == 0  # nothing recorded by the failures
    newer = tmp_path / "newer.sqlite"
    ModelIndex(newer).add(np.arange(28.0).reshape(1, 7, 4), names=["a"])
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE registry_meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(StoreVersionError, match="Upgrade"):
        ModelIndex(newer).list()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot be opened"):
        ModelIndex(garbage).list()


def test_composes_with_the_estimators(tmp_path):
    from sklearn_specsig import SignatureClusterer

    rng = np.random.default_rng(5)
    X, names, fams, bases = _family_arrays(rng, 4, 3, 8)
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(X, names=names, families=fams)
    clf = index.lineage_classifier()
    queries = np.stack([b + 0.05 * rng.normal(size=b.shape) for b in bases]).reshape(4, -1)
    assert list(clf.predict(queries)) == ["fam00", "fam01", "fam02", "fam03"]
    Xg, got_names, got_fams = index.signatures()
    assert got_names == sorted(names) and Xg.shape == (12, 56)
    labels = SignatureClusterer(n_clusters=4, random_state=0).fit_predict(Xg)
    # Each family is one cluster.
    assert len({(f, c) for f, c in zip(got_fams, labels)}) == 4


def test_as_frame(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(6)
    X, names, fams, bases = _family_arrays(rng, 3, 2, 8)
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(X, names=names, families=fams)
    records = index.query(bases, top=2)
    frame = index.query(bases, top=2, as_frame=True)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 6
    assert list(frame["name"]) == [n["name"] for r in records for n in r["neighbours"]]
    assert list(frame["similarity"]) == [n["similarity"] for r in records
                                         for n in r["neighbours"]]


def test_a_one_layer_first_model_cannot_fix_the_grid(tmp_path):
    index = ModelIndex(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="cannot fix the registry's grid"):
        index.add(np.arange(7.0).reshape(1, 7, 1), names=["shallow"], families=["z"])
    assert len(index) == 0 and index.settings()["n_layers"] is None
    # With an explicit grid, a one-layer profile is recorded (its rows are
    # constant on the grid: nothing to compare, said as NaN similarity).
    index = ModelIndex(tmp_path / "g.sqlite", n_layers=8)
    index.add(np.arange(7.0).reshape(1, 7, 1), names=["shallow"], families=["z"])
    index.add(np.random.default_rng(0).normal(size=(1, 7, 8)), names=["deep"], families=["y"])
    (answer,) = index.query(np.random.default_rng(1).normal(size=(1, 7, 8)), top=2)
    assert np.isnan(answer["neighbours"][1]["similarity"])
    assert answer["neighbours"][1]["name"] == "shallow"


def test_a_bad_metric_is_refused_before_anything_is_recorded(tmp_path, small_zoo):
    with pytest.raises(ValueError, match="alpha_hil"):
        ModelIndex(tmp_path / "r.sqlite", metric="alpha_hil")
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(small_zoo.paths[:1])
    assert index.settings()["metric"] == "alpha_hill"


def test_an_empty_registry_answers_what_it_can(tmp_path):
    index = ModelIndex(tmp_path / "r.sqlite")
    assert len(index) == 0 and index.list() == []
    summary = index.summary()
    assert summary["n_models"] == 0 and summary["n_null"] == 0
    assert index.query([]) == []


def test_partial_failures_are_said_and_the_rest_recorded(tmp_path, small_zoo):
    index = ModelIndex(tmp_path / "r.sqlite")
    models = [*small_zoo.paths[:9], tmp_path / "missing"]  # the failure in the 2nd chunk
    with pytest.raises(CheckpointNotFoundError) as info:
        index.add(models)
    assert "1 of 10 models were not recorded; the other 9 were" in str(info.value.__notes__)
    assert len(index) == 9


def test_names_are_decided_over_the_whole_add(tmp_path, small_zoo):
    # Nine checkpoints called "model" in different folders: the ninth sits in
    # a second chunk, and still gets a name of its own.
    links = []
    for i in range(9):
        folder = tmp_path / f"x{i}"
        folder.mkdir()
        os.symlink(small_zoo.paths[i], folder / "model")
        links.append(folder / "model")
    index = ModelIndex(tmp_path / "r.sqlite")
    records = index.add(links)
    assert [r["name"] for r in records] == [f"x{i}/model" for i in range(9)]
    assert {r["status"] for r in records} == {"added"}


def test_duplicates_in_one_add_are_refused(tmp_path, small_zoo):
    index = ModelIndex(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match=r"names given twice in one add: \['a'\]"):
        index.add(np.ones((2, 7, 4)) * np.arange(4), names=["a", "a"], families=["f", "g"])
    with pytest.raises(ValueError, match="given twice in one add"):
        index.add([small_zoo.paths[0], small_zoo.paths[0]])
    assert len(index) == 0


def test_missing_family_labels_mean_unlabelled_and_a_re_add_keeps_the_label(tmp_path,
                                                                           small_zoo):
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(np.random.default_rng(0).normal(size=(4, 7, 6)), names=list("abcd"),
              families=["x", None, float("nan"), "y"])
    assert [m["family"] for m in index.list()] == ["x", None, None, "y"]
    assert index.summary()["n_families"] == 2
    index.add(small_zoo.paths[:1], families=["llama"])
    (again,) = index.add(small_zoo.paths[:1])  # no family given: the label stays
    assert again["status"] == "unchanged" and again["family"] == "llama"


def test_a_failing_registry_cache_is_not_advised_away(tmp_path, small_zoo, monkeypatch):
    from sklearn_specsig.store import SignatureStore

    def refuse(self, spectra):  # the store's own message for SQLite's error
        raise self._failed(sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(SignatureStore, "put_spectra", refuse)
    index = ModelIndex(tmp_path / "r.sqlite")
    with pytest.raises(StoreError) as info:
        index.add(small_zoo.paths[:1])
    assert "also a model registry: do not delete it" in str(info.value)
    assert "(disk I/O error)" in str(info.value) and "delete the file" not in str(info.value)


def test_the_metric_is_the_registrys_and_a_refused_add_fixes_nothing(tmp_path):
    path = tmp_path / "r.sqlite"
    with pytest.raises(ValueError, match="cannot fix the registry's grid"):
        ModelIndex(path, metric="log_norm").add(np.ones((1, 7, 1)), names=["x"])
    assert ModelIndex(path).settings() == {"metric": "alpha_hill", "n_layers": None}
    profiles = np.random.default_rng(0).normal(size=(2, 7, 5))
    ModelIndex(path, metric="log_norm").add(profiles, names=["a", "b"])
    assert ModelIndex(path).settings() == {"metric": "log_norm", "n_layers": 5}
    with pytest.raises(ValueError, match="records 'log_norm' signatures, not 'alpha_hill'"):
        ModelIndex(path, metric="alpha_hill").query(profiles)
    assert ModelIndex(path).query(np.empty((0, 7, 5))) == []
