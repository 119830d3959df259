"""Lineage classification: which base model was each model derived from?
(paper Sec. 5.1, Fig. 3 and Fig. 7)

The paper routes 128 derived models to one of 8 base families by the
highest similarity of their spectral signatures to the base models (Eq. 4),
with three kernels (Spearman, RBF, cosine), and reports 98.44% accuracy.
This script runs the same protocol, offline, on a synthetic zoo written by
``make_model_zoo``: ``--n-families`` base models of four architectures,
each with ``--n-derived`` fine-tune-like variants (a low-rank update,
Gaussian noise, magnitude pruning; see ``zoo.edits``).

It prints

1. accuracy per family and kernel (the numbers behind Fig. 3);
2. open-set behaviour: the classifier is fitted without one family and
   given ``threshold=0.5``; the held-out family's models should be answered
   ``"unknown"`` while the known families' derived models are still
   accepted;

and with ``--figures DIR`` draws the similarity heatmap with the lineage on
its axes (Fig. 7) and the layer-wise PL_Alpha_Hill profiles of one family
against another (Fig. 1) into ``DIR``.

Usage::

    python examples/lineage_classification.py                  # 8 families x 5 models, 12 layers
    python examples/lineage_classification.py --quick          # seconds
    python examples/lineage_classification.py --figures docs   # also draw the figures
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from sklearn_specsig import (
    LineageClassifier,
    SignatureStore,
    SpectralSignatureTransformer,
    compute_signature,
)
from sklearn_specsig.datasets import make_model_zoo

KERNELS = ("spearman", "rbf", "cosine")


def classify(Z, zoo):
    """Accuracy of each kernel, per family, routing derived models to bases."""
    labels = np.asarray(zoo.labels)
    is_base = np.asarray(zoo.is_base)
    accuracy = {}
    for kernel in KERNELS:
        model = LineageClassifier(kernel=kernel).fit(Z[is_base], labels[is_base])
        predicted = model.predict(Z[~is_base])
        truth = labels[~is_base]
        accuracy[kernel] = {f: float(np.mean(predicted[truth == f] == f)) for f in zoo.families}
        accuracy[kernel]["all"] = float(np.mean(predicted == truth))
    return accuracy


def open_set(Z, zoo, held_out, threshold=0.5):
    """Fit without ``held_out``; share of its models rejected, of the others accepted."""
    labels = np.asarray(zoo.labels)
    is_base = np.asarray(zoo.is_base)
    known = is_base & (labels != held_out)
    model = LineageClassifier(threshold=threshold).fit(Z[known], labels[known])
    predicted = model.predict(Z[~is_base])
    truth = labels[~is_base]
    out = truth == held_out
    return {
        "rejected_held_out": float(np.mean(predicted[out] == "unknown")),
        "accepted_known": float(np.mean(predicted[~out] == truth[~out])),
        "n_held_out": int(out.sum()),
        "n_known": int((~out).sum()),
    }


def draw(Z, zoo, store, figures):
    """Fig. 7 (heatmap with lineage) and Fig. 1 (layer profiles) as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sklearn_specsig.kernels import pairwise_similarity
    from sklearn_specsig.plotting import plot_layer_profiles, plot_similarity_heatmap

    figures = Path(figures)
    figures.mkdir(parents=True, exist_ok=True)
    names = [Path(p).name for p in zoo.paths]
    ax = plot_similarity_heatmap(pairwise_similarity(Z), labels=names, families=list(zoo.labels))
    ax.figure.set_size_inches(9, 8)
    ax.figure.savefig(figures / "similarity_heatmap.png", dpi=72)
    plt.close(ax.figure)

    first, other = zoo.families[0], zoo.families[1]
    paths = [p for p, f in zip(zoo.paths, zoo.labels) if f == first][:3]
    paths.append(zoo.base_paths[1])
    sigs = [compute_signature(p, cache=store, progress=False) for p in paths]
    labels = [Path(p).name for p in paths]
    axes = plot_layer_profiles(sigs, labels=labels, roles=("q", "v", "up", "down"))
    axes[0].figure.set_size_inches(11, 3)
    axes[0].figure.suptitle(f"{first}: base and derived models, against {other}'s base")
    axes[0].figure.savefig(figures / "layer_profiles.png", dpi=72)
    plt.close(axes[0].figure)
    return [figures / "similarity_heatmap.png", figures / "layer_profiles.png"]


def run(n_families, n_derived, n_layers, hidden_size, seed=0, figures=None):
    with tempfile.TemporaryDirectory() as root:
        zoo = make_model_zoo(Path(root) / "zoo", n_families=n_families, n_derived=n_derived,
                             n_layers=n_layers, hidden_size=hidden_size, random_state=seed)
        store = SignatureStore(Path(root) / "store")
        Z = SpectralSignatureTransformer(cache=store).fit_transform(zoo.paths)
        accuracy = classify(Z, zoo)
        rejection = open_set(Z, zoo, held_out=zoo.families[-1])
        drawn = draw(Z, zoo, store, figures) if figures else []

    n_derived_total = int(np.sum(~np.asarray(zoo.is_base)))
    print(f"Lineage of {n_derived_total} derived models among {n_families} base models "
          "(accuracy per family; paper Fig. 3)")
    print(f"{'family':<16}" + "".join(f"{k:>10}" for k in KERNELS))
    for family in [*zoo.families, "all"]:
        print(f"{family:<16}" + "".join(f"{accuracy[k][family]:>10.2f}" for k in KERNELS))
    print(f"\nOpen set, threshold 0.5, {zoo.families[-1]} held out: "
          f"{rejection['rejected_held_out']:.0%} of its {rejection['n_held_out']} models "
          f"answered 'unknown', {rejection['accepted_known']:.0%} of the "
          f"{rejection['n_known']} others routed to their family.")
    for path in drawn:
        print(f"wrote {path}")
    return {"accuracy": accuracy, "open_set": rejection, "figures": drawn}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-families", type=int, default=8)
    parser.add_argument("--n-derived", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figures", metavar="DIR", help="draw the figures into DIR")
    parser.add_argument("--quick", action="store_true", help="5 families x 3 models, 6 layers")
    args = parser.parse_args(argv)
    if args.quick:
        return run(5, 2, 6, 16, seed=args.seed, figures=args.figures)
    return run(args.n_families, args.n_derived, 12, 48, seed=args.seed, figures=args.figures)


if __name__ == "__main__":
    main()
