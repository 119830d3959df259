"""``specsig index add|query|list|remove`` and ``specsig report``: a model
registry from the shell (:class:`~sklearn_specsig.registry.ModelIndex`)."""

import sys
import warnings

from ..errors import RegistryWarning
from ..registry import ModelIndex
from ..store import file_kind
from ._commands import FAILED, OK, PARTIAL, sign
from ._output import format_table, print_json

__all__ = ["cmd_index_add", "cmd_index_list", "cmd_index_query", "cmd_index_remove",
           "cmd_report"]


def _existing(args):
    """The registry of a command that reads one: refused when there is none
    (a typo must not create an empty registry)."""
    index = _index(args)
    if not index.file_path.is_file():
        raise ValueError(f"no registry at {index.file_path}; create it with "
                         f"'specsig index add {args.registry} MODEL... --family LABEL'.")
    if file_kind(index.file_path) not in ("registry", "unknown"):
        raise ValueError(f"{index.file_path} is not a model registry (no registry tables); "
                         "give the file that 'specsig index add' wrote.")
    return index


def _index(args):
    cache = args.cache if hasattr(args, "cache") else "registry"
    return ModelIndex(args.registry, alpha=getattr(args, "alpha", 0.01),
                      n_layers=getattr(args, "n_layers", None),
                      cache=None if str(cache).lower() in ("none", "off", "no") else cache,
                      device=getattr(args, "device", "auto"))


def _signing_args(args, index):
    """The options :func:`sign` reads, with the registry as the cache."""
    args.metric = index.settings()["metric"]
    if str(args.cache) == "registry":
        args.cache = str(index.file_path)
    return args


def cmd_index_add(args):
    if args.name is not None and len(args.models) != 1:
        raise ValueError(f"--name names one model; {len(args.models)} were given.")
    index = _index(args)
    with warnings.catch_warnings(record=True) as caught:
        # A degenerate matrix warns per tensor, and a failed model has its
        # record: only the registry's notes (a coarser grid) are news here.
        warnings.simplefilter("always")
        records = index.add(args.models, families=args.family,
                            names=None if args.name is None else [args.name],
                            n_jobs=args.jobs, progress=not args.no_progress, on_error="warn")
    for w in caught:
        if issubclass(w.category, RegistryWarning) and "was not recorded" not in str(w.message):
            print(f"specsig: note: {w.message}", file=sys.stderr)
    failed = [r for r in records if r["status"] == "failed"]
    for r in failed:
        print(f"specsig: cannot add {r['name']}: {r['error']}", file=sys.stderr)
    if args.json:
        print_json({"registry": str(index.file_path), "models": records})
    else:
        print(format_table(["name", "family", "status"],
                           [[r["name"], r["family"] or "-", r["status"]] for r in records]))
        print(f"{len(index)} models in {index.file_path}")
    if len(failed) == len(records):
        return FAILED
    return PARTIAL if failed else OK


def query_json(index, answers, failed=None):
    """What ``index query --json`` prints (the report embeds the same)."""
    summary = index.summary()
    return {
        "registry": summary["path"],
        "alpha": summary["alpha"],
        "null": {k: summary[k] for k in ("null_method", "n_null", "n_cross_family_pairs",
                                         "smallest_p_value", "smallest_verdict_p_value")},
        "queries": answers,
        "failed": failed or {},
    }


def cmd_index_query(args):
    index = _existing(args)
    if len(index) == 0:
        raise ValueError(f"the registry {index.file_path} is empty; add models first.")
    ids, signatures, failed = sign(args.models, _signing_args(args, index))
    answers = index.query(signatures, names=ids, top=args.top, alpha=args.alpha)
    if args.json:
        print_json(query_json(index, answers, failed))
        return PARTIAL if failed else OK
    summary = index.summary()
    for a in answers:
        verdict = a["verdict"]
        if summary["n_families"] == 0:
            said = "none (no recorded model has a family: add some with --family)"
        elif verdict["p_value"] != verdict["p_value"]:  # NaN
            said = "none (no module row comparable with a labelled model)"
        else:
            said = verdict["family"] or f"none (p >= alpha = {args.alpha})"
        print(f"{a['model']}: verdict {said}, p = {verdict['p_value']:.3g}")
        print(format_table(["neighbour", "family", "similarity", "p-value"],
                           [[n["name"], n["family"] or "-", n["similarity"], n["p_value"]]
                            for n in a["neighbours"]]))
        print()
    print(f"p-value: rank among {summary['n_null']} similarities of models of different "
          f"families ({summary['null_method']}; smallest {summary['smallest_p_value']:.2g}); "
          f"verdict p-value: how likely an unrelated model is to match one of the "
          f"{summary['n_families']} families this well (a normal model of recorded models' "
          f"best match to other families, floored, corrected over the families; smallest "
          f"{summary['smallest_verdict_p_value']:.2g}); a family is named below alpha = "
          f"{args.alpha}")
    if summary["smallest_verdict_p_value"] >= args.alpha:
        print(f"specsig: note: with {summary['n_models']} models in {summary['n_families']} "
              f"families no verdict can reach alpha = {args.alpha}; record more models "
              "(with --family) to sharpen the p-values", file=sys.stderr)
    return PARTIAL if failed else OK


def cmd_index_list(args):
    index = _existing(args)
    models = index.list()
    if args.json:
        print_json({"registry": str(index.file_path), "models": models})
    else:
        print(format_table(["name", "family", "architecture", "layers", "source"],
                           [[m["name"], m["family"] or "-", m["architecture"] or "-",
                             m["n_layers"], m["source"] or "-"] for m in models]))
        print(f"{len(models)} models in {index.file_path}")
    return OK


def cmd_index_remove(args):
    index = _existing(args)
    try:
        index.remove(args.names)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    print(f"removed {len(args.names)} models; {len(index)} left in {index.file_path}")
    return OK


def cmd_report(args):
    from ..registry import write_report

    index = _existing(args)
    if len(index) == 0:
        raise ValueError(f"the registry {index.file_path} is empty; add models first.")
    signatures, ids, failed = [], [], {}
    if args.models:
        ids, signatures, failed = sign(args.models, _signing_args(args, index))
    write_report(index, args.output, models=signatures, names=ids, top=args.top,
                 esd_model=args.esd)
    print(f"wrote {args.output} ({len(index)} recorded models, {len(ids)} queries)")
    return PARTIAL if failed else OK
