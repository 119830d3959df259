"""Aligning the layers of models of different depth (paper Sec. 5.4, Table 7).

Signatures of models with different numbers of layers cannot be compared
column by column.  ``align_depth`` z-scores each module row over its own
layers and finds, by dynamic programming, the order-preserving map of the
shorter model's layers into the deeper model's that costs least (mean
absolute difference of the z-scores).  The paper aligns Llama-3.2-3B with
Llama-3.1-8B (cost 0.26, similarity 0.89, skipping layers {11, 17, 23, 29})
against an unrelated Qwen2.5-7B (cost 0.95, similarity 0.77): a related,
depth-pruned model costs about 3.7x less.

This script rebuilds that experiment, offline:

- the deep model is a synthetic base model (``make_model_zoo``);
- the *related* shallow model is a fine-tune of it with blocks removed by
  ``sklearn_specsig.perturb.drop_layers`` (the skipped layers are known);
- the *unrelated* shallow model is another family's base with as many
  blocks removed.

It prints the Table-7 rows, and whether the layers the alignment skips are
the ones that were dropped.  ``--real`` also aligns SmolLM2-135M (30 layers,
from PyPI) with a copy that lost every sixth block.

Usage::

    python examples/depth_alignment.py
    python examples/depth_alignment.py --quick
    python examples/depth_alignment.py --real
"""

import argparse
import tempfile
from pathlib import Path

from sklearn_specsig import align_depth, compute_signature
from sklearn_specsig.datasets import make_model_zoo
from sklearn_specsig.perturb import drop_layers


def row(name, deep, shallow, dropped=None):
    result = align_depth(deep, shallow)
    out = {"candidate": name, "cost": float(result.cost),
           "similarity": float(result.similarity), "skipped": list(result.skipped)}
    if dropped is not None:
        out["dropped"] = list(dropped)
    return out


def print_rows(title, rows):
    print(title)
    print(f"{'candidate':<34}{'matching cost':>14}{'similarity':>12}  skipped layers")
    for r in rows:
        skipped = r["skipped"] if len(r["skipped"]) <= 8 else f"{len(r['skipped'])} layers"
        note = "" if "dropped" not in r else (
            "  (= the dropped ones)" if r["skipped"] == r["dropped"] else f"  (dropped {r['dropped']})")
        print(f"{r['candidate']:<34}{r['cost']:>14.3f}{r['similarity']:>12.3f}  {skipped}{note}")


def synthetic(root, n_layers, dropped, seed):
    zoo = make_model_zoo(root / "zoo", n_families=2, n_derived=1, n_layers=n_layers,
                         hidden_size=32, architectures=("llama", "qwen2"), random_state=seed)
    base, related, other = zoo.base_paths[0], zoo.derived_paths[0], zoo.base_paths[1]
    shallow = drop_layers(related, root / "related-shallow", dropped)
    unrelated = drop_layers(other, root / "unrelated-shallow", dropped)
    sign = lambda p: compute_signature(p, cache=root / "store", progress=False)
    deep = sign(base)
    return [
        row(f"fine-tune, {n_layers - len(dropped)} of {n_layers} layers", deep, sign(shallow),
            dropped),
        row(f"other family, {n_layers - len(dropped)} layers", deep, sign(unrelated)),
    ]


def real(root):
    from sklearn_specsig.datasets import fetch_pretrained

    smollm2 = fetch_pretrained("smollm2")
    dropped = [5, 11, 17, 23, 29]
    shallow = drop_layers(smollm2, root / "smollm2-shallow", dropped)
    minilm = fetch_pretrained("minilm")
    sign = lambda p: compute_signature(p, cache="auto", progress=False)
    deep = sign(smollm2)
    return [
        row("SmolLM2-135M without 5 blocks", deep, sign(shallow), dropped),
        row("all-MiniLM-L6-v2 (6 layers)", deep, sign(minilm)),
    ]


def run(n_layers=16, dropped=(3, 7, 11), seed=0, with_real=False):
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        results["synthetic"] = synthetic(root, n_layers, list(dropped), seed)
        print_rows(f"Synthetic zoo, {n_layers}-layer base model (paper Table 7)",
                   results["synthetic"])
        if with_real:
            results["real"] = real(root)
            print()
            print_rows("Real weights: SmolLM2-135M, 30 layers", results["real"])
    related, unrelated = results["synthetic"]
    print(f"\nThe related model costs {unrelated['cost'] / related['cost']:.1f}x less than the "
          "unrelated one (paper: 3.7x).")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", action="store_true", help="also align SmolLM2-135M (PyPI)")
    parser.add_argument("--quick", action="store_true", help="10 layers, 2 dropped")
    args = parser.parse_args(argv)
    if args.quick:
        return run(10, (3, 6), seed=args.seed)
    return run(seed=args.seed, with_real=args.real)


if __name__ == "__main__":
    main()
