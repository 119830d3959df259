"""Benchmark: the cost of the float64 rule of ``spectral.spectra``.

``spectra`` solves in float32 and solves a matrix again in float64 when
float32 cannot give x_min (the median eigenvalue, PL_Alpha_Hill's x_min) to
the promised accuracy: ``eps32 * lambda_max / x_min > X_MIN_FLOAT32_LIMIT``.
For each matrix this prints

- ``f32 s``: a plain float32 solve (``precision="float64"``'s float32 twin,
  without the rule), ``spectra s``: the library's solve, rule included;
- ``f64``: whether the rule sent the matrix to float64;
- ``lmax/xmin`` and the relative PL_Alpha_Hill error of the plain float32
  solve and of ``spectra`` against a float64 ``eigvalsh`` reference.

Rows: the Llama-2-7B shapes with ``bench_signature.py``'s weights (the
targets: no float64 solve, no added time), then planted outliers (a
Marchenko-Pastur-like bulk with a few directions ``ratio`` times the median,
as attention sinks make), where the rule does fire.

Usage: ``python benchmarks/bench_precision.py [--size 7b|1b|small] [--threads N]``
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rows(size):
    import torch
    from bench_signature import SIZES, _matrix_shapes, _weight

    h, inter, heads, kv, _, _ = SIZES[size]
    for name, shape in _matrix_shapes(h, inter, heads, kv).items():
        if name in ("self_attn.k_proj", "self_attn.v_proj", "mlp.up_proj") and kv == heads:
            continue  # same shape and law as q / gate: nothing new to time
        yield f"{size} {name}", _weight(f"model.layers.0.{name}.weight", shape,
                                          torch.bfloat16).float().numpy()


def _planted(n, ratio, seed=0):
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.chisquare(3.0, size=n))
    lam[-4:] = ratio * np.median(lam) * np.linspace(0.4, 1.0, 4)
    u = np.linalg.qr(rng.standard_normal((n, n)))[0]
    v = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return ((u * np.sqrt(lam)) @ v.T).astype(np.float32)


def _timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="7b", choices=["small", "1b", "7b"])
    p.add_argument("--planted-n", type=int, default=1024)
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)

    import torch

    from sklearn_specsig import spectral
    from sklearn_specsig.errors import SpectralWarning
    from sklearn_specsig.spectral import _solvers

    cases = list(_rows(args.size))
    cases += [(f"planted n={args.planted_n} ratio {r:.0e}", _planted(args.planted_n, r))
              for r in (1e2, 1e3, 1e4, 1e6)]
    print(f"load average {os.getloadavg()[0]:.2f}; X_MIN_FLOAT32_LIMIT = "
          f"{spectral.X_MIN_FLOAT32_LIMIT:g}")
    header = (f"{'matrix':<34} {'shape':>12} {'lmax/xmin':>10} {'f32 s':>7} "
              f"{'spectra s':>9} {'f64':>4} {'err f32':>9} {'err spectra':>11}")
    print(header)
    print("-" * len(header))
    warnings.simplefilter("ignore", SpectralWarning)
    totals = np.zeros(2)
    for name, w in cases:
        ref = spectral.reference_spectrum(w)
        alpha_ref = spectral.alpha_hill(ref)
        # Plain float32: the CPU path without the rule.
        plain, t32 = _timed(lambda: _solvers._cpu_spectra([torch.as_tensor(w)],
                                                           torch.float32)[0])
        calls = []
        original = _solvers._solve

        def counting(tensors, dtype, device):
            calls.append(dtype)
            return original(tensors, dtype, device)

        _solvers._solve = counting
        try:
            got, t_rule = _timed(lambda: spectral.spectrum(w))
        finally:
            _solvers._solve = original
        went64 = torch.float64 in calls
        err32 = abs(spectral.alpha_hill(plain) / alpha_ref - 1)
        err = abs(spectral.alpha_hill(got) / alpha_ref - 1)
        totals += (t32, t_rule)
        print(f"{name:<34} {str(w.shape):>12} {ref[-1] / ref[ref.size // 2]:>10.3g} "
              f"{t32:>7.2f} {t_rule:>9.2f} {'yes' if went64 else 'no':>4} "
              f"{err32:>9.1e} {err:>11.1e}", flush=True)
    print(f"\ntotal: plain float32 {totals[0]:.2f} s, spectra {totals[1]:.2f} s")


if __name__ == "__main__":
    main()
