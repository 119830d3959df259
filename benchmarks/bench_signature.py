"""Benchmark: signing one Llama-shaped checkpoint four ways, side by side.

The script writes (or reuses, under ``--workdir``) a synthetic checkpoint in
Hugging Face layout -- ``config.json`` with ``model_type: llama``,
safetensors shards of ``--shard-layers`` layers (default 1) and
``model.safetensors.index.json``, bf16 by default like real 7B checkpoints --
and signs the same q/k/v/o/gate/up/down
matrices with:

(a) ``specsig``        this library: ``compute_signature(path, cache=None)``,
                       streaming tensors, float32 ``syrk`` + LAPACK ``syevd``.
(b) ``weightwatcher``  WeightWatcher 0.7.7 ``analyze()`` on an ``nn.Module`` of
                       ``nn.Linear`` layers holding the same weights in
                       float32 (building it is timed too); least-work options:
                       no plots, ``randomize=False``, ``mp_fit=False``,
                       ``vectors=False``, ``detX=False``.  It casts to float64
                       and runs a full ``scipy.linalg.svd`` plus a KS power-law
                       fit per matrix.
(c) ``naive_svd``      the paper group's path: ``safetensors.torch.load_file``
                       of every shard (the whole state dict in memory), then
                       ``torch.linalg.svdvals(W.float())**2`` per matrix.
(d) ``floor``          only the arithmetic: per matrix a float32 small-side
                       Gram (``scipy.linalg.blas.ssyrk``) and
                       ``scipy.linalg.eigh(eigvals_only=True, driver="evd")``;
                       the weights are read and cast to float32 outside the
                       timer, so no I/O is counted.
With ``--device cuda`` and a GPU, (a) and (c) also run on CUDA.

Every method runs in its own subprocess (this script with ``--method X``), so
peak memories do not contaminate each other; the child times only its work
(imports excluded) and reports its own peak RSS (``VmHWM``).  The checkpoint files
are read once before the first method so every method sees a warm page cache.

Reading the table: ``wall s`` and ``cpu s`` (user+sys of all threads) are the
best of ``--repeat`` runs; ``peak MB`` is the child's peak RSS and ``+work MB``
that peak minus the RSS after imports (the footprint of the work itself);
compare it with the largest matrix (float32) and the checkpoint size printed
above the table: streaming (a) should need a small multiple of the former, the
naive path (c) the latter.  safetensors 0.8 hands out zero-copy mmap-backed
tensors, so the RSS of every method also counts the pages it has touched in
the shard it holds open (clean page cache): with big shards (``--shard-layers
16`` is like a real 10 GB 7B shard) that, not the arithmetic, sets the peak.
``x (a)`` is the method's wall time over (a)'s;
the targets are (a) >= 8x faster than (b), >= 4x faster than (c) and within
1.3x of the floor (d).  The correctness lines compare PL_Alpha_Hill of (a)
against (d) and (c), and log10 of the Frobenius and spectral norms of (a)
against WeightWatcher's ``log_norm`` / ``log_spectral_norm`` columns
(``log10 sum sv**2`` and ``log10 max sv**2`` of its float64 SVD, unnormalised:
the library's definitions).  WeightWatcher's ``alpha`` is a KS-fitted power
law, not PL_Alpha_Hill, and is not compared.  Timings on a shared machine are
noisy: the load average is printed before and after.
"""

import argparse
import hashlib
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SIZES = {  # hidden, intermediate, heads, kv heads, layers, vocab
    "small": (1024, 2752, 16, 16, 4, 32000),
    "1b": (2048, 5632, 32, 4, 22, 32000),  # TinyLlama-1.1B shapes
    "7b": (4096, 11008, 32, 32, 32, 32000),  # Llama-2-7B shapes
}
ROLE_PATH = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
             "down": "mlp.down_proj"}
SIG_RE = re.compile(r"model\.layers\.\d+\.(self_attn\.[qkvo]|mlp\.(gate|up|down))_proj\.weight$")
METHODS = ["specsig", "weightwatcher", "naive_svd", "floor"]
TARGETS = {"weightwatcher": (8.0, ">= 8x"), "naive_svd": (4.0, ">= 4x"),
           "floor": (1 / 1.3, "(a) <= 1.3x")}


# ---------------------------------------------------------------- checkpoint
def _matrix_shapes(h, inter, heads, kv):
    kv_dim = h // heads * kv
    return {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv_dim, h),
            "self_attn.v_proj": (kv_dim, h), "self_attn.o_proj": (h, h),
            "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h), "mlp.down_proj": (h, inter)}


def _weight(name, shape, dtype):
    """Deterministic weights with a non-trivial spectrum: Gaussian entries,
    log-normal column and row scales (a heavier tail than Marchenko-Pastur)."""
    import torch

    seed = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    gen = torch.Generator().manual_seed(seed % 2**62)
    w = torch.randn(shape, generator=gen).mul_(0.02)
    w.mul_(torch.exp(0.4 * torch.randn(shape[1], generator=gen)))
    w.mul_(torch.exp(0.2 * torch.randn(shape[0], 1, generator=gen)))
    return w.to(dtype)


def build_checkpoint(directory, size, n_layers, dtype_name, shard_layers=1):
    """Write the checkpoint, ``shard_layers`` layers per shard (the RAM it
    needs), embeddings and head in a last shard; or reuse it."""
    import torch
    from safetensors.torch import save_file

    h, inter, heads, kv, _, vocab = SIZES[size]
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": h, "intermediate_size": inter, "num_attention_heads": heads,
              "num_key_value_heads": kv, "num_hidden_layers": n_layers, "vocab_size": vocab,
              "rms_norm_eps": 1e-5, "torch_dtype": {"bf16": "bfloat16", "fp16": "float16",
                                                   "fp32": "float32"}[dtype_name]}
    directory = Path(directory)
    index_path = directory / "model.safetensors.index.json"
    if (index_path.exists() and (directory / "config.json").exists()
            and json.loads((directory / "config.json").read_text()) == config):
        shards = set(json.loads(index_path.read_text())["weight_map"].values())
        if all((directory / s).exists() for s in shards):
            return directory, False
    directory.mkdir(parents=True, exist_ok=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    groups = [range(i, min(i + shard_layers, n_layers)) for i in range(0, n_layers, shard_layers)]
    n_shards = len(groups) + 1
    weight_map, total = {}, 0
    for shard in range(n_shards):
        fname = f"model-{shard + 1:05d}-of-{n_shards:05d}.safetensors"
        if shard == len(groups):
            tensors = {"model.embed_tokens.weight": _weight("embed", (vocab, h), dtype),
                       "model.norm.weight": torch.ones(h, dtype=dtype),
                       "lm_head.weight": _weight("lm_head", (vocab, h), dtype)}
        else:
            tensors = {}
            for layer in groups[shard]:
                p = f"model.layers.{layer}."
                tensors.update({p + k + ".weight": _weight(p + k, s, dtype)
                                for k, s in _matrix_shapes(h, inter, heads, kv).items()})
                tensors[p + "input_layernorm.weight"] = torch.ones(h, dtype=dtype)
                tensors[p + "post_attention_layernorm.weight"] = torch.ones(h, dtype=dtype)
        save_file(tensors, str(directory / fname), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, fname))
        del tensors
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    index_path.write_text(json.dumps({"metadata": {"total_size": total},
                                      "weight_map": weight_map}, indent=2))
    return directory, True


def _shards(ckpt):
    index = json.loads((Path(ckpt) / "model.safetensors.index.json").read_text())
    return sorted(set(index["weight_map"].values()))


def _iter_signature_matrices(ckpt):
    """(name, torch tensor as stored) of every signature matrix, one at a time."""
    from safetensors import safe_open

    for shard in _shards(ckpt):
        with safe_open(str(Path(ckpt) / shard), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is no dict)
                if SIG_RE.match(name):
                    yield name, f.get_tensor(name)


# ------------------------------------------------------------------- methods
def run_specsig(ckpt, device):
    import sklearn_specsig.engine  # noqa: F401  (its lazy imports, ~1 s, not timed)
    from sklearn_specsig import compute_signature

    def work():
        sig = compute_signature(str(ckpt), cache=None, device=device, progress=False)
        entries = getattr(sig, "entries", None)
        if not entries:
            return dict(sig.spectra)
        return {f"model.layers.{e.layer}.{ROLE_PATH[e.role]}.weight": sig.spectra[e.label]
                for e in entries}

    return work


def run_weightwatcher(ckpt, device):
    import logging

    import torch
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)

    def work():
        root = torch.nn.Module()
        for name, tensor in _iter_signature_matrices(ckpt):
            parent = root
            *path, leaf, _ = name.split(".")
            for part in path:
                if not hasattr(parent, part):
                    parent.add_module(part, torch.nn.Module())
                parent = getattr(parent, part)
            linear = torch.nn.Linear(tensor.shape[1], tensor.shape[0], bias=False,
                                     device="meta")
            linear.weight = torch.nn.Parameter(tensor.float(), requires_grad=False)
            parent.add_module(leaf, linear)
        details = ww.WeightWatcher(model=root).analyze(
            plot=False, randomize=False, mp_fit=False, vectors=False, detX=False,
            fix_fingers=False, deltas=False, intra=False)
        return {"__ww__": {row["longname"] + ".weight": [row["log_norm"], row["log_spectral_norm"]]
                           for _, row in details.iterrows()}}

    return work


def run_naive_svd(ckpt, device):
    import torch
    from safetensors.torch import load_file

    dev = "cuda" if device == "cuda" else "cpu"

    def work():
        state = {}
        for shard in _shards(ckpt):  # the whole model in memory
            state.update(load_file(str(Path(ckpt) / shard), device=dev))
        return {name: (torch.linalg.svdvals(w.float()) ** 2).cpu().numpy()
                for name, w in state.items() if SIG_RE.match(name)}

    return work


def run_floor(ckpt, device):
    import scipy.linalg
    import torch  # noqa: F401  (safe_open(framework="pt") needs it: import before timing)
    from safetensors import safe_open  # noqa: F401
    from scipy.linalg.blas import ssyrk

    def work():
        out, busy = {}, [0.0, 0.0]
        for name, tensor in _iter_signature_matrices(ckpt):
            w = tensor.float().numpy()  # read and cast outside the timer
            t0, c0 = time.perf_counter(), time.process_time()
            gram = ssyrk(1.0, w.T, trans=1 if w.shape[0] <= w.shape[1] else 0, lower=1)
            out[name] = scipy.linalg.eigh(gram, eigvals_only=True, lower=True, driver="evd",
                                          overwrite_a=True, check_finite=False)
            busy[0] += time.perf_counter() - t0
            busy[1] += time.process_time() - c0
        out["__busy__"] = busy
        return out

    return work


def _rss_kb(field):
    """VmRSS / VmHWM of this process in kB.  VmHWM, unlike ``ru_maxrss``, is
    not inherited from the parent across fork+exec, so it is the child's own."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field))
    except OSError:  # not Linux: ru_maxrss (kB on Linux, bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)


def child(args):
    """Run one method in this process and write its result JSON (+ npz)."""
    work = globals()[f"run_{args.method}"](args.checkpoint, args.device)  # imports here
    base_kb = _rss_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    out = work()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if "__busy__" in out:  # the floor counts only its arithmetic
        wall, cpu = out.pop("__busy__")
    peak_kb = _rss_kb("VmHWM")
    result = {"wall_s": wall, "cpu_s": cpu, "peak_mb": peak_kb / 1024,
              "work_mb": (peak_kb - base_kb) / 1024, "n_matrices": len(out)}
    if args.device == "cuda" and args.method in ("specsig", "naive_svd"):
        import torch
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if "__ww__" in out:
        result["ww"] = out.pop("__ww__")
        result["n_matrices"] = len(result["ww"])
    else:
        np.savez(args.result + ".npz", **{k: np.asarray(v, np.float32) for k, v in out.items()})
    Path(args.result).write_text(json.dumps(result))


# ------------------------------------------------------------------- driver
def alpha_hill(lam):
    """PL_Alpha_Hill as in docs/design.md (x_min = median eigenvalue, included)."""
    lam = np.sort(np.clip(np.asarray(lam, np.float64), 0, None))
    i = lam.size // 2
    return 1 + (lam.size - i) / np.sum(np.log(lam[i:] / lam[i])) if lam[i] > 0 else math.nan


def run_method(args, ckpt, method, device, results_dir):
    """Best of --repeat subprocess runs of one method; a dict with an error on failure."""
    tag = method if device == "cpu" else f"{method}[{device}]"
    best = None
    for _ in range(args.repeat):
        out = results_dir / f"{tag}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--method", method, "--checkpoint", str(ckpt),
               "--device", device, "--result", str(out)]
        env = dict(os.environ)
        if args.threads:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(args.threads)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  cwd=REPO, env=env, check=False)
        except subprocess.TimeoutExpired:
            return tag, {"error": f"timed out after {args.timeout} s"}
        if proc.returncode != 0 or not out.exists():
            lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
            return tag, {"error": f"exit {proc.returncode}: {lines[-1][:150]}"}
        res = json.loads(out.read_text())
        if best is None or res["wall_s"] < best["wall_s"]:
            best = res
    return tag, best


def correctness(results_dir, results):
    """(a)'s spectra against the floor's, the naive SVD's and WeightWatcher's."""
    def eig(tag):
        ok = tag in results and "error" not in results[tag]
        return dict(np.load(results_dir / f"{tag}.json.npz")) if ok else None

    lines, checks = [], {}
    for a_tag, other_tag in (("specsig", "floor"), ("specsig", "naive_svd"),
                             ("specsig[cuda]", "floor"), ("naive_svd[cuda]", "floor")):
        a, other = eig(a_tag), eig(other_tag)
        if a is None or other is None:
            continue
        common = sorted(set(a) & set(other))
        err = max((abs(alpha_hill(a[n]) - alpha_hill(other[n])) / abs(alpha_hill(other[n]))
                   for n in common), default=math.nan)
        checks[f"alpha_hill_max_rel_err_{a_tag}_vs_{other_tag}"] = err
        lines.append(f"PL_Alpha_Hill {a_tag} vs {other_tag}: max rel err {err:.2e} over "
                     f"{len(common)} matrices")
    a, ww = eig("specsig"), results.get("weightwatcher", {}).get("ww")
    if a is not None and ww:
        common = sorted(set(a) & set(ww))
        for col, key, f in ((0, "log_norm", lambda lam: np.log10(np.sum(lam, dtype=np.float64))),
                            (1, "log_spectral_norm", lambda lam: np.log10(np.float64(lam.max())))):
            d = max((abs(f(a[n]) - ww[n][col]) for n in common), default=math.nan)
            checks[f"{key}_max_abs_diff_vs_ww"] = d
            lines.append(f"{key} specsig vs WeightWatcher: max abs diff {d:.2e} over "
                         f"{len(common)} matrices")
    return lines or ["no correctness check: (a) or its references did not run"], checks


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring / benchmarks/README.md.")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--layers", type=int, help="cut the depth (default: the size's own)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--shard-layers", type=int, default=1, help="layers per shard (real 7B "
                   "checkpoints hold ~16 in a 10 GB shard; writing needs that much RAM)")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "specsig_bench"),
                   help="where checkpoints and per-method results live (reused)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="cuda (or auto with a GPU) adds CUDA runs of (a) and (c)")
    p.add_argument("--repeat", type=int, default=1, help="best of N runs per method")
    p.add_argument("--threads", type=int, help="set OMP/OpenBLAS/MKL thread counts of every "
                   "method (default: the libraries' own, i.e. all cores)")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per method run")
    p.add_argument("--json", help="write all results to this file")
    p.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.method:
        sys.path.insert(0, str(REPO))
        return child(args)

    import torch

    n_layers = args.layers or SIZES[args.size][4]
    name = f"llama-{args.size}-L{n_layers}-{args.dtype}" + (
        f"-S{args.shard_layers}" if args.shard_layers > 1 else "")
    t0 = time.perf_counter()
    ckpt, built = build_checkpoint(Path(args.workdir) / name, args.size, n_layers, args.dtype,
                                   args.shard_layers)
    ckpt_mb = sum(f.stat().st_size for f in ckpt.glob("*.safetensors")) / 2**20
    h, inter = SIZES[args.size][:2]
    largest_mb = h * inter * 4 / 2**20
    print(f"checkpoint {ckpt} ({'written' if built else 'reused'} in "
          f"{time.perf_counter() - t0:.1f} s): {ckpt_mb:.0f} MB on disk, {7 * n_layers} "
          f"signature matrices, largest {h}x{inter} = {largest_mb:.0f} MB in float32")
    for f in ckpt.glob("*.safetensors"):  # warm the page cache for every method
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    load0 = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, threads per method: "
          f"{args.threads or 'library default'}, load average {load0[0]:.1f} before")
    results_dir = Path(args.workdir) / "results" / name
    results_dir.mkdir(parents=True, exist_ok=True)
    runs = [(m, "cpu") for m in args.methods.split(",")]
    if cuda:
        runs += [("specsig", "cuda"), ("naive_svd", "cuda")]
    results = {}
    for method, device in runs:
        if device == "cuda" and not torch.cuda.is_available():
            results[f"{method}[cuda]"] = {"error": "skipped: torch sees no CUDA GPU"}
            continue
        tag, res = run_method(args, ckpt, method, device, results_dir)
        results[tag] = res
        print(f"  ran {tag}: " + (res.get("error") or f"{res['wall_s']:.1f} s"), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} after (other jobs share these CPUs)\n")

    base = results.get("specsig", {}).get("wall_s")
    label = dict(zip(METHODS, "abcd"))
    print(f"{'method':<24}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}{'+work MB':>10}"
          f"{'x (a)':>8}  target")
    for tag, r in results.items():
        row = f"({label[tag.split('[')[0]]}) {tag:<20}"
        if "error" in r:
            print(row + "  " + r["error"])
            continue
        ratio = r["wall_s"] / base if base else math.nan
        target, text = TARGETS.get(tag, (None, ""))
        verdict = ("" if target is None or not base else
                   f"{text}: {'met' if ratio >= target else 'MISSED'}")
        gpu = f"  (GPU peak {r['gpu_peak_mb']:.0f} MB)" if "gpu_peak_mb" in r else ""
        print(f"{row}{r['wall_s']:9.2f}{r['cpu_s']:9.2f}{r['peak_mb']:9.0f}{r['work_mb']:10.0f}"
              f"{ratio:8.2f}  {verdict}{gpu}")
    lines, checks = correctness(results_dir, results)
    print("\n" + "\n".join(lines))
    if args.json:
        for r in results.values():
            r.pop("ww", None)
        Path(args.json).write_text(json.dumps(
            {"checkpoint": str(ckpt), "size": args.size, "layers": n_layers,
             "dtype": args.dtype, "checkpoint_mb": ckpt_mb, "largest_matrix_mb": largest_mb,
             "cpus": os.cpu_count(), "threads": args.threads, "load_avg": [load0[0], os.getloadavg()[0]],
             "repeat": args.repeat, "results": results, "correctness": checks}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
