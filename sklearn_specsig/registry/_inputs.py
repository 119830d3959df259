"""What :class:`~sklearn_specsig.registry.ModelIndex` is given, as records.

Checkpoints signed through the engine, Signatures and arrays all become the
same dict (name, fingerprint, source, architecture, metric, profile); the
rules for names (defaults, conflicts) and the DataFrame form of an answer
live here too.
"""

import hashlib
import os

import numpy as np

from ..checkpoints import describe_model, short_names
from ..signature import ROLES, Signature

__all__ = ["add_names", "answers_frame", "array_records", "decide", "display_name",
           "per_model", "record_source", "signed_records"]


def array_records(X, names, default=None):
    """``[(name, record)]`` of signatures given as arrays (names required
    unless a ``default`` prefix is given, for queries)."""
    if isinstance(X, (list, tuple)):
        profiles = [np.asarray(x, dtype=np.float64) for x in X]
    else:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 2:
            if X.shape[1] % len(ROLES):
                raise ValueError(
                    f"flattened signatures have {len(ROLES)} * n_layers columns; got "
                    f"{X.shape[1]}, not a multiple of {len(ROLES)}.")
            X = X.reshape(len(X), len(ROLES), -1)
        if X.ndim != 3:
            raise ValueError(f"signatures as an array must be 2-D (flattened) or 3-D "
                             f"(n_models, {len(ROLES)}, n_layers); got shape {X.shape}.")
        profiles = list(X)
    for p in profiles:
        if p.ndim != 2 or p.shape[0] != len(ROLES) or p.shape[1] < 1:
            raise ValueError(f"a profile must be ({len(ROLES)}, n_layers); got {p.shape}.")
        if np.isinf(p).any():
            raise ValueError("a profile holds inf; NaN marks a missing value.")
    if names is None and default is not None:
        names = [f"{default}{i}" for i in range(len(profiles))]
    if names is None:
        raise ValueError("signatures given as arrays need names=.")
    names = list(names)
    if len(names) != len(profiles):
        raise ValueError(f"{len(names)} names for {len(profiles)} signatures.")
    return [(name, {
        "name": name,
        "fingerprint": "array:" + hashlib.sha256(
            np.ascontiguousarray(p, dtype="<f8").tobytes()).hexdigest()[:32],
        "source": None, "architecture": None, "metric": None, "profile": p,
        "explicit": True,
    }) for name, p in zip(names, profiles)]


def decide(rec, old):
    """Status of recording ``rec`` over the row ``old`` of its name.

    A re-add of the same model (same weights or same source) without a
    family keeps the recorded one (``rec["family"]`` is set to it): leaving
    the label out is not a request to clear it.  Another model under an
    explicit name takes the name, with the family given.
    """
    if rec.get("refused"):
        return ("failed", rec["refused"])
    if old is None:
        return "added"
    same_model = old[2] == rec["fingerprint"] or (
        old[3] is not None and old[3] == rec["source"])
    if rec["family"] is None and same_model:
        rec["family"] = old[1]
    if old[2] == rec["fingerprint"] and old[1] == rec["family"]:
        return "unchanged"
    if rec["explicit"] or same_model:
        return "updated"
    return ("failed", f"the name {rec['name']!r} is taken by another model "
            f"(from {old[3]}); give this one another name (names= / --name).")


def signed_records(models, names, results, explicit):
    """``[(name, record or exception)]`` of signed models (``results`` from
    the engine: a Signature or the exception of each)."""
    items = []
    for name, model, result in zip(names, models, results):
        if isinstance(result, BaseException):
            items.append((name, result))
            continue
        items.append((name, {
            "name": name, "fingerprint": result.fingerprint,
            "source": record_source(model, result),
            "architecture": result.architecture, "metric": result.metric,
            "profile": np.asarray(result.values, dtype=np.float64), "explicit": explicit,
        }))
    return items


def record_source(model, signature):
    """What a record says it was signed from: an absolute path for a local
    checkpoint (so that another working directory finds it), else as given."""
    if isinstance(model, (str, os.PathLike)) and os.path.exists(model):
        return os.path.realpath(model)
    if isinstance(model, Signature):
        return model.source
    return signature.source if signature.source is not None else str(model)


def display_name(model):
    """What a model's default name is made from."""
    if isinstance(model, (str, os.PathLike)):
        return model
    if isinstance(model, Signature):
        return model.source or model.fingerprint[:16]
    return describe_model(model)


def add_names(models, names, is_array, recorded_names):
    """The names of one add, decided over the whole list (one rule whatever
    the chunks it is signed in); the same checkpoint or name twice is refused
    before anything is signed.  A checkpoint already recorded from the same
    place keeps its recorded name (``recorded_names(sources)`` -> dict)."""
    if not is_array:
        paths = [os.path.realpath(m) for m in models
                 if isinstance(m, (str, os.PathLike)) and os.path.exists(m)]
        twice = sorted({p for p in paths if paths.count(p) > 1})
        if twice:
            raise ValueError(f"given twice in one add: {twice}; nothing was recorded.")
        if names is None:
            names = short_names([display_name(m) for m in models])
            known = recorded_names(paths)
            names = [known.get(os.path.realpath(m), name)
                     if isinstance(m, (str, os.PathLike)) and os.path.exists(m) else name
                     for m, name in zip(models, names)]
    names = None if names is None else [str(name) for name in names]
    if names is not None and len(set(names)) < len(names):
        twice = sorted({x for x in names if names.count(x) > 1})
        raise ValueError(f"names given twice in one add: {twice}; nothing was recorded.")
    return names


def _missing(value):
    """None, NaN or pandas' NA: no family."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pd.NA has no truth value
        return True


def per_model(values, n, what):
    """One label per model (a str for all, or a sequence); missing -> None."""
    if values is None or isinstance(values, str):
        return [values] * n
    values = [None if _missing(v) else str(v) for v in values]
    if len(values) != n:
        raise ValueError(f"{len(values)} {what} for {n} models.")
    return values


def answers_frame(answers):
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("as_frame=True needs pandas (pip install pandas).") from exc
    rows = [{"model": a["model"], "rank": r + 1, **nb,
             "verdict_family": a["verdict"]["family"],
             "verdict_p_value": a["verdict"]["p_value"]}
            for a in answers for r, nb in enumerate(a["neighbours"])]
    return pd.DataFrame(rows, columns=["model", "rank", "name", "family", "similarity",
                                       "p_value", "verdict_family", "verdict_p_value"])
