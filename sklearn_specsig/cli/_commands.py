"""The subcommands of ``specsig``: each takes parsed arguments, prints, and
returns an exit code."""

import sys
import warnings

import numpy as np

from ..architectures import ROLES
from ..engine import sign_models
from ..signature import as_profiles
from ._output import (
    format_table,
    print_json,
    read_scores,
    short_names,
    write_signatures,
)

#: Exit codes (README "The specsig command").
OK, FAILED, USAGE, PARTIAL = 0, 1, 2, 3

#: What the "different depths" error of :func:`flatten` tells the user to do.
_DEPTH_HINT = "pass --n-layers N to resample them onto a common relative-depth grid"


def _cache(value):
    return None if value.lower() in ("none", "off", "no") else value


def sign(models, args):
    """Sign ``models`` as the common options say.

    Models of different depths are signed as they are; :func:`flatten`
    says so when a command needs one depth.

    Returns
    -------
    ids : list of str
        Short names of the models that could be read.
    signatures : list of Signature
    failed : dict of str to str
        Model as given -> error message, for those that could not be read.
    """
    kwargs = {
        "device": args.device,
        "cache": _cache(args.cache),
        "precision": "float32",
        "progress": not args.no_progress,
    }
    with warnings.catch_warnings():
        # A degenerate matrix warns once per tensor (and per metric call);
        # the command says instead how many cells of each model are NaN.
        warnings.simplefilter("ignore")
        results = sign_models(list(models), args.metric, kwargs, args.jobs, "warn")
    names = short_names(models)
    ids, signatures, failed = [], [], {}
    for model, name, result in zip(models, names, results):
        if isinstance(result, BaseException):
            failed[str(model)] = f"{type(result).__name__}: {result}"
            print(f"specsig: cannot sign {model}: {result}", file=sys.stderr)
            continue
        ids.append(name)
        signatures.append(result)
        _note_nan_cells(name, result)
    if not signatures:
        raise ValueError("no model could be read; see the messages above.")
    return ids, signatures, failed


#: Undefined matrices named per model before the rest are counted.
_NOTES_SHOWN = 5


def _note_nan_cells(name, signature):
    """Say which NaN cells a user can act on: a matrix that is there but
    undefined (named, with the reason), or a role missing from some blocks.
    A role the architecture lacks altogether (GPT-2's gate) is not news."""
    undefined = signature.undefined_matrices()
    for reason in list(undefined.values())[:_NOTES_SHOWN]:
        print(f"specsig: note: {name}: {reason}", file=sys.stderr)
    if len(undefined) > _NOTES_SHOWN:
        print(f"specsig: note: {name}: and {len(undefined) - _NOTES_SHOWN} more matrices "
              "with an undefined value", file=sys.stderr)
    for role, layers in signature.missing_layers().items():
        print(f"specsig: note: {name}: no {role} matrix was found at layer(s) "
              f"{layers}; those cells are NaN", file=sys.stderr)


def flatten(signatures, n_layers):
    """(n_models, 7 * L) rows, resampled onto ``n_layers`` points when set.

    Through :func:`~sklearn_specsig.signature.as_profiles`, the package's one
    coercion, so the "different depths" error is the library's, with the
    command line's option as the remedy.
    """
    profiles = as_profiles(list(signatures), len(ROLES), n_layers=n_layers, hint=_DEPTH_HINT)
    return profiles.reshape(len(profiles), -1)


def _status(failed):
    return PARTIAL if failed else OK


# -- signature ----------------------------------------------------------------


def _row_means(values):
    """Mean over layers of each module row; NaN for a row the model lacks."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=1)
    count = finite.sum(axis=1)
    return np.divide(total, count, out=np.full(len(values), np.nan), where=count > 0)


def cmd_signature(args):
    ids, signatures, failed = sign(args.models, args)
    Z = flatten(signatures, args.n_layers)
    n_layers = Z.shape[1] // len(ROLES)
    if args.output:
        write_signatures(args.output, ids, Z, n_layers)
    if args.json:
        print_json({
            "models": [
                {"model": i, "architecture": s.architecture, "n_layers": s.n_layers,
                 "fingerprint": s.fingerprint, "metric": s.metric,
                 "values": dict(zip(ROLES, s.values))}
                for i, s in zip(ids, signatures)
            ],
            "failed": failed,
            "output": args.output,
        })
    else:
        rows = [[i, s.architecture, s.n_layers, *_row_means(s.values)] for i, s in zip(ids, signatures)]
        print(f"mean {args.metric} per module over layers")
        print(format_table(["model", "architecture", "layers", *ROLES], rows))
        if args.output:
            print(f"wrote {len(ids)} signatures ({Z.shape[1]} features) to {args.output}")
    return _status(failed)


# -- similarity -----------------------------------------------------------------


def similarity_table(ids, S):
    """Rows named ``"i name"``, columns by index only, so that a dozen models
    still fit a terminal."""
    header = ["model", *map(str, range(len(ids)))]
    return format_table(header, [[f"{k} {i}", *row] for k, (i, row) in enumerate(zip(ids, S))])


def cmd_similarity(args):
    from ..kernels import pairwise_similarity

    ids, signatures, failed = sign(args.models, args)
    S = pairwise_similarity(flatten(signatures, args.n_layers), kernel=args.kernel)
    if args.png:
        from ..plotting import plot_similarity_heatmap

        ax = plot_similarity_heatmap(S, labels=ids)
        ax.figure.savefig(args.png, dpi=120, bbox_inches="tight")
    if args.json:
        print_json({"models": ids, "kernel": args.kernel, "similarity": S, "failed": failed})
    else:
        print(f"{args.kernel} similarity of {args.metric} signatures (paper Eq. 2)")
        print(similarity_table(ids, S))
    return _status(failed)


# -- lineage ----------------------------------------------------------------------


def lineage_rows(classifier, ids, X):
    """(candidate, family, similarity, p-value) rows of a fitted classifier."""
    predicted = classifier.predict(X)
    similarity = classifier.similarity(X)
    pvalues = classifier.predict_pvalue(X)
    rows = []
    for i, name in enumerate(ids):
        best = int(np.nanargmax(similarity[i])) if np.isfinite(similarity[i]).any() else 0
        rows.append([name, str(predicted[i]), float(similarity[i, best]), float(pvalues[i, best])])
    return rows


def pvalue_note(classifier):
    n_null = int(np.size(classifier.null_similarities_))
    return (f"p-value: rank of the similarity among the {n_null} similarities of unrelated "
            f"bases (smallest possible {1 / (1 + n_null):.3f}; add bases to sharpen it)")


def cmd_lineage(args):
    from ..estimators import LineageClassifier

    n_bases = len(args.bases)
    models = [*args.bases, *args.candidates]
    ids, signatures, failed = sign(models, args)
    names = dict(zip(map(str, models), short_names(models)))
    base_ids = [names[str(b)] for b in args.bases if str(b) not in failed]
    if len(base_ids) < n_bases:
        raise ValueError("every --bases model must be readable; see the errors above.")
    labels = args.labels or base_ids
    if len(labels) != n_bases:
        raise ValueError(f"--labels gives {len(labels)} names for {n_bases} bases.")
    X = flatten(signatures, args.n_layers)
    classifier = LineageClassifier(kernel=args.kernel, threshold=args.threshold)
    classifier.fit(X[:n_bases], labels)
    rows = lineage_rows(classifier, ids[n_bases:], X[n_bases:])
    if args.json:
        print_json({
            "kernel": args.kernel, "threshold": args.threshold,
            "candidates": [dict(zip(["model", "family", "similarity", "p_value"], r)) for r in rows],
            "failed": failed,
        })
    else:
        print(format_table(["candidate", "family", "similarity", "p-value"], rows))
        print(pvalue_note(classifier))
        if args.threshold is not None:
            print(f"'unknown': best similarity below the threshold {args.threshold}")
    return _status(failed)


# -- cluster ----------------------------------------------------------------------


def embedding_2d(clusterer):
    """Two columns of a fitted clusterer's embedding worth drawing: the
    spectral embedding's first eigenvector is constant on a connected graph,
    so its second and third are shown."""
    E = clusterer.embedding_
    if clusterer.method != "spectral":
        return E[:, :2]
    if E.shape[1] >= 3:
        return E[:, 1:3]
    # Two clusters: one informative eigenvector, drawn against zero.
    return np.column_stack([E[:, -1], np.zeros(len(E))])


def cmd_cluster(args):
    from ..estimators import SignatureClusterer

    ids, signatures, failed = sign(args.models, args)
    X = flatten(signatures, args.n_layers)
    n_clusters = args.n_clusters if args.n_clusters == "auto" else int(args.n_clusters)
    clusterer = SignatureClusterer(method=args.method, n_clusters=n_clusters,
                                   random_state=args.random_state).fit(X)
    if args.png:
        from ..plotting import plot_embedding

        ax = plot_embedding(embedding_2d(clusterer), clusters=clusterer.labels_)
        ax.figure.savefig(args.png, dpi=120, bbox_inches="tight")
    if args.json:
        print_json({
            "method": args.method, "n_clusters": clusterer.n_clusters_,
            "silhouette": clusterer.silhouette_, "davies_bouldin": clusterer.davies_bouldin_,
            "labels": dict(zip(ids, clusterer.labels_)), "failed": failed,
        })
    else:
        print(format_table(["model", "cluster"], [[i, int(c)] for i, c in zip(ids, clusterer.labels_)]))
        print(f"{clusterer.n_clusters_} clusters ({args.method}); silhouette "
              f"{clusterer.silhouette_:.3f}, Davies-Bouldin {clusterer.davies_bouldin_:.3f}")
    return _status(failed)


# -- predict ----------------------------------------------------------------------


def cmd_predict(args):
    from ..estimators import KNNPerformanceRegressor

    train_models, benchmarks, Y = read_scores(args.train)
    n_train = len(train_models)
    models = [*train_models, *args.models]
    ids, signatures, failed = sign(models, args)
    bad_train = [m for m in train_models if m in failed]
    if bad_train:
        raise ValueError(f"training models in {args.train} could not be read: {bad_train}")
    if len(ids) == n_train:
        raise ValueError("no model to predict could be read; see the messages above.")
    X = flatten(signatures, args.n_layers)
    regressor = KNNPerformanceRegressor(n_neighbors=args.neighbors, kernel=args.kernel)
    regressor.fit(X[:n_train], Y)
    predicted = regressor.predict(X[n_train:]).reshape(len(ids) - n_train, len(benchmarks))
    query_ids = ids[n_train:]
    if args.json:
        print_json({
            "benchmarks": benchmarks,
            "predictions": {i: dict(zip(benchmarks, row)) for i, row in zip(query_ids, predicted)},
            "failed": failed,
        })
    else:
        print(f"predicted scores ({args.neighbors}-NN on {n_train} scored models)")
        print(format_table(["model", *benchmarks], [[i, *row] for i, row in zip(query_ids, predicted)]))
    return _status(failed)


# -- align --------------------------------------------------------------------------


def cmd_align(args):
    from ..kernels import align_depth

    ids, signatures, failed = sign([args.a, args.b], args)
    if len(signatures) != 2:
        raise ValueError(f"align needs both models; could not read {', '.join(failed)}.")
    a, b = signatures
    result = align_depth(a, b)
    if args.json:
        print_json({
            "models": ids, "cost": result.cost, "similarity": result.similarity,
            "pairs": result.pairs, "skipped": result.skipped,
            "skipped_model": ids[0] if a.n_layers >= b.n_layers else ids[1],
        })
    else:
        deeper = ids[0] if a.n_layers >= b.n_layers else ids[1]
        print(format_table(["pair", "matching cost", "similarity"],
                           [[f"{ids[0]} ~ {ids[1]}", float(result.cost), float(result.similarity)]]))
        print(f"layers of {deeper} left unmatched: {list(result.skipped) or 'none'}")
        print(format_table([f"layer of {ids[0]}", f"layer of {ids[1]}"],
                           [[int(i), int(j)] for i, j in result.pairs]))
    return _status(failed)
