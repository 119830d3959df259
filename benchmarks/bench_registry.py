"""Benchmark: a model registry of 100,000 signatures, added and queried.

Builds a :class:`sklearn_specsig.registry.ModelIndex` of ``--size``
synthetic signatures of 7 x ``--n-layers`` (default 100,000 x 7 x 32) in
families: a random base per family (one family in seven without a ``gate``
row, as GPT-2-style models) and noisy derivatives of it, family sizes drawn
from a geometric law of mean ``--family-size``, rows shuffled, a fraction
``--unlabelled`` recorded without a family.  It times

- ``add``: each :meth:`ModelIndex.add` of ``--batch`` signatures given as
  one array (one SQLite transaction each);
- ``cold``: the first query after the adds, which reads every row back,
  ranks the registry, draws the cross-family null and caches it in the file;
- ``warm``: one query of a new derivative on the warm index (median of
  ``--repeat``), and one of a model of another depth (``--query-layers``,
  resampled onto the registry's grid);
- ``reopen``: the first query of a fresh ``ModelIndex(path)``, the null
  read from the file;
- ``brute``: the reference, :func:`sklearn_specsig.kernels.pairwise_similarity`
  of the query (on the grid) against ``index.signatures()`` plus an argsort,
  whose top-k must be the index's, names and similarities bit for bit.

Memory: peak RSS of the process (``ru_maxrss``; it includes the benchmark's
own copy of the signatures), the registry's arrays in memory and the file's
size on disk.  Targets (issue): with 100,000 signatures, one query < 100 ms
and an add of 10,000 < 10 s.  Timings depend on the machine (BLAS threads,
other jobs): the load average is printed before and after.

Usage: ``python benchmarks/bench_registry.py [--size 100000] [--repeat 20]``
"""

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from sklearn_specsig.kernels import pairwise_similarity
from sklearn_specsig.registry import ModelIndex
from sklearn_specsig.signature import resample_depth

MB = 2.0**20


def _zoo(rng, n, n_modules, n_layers, family_size, noise, unlabelled):
    """(X (n, n_modules, n_layers), family labels or None, bases, family codes)."""
    sizes, total = [], 0
    while total < n:
        sizes.append(min(int(rng.geometric(1.0 / family_size)), n - total))
        total += sizes[-1]
    bases = rng.normal(3.5, 1.0, size=(len(sizes), n_modules, n_layers))
    bases[::7, 4] = np.nan
    codes = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    X = bases[codes]
    X += noise * rng.normal(size=X.shape)
    families = [f"fam{c:05d}" for c in codes]
    for i in np.flatnonzero(rng.random(n) < unlabelled):
        families[i] = None
    return X, families, bases, codes


def _median_time(f, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), min(times), out


def _timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _arrays_mb(index):
    """MB of the registry's arrays in memory (private attributes: an account only)."""
    state, seen, total = getattr(index, "_state", None), set(), 0
    if state is None:
        return float("nan")

    def count(a):
        nonlocal total
        if isinstance(a, np.ndarray):
            base = a.base if isinstance(a.base, np.ndarray) else a
            if id(base) not in seen:
                seen.add(id(base))
                total += base.nbytes
    count(getattr(state, "P", None))
    for si in (getattr(state, "index", None), getattr(state, "labelled_index", None)):
        for a in (getattr(si, "X_fit_", None), *getattr(si, "ranked_", ())):
            count(a)
    count((getattr(state, "null", None) or (None,))[0])
    return total / MB


def _brute(q_grid, X_all, names_all, k):
    S = pairwise_similarity(q_grid.reshape(1, -1), X_all, n_modules=q_grid.shape[0])[0]
    top = np.argsort(-np.where(np.isnan(S), -np.inf, S), kind="stable")[:k]
    return [names_all[i] for i in top], S[top]


def _same(answer, brute):
    names, sims = brute
    got = answer["neighbours"]
    return ([nb["name"] for nb in got] == names
            and np.array_equal(np.array([nb["similarity"] for nb in got]), sims))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--n-layers", type=int, default=32)
    p.add_argument("--query-layers", type=int, default=24)
    p.add_argument("--family-size", type=float, default=20.0)
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--unlabelled", type=float, default=0.0)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--brute-repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()

    rng = np.random.default_rng(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="specsig_bench_registry_"))
    path = workdir / "registry.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rss0 = _rss_mb()
    X, families, bases, codes = _zoo(rng, args.size, 7, args.n_layers, args.family_size,
                                     args.noise, args.unlabelled)
    names = [f"m{i:07d}" for i in range(args.size)]
    print(f"registry of {args.size:,} signatures 7 x {args.n_layers} in {len(bases):,} "
          f"families ({args.unlabelled:.0%} unlabelled), batches of {args.batch:,}, "
          f"cpus={os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}")
    print(f"file: {path}; RSS after imports {rss0:.0f} MB, with the benchmark's "
          f"signatures {_rss_mb():.0f} MB ({X.nbytes / MB:.0f} MB of them)")

    index = ModelIndex(path)
    add_s = []
    for start in range(0, args.size, args.batch):
        stop = min(start + args.batch, args.size)
        sec, records = _timed(lambda s=start, e=stop: index.add(
            X[s:e], names=names[s:e], families=families[s:e]))
        assert all(r["status"] == "added" for r in records)
        add_s.append(sec)
    peak_add = _peak_mb()

    # Queries: new derivatives of a family's base (not recorded), one of the
    # registry's depth and one of another depth (a resampled base).
    fam = int(codes[0])
    q = bases[fam] + args.noise * rng.normal(size=bases[fam].shape)
    q_other = (resample_depth(bases[fam], args.query_layers)
               + args.noise * rng.normal(size=(7, args.query_layers)))

    def ask(idx=index, prof=q):
        return idx.query([prof], top=args.top, names=["new"])[0]

    cold_s, answer = _timed(ask)
    peak_cold = _peak_mb()
    warm_s, warm_best, answer = _median_time(ask, args.repeat)
    other_s, other_best, answer_other = _median_time(lambda: ask(prof=q_other), args.repeat)
    summary = index.summary()
    arrays = _arrays_mb(index)

    fresh = ModelIndex(path)
    reopen_s, answer_reopen = _timed(lambda f=fresh: ask(idx=f))
    reopen_warm_s, reopen_best, _ = _median_time(lambda f=fresh: ask(idx=f), args.repeat)
    del fresh

    X_all, names_all, _ = index.signatures()
    brute_s, brute_best, brute = _median_time(lambda: _brute(q, X_all, names_all, args.top),
                                              args.brute_repeat)
    brute_other = _brute(resample_depth(q_other, args.n_layers), X_all, names_all, args.top)
    same = _same(answer, brute) and _same(answer_reopen, brute)
    same_other = _same(answer_other, brute_other)
    disk = sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal", "-shm")
               if os.path.exists(f"{path}{s}"))

    ms = "{:.1f} ms".format
    rows = [  # (measure, value, best of the repeats, target, met)
        (f"add {args.batch:,} (max of {len(add_s)})", f"{max(add_s):.2f} s",
         f"{min(add_s):.2f} s", "< 10 s", max(add_s) < 10),
        (f"add {args.batch:,} (mean)", f"{np.mean(add_s):.2f} s", "", "< 10 s",
         np.mean(add_s) < 10),
        ("first query after the adds (cold)", f"{cold_s:.2f} s", "", "", None),
        (f"query, warm (median of {args.repeat})", ms(1e3 * warm_s), ms(1e3 * warm_best),
         "< 100 ms", warm_s < 0.1),
        (f"query of {args.query_layers} layers, warm", ms(1e3 * other_s),
         ms(1e3 * other_best), "< 100 ms", other_s < 0.1),
        ("first query, reopened index (null cached)", f"{reopen_s:.2f} s", "", "", None),
        ("query, reopened index, warm", ms(1e3 * reopen_warm_s), ms(1e3 * reopen_best),
         "< 100 ms", reopen_warm_s < 0.1),
        ("brute force (pairwise_similarity+argsort)", ms(1e3 * brute_s),
         ms(1e3 * brute_best), "reference", None),
        ("same top-k as brute force (bit for bit)", f"{same}", "", "True", same),
        (f"  the same, {args.query_layers}-layer query", f"{same_other}", "", "True",
         same_other),
        ("peak RSS after the adds", f"{peak_add:.0f} MB", "", "", None),
        ("peak RSS after the cold query", f"{peak_cold:.0f} MB", "", "", None),
        ("peak RSS at the end", f"{_peak_mb():.0f} MB", "", "", None),
        ("registry arrays in memory", f"{arrays:.0f} MB", "", "", None),
        ("file on disk (with -wal, -shm)", f"{disk / MB:.0f} MB", "", "", None),
    ]
    header = f"{'measure':<44} {'value':>10} {'best':>10} {'target':>10} {'met':>7}"
    print(header)
    print("-" * len(header))
    for name, value, best, target, ok in rows:
        met = "" if ok is None else ("yes" if ok else "MISSED")
        print(f"{name:<44} {value:>10} {best:>10} {target:>10} {met:>7}")
    v = answer["verdict"]
    print(f"null: {summary['null_method']}, {summary['n_null']:,} of "
          f"{summary['n_cross_family_pairs']:,} cross-family pairs, "
          f"{summary['n_families']:,} families; query of fam{fam:05d}: verdict "
          f"{v['family']} (p = {v['p_value']:.3g}), top {answer['neighbours'][0]['name']} "
          f"s = {answer['neighbours'][0]['similarity']:.4f}")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
