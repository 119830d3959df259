"""Benchmark: top-k search over a zoo of stored signatures.

For stores of ``n_ref`` random signatures of 7 x 32 (one in seven without a
``gate`` row, as GPT-2-style models), times

- ``fit``: ranking every stored module row once
  (:class:`sklearn_specsig.search.SignatureIndex`);
- ``query``: one query's top ``k`` (median of ``--repeat`` runs), and the
  per-query time of a batch of ``--batch`` queries;
- ``brute``: what a caller would do without the index, the full
  :func:`sklearn_specsig.kernels.pairwise_similarity` row of the query
  against the store (which re-ranks the whole store) plus an argsort;

and checks that both give the same top-``k``, bit for bit: the same
indices and the same similarities (the Spearman core makes a pair's value
independent of the chunking, so the two agree exactly, ties included).
Timings depend on the machine (the BLAS and its threads, memory
bandwidth); the load average is printed before and after.  Target: one query against 100,000
signatures well under a second on a laptop CPU.

Usage: ``python benchmarks/bench_search.py [--sizes 1000 10000 100000]``
"""

import argparse
import os
import time

import numpy as np

from sklearn_specsig.kernels import pairwise_similarity
from sklearn_specsig.search import SignatureIndex


def _zoo(rng, n, n_modules, n_layers):
    X = rng.normal(3.5, 1.0, size=(n, n_modules, n_layers))
    X[::7, 4] = np.nan
    return X.reshape(n, -1)


def _median_time(f, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--n-modules", type=int, default=7)
    parser.add_argument("--n-layers", type=int, default=32)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--brute-repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    print(f"signatures {args.n_modules} x {args.n_layers}, k={args.k}, "
          f"cpus={os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}")
    header = (f"{'n_ref':>8} {'fit s':>7} {'query ms':>9} {'batch ms/q':>11} "
              f"{'brute ms':>9} {'speedup':>8} {'same top-k':>10}")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        X = _zoo(rng, n, args.n_modules, args.n_layers)
        Q = _zoo(rng, args.batch, args.n_modules, args.n_layers)
        index = SignatureIndex(n_modules=args.n_modules)
        t = time.perf_counter()
        index.fit(X)
        fit_s = time.perf_counter() - t
        q = Q[:1]
        index.kneighbors(q, args.k)  # warm-up
        query_s, (sim, ind) = _median_time(
            lambda index=index, q=q: index.kneighbors(q, args.k), args.repeat)
        batch_s, _ = _median_time(
            lambda index=index, Q=Q: index.kneighbors(Q, args.k), max(1, args.repeat // 3))

        def brute(q=q, X=X):
            S = pairwise_similarity(q, X, n_modules=args.n_modules)[0]
            top = np.argsort(-np.where(np.isnan(S), -np.inf, S), kind="stable")[: args.k]
            return S[top], top

        brute_s, (bsim, btop) = _median_time(brute, args.brute_repeat)
        same = bool(np.array_equal(ind[0], btop) and np.array_equal(sim[0], bsim))
        print(f"{n:>8} {fit_s:>7.2f} {1e3 * query_s:>9.2f} {1e3 * batch_s / len(Q):>11.3f} "
              f"{1e3 * brute_s:>9.1f} {brute_s / query_s:>7.0f}x {same!s:>10}")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
