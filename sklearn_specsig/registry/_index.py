"""ModelIndex: a persistent, incremental lineage index of a model registry."""

import os
import warnings
from numbers import Integral, Real

import numpy as np

from ..checkpoints import short_names
from ..engine import sign_models
from ..engine._signing import check_signing
from ..errors import RegistryWarning
from ..signature import Signature
from ..store import SignatureStore
from ._db import RegistryFile
from ._inputs import (
    add_names,
    answers_frame,
    array_records,
    decide,
    display_name,
    per_model,
    signed_records,
)
from ._null import (
    VerdictTail,
    content_seed,
    cross_family_null,
    family_max_statistics,
    family_wise_pvalue,
    fit_verdict_tail,
)
from ._state import RegistryState, answer_profiles

__all__ = ["ModelIndex"]

# Models signed, then recorded, per transaction of an add: a killed add
# loses at most the models of the chunk being signed.
_ADD_CHUNK = 8


class ModelIndex:
    """A lineage index of a model registry, kept in one SQLite file.

    Records models (checkpoints signed through the spectra cache, or
    signatures given as arrays) under unique names, with an optional family
    label, and answers for a new model: which recorded models is it most
    similar to, how unusual is that similarity for *unrelated* models, and
    which family it derives from, if the evidence is strong enough.

    Parameters
    ----------
    path : str or os.PathLike
        The registry file (created on first use); a directory means
        ``path / "registry.sqlite"``.
    alpha : float, default=0.01
        A query's verdict names a family only when its p-value is below this.
    n_layers : int, default=None
        Points of relative depth every profile is compared on (the
        registry's *grid*), fixed when the first model is recorded; None
        takes the depth of that first model.  Profiles of another depth are
        linearly resampled onto the grid
        (:func:`~sklearn_specsig.signature.resample_depth`), so a registry
        of mixed depths works, and a query of any depth is compared the
        same way; a profile of the grid's depth is compared as it is.
    metric : str, default=None
        Metric of the recorded signatures, fixed by the first add; None
        takes the registry's (``"alpha_hill"``, PL_Alpha_Hill, for a new one).
    cache : "registry", "auto", None, path or SignatureStore, default="registry"
        Spectra cache used to sign checkpoints.  ``"registry"`` keeps the
        spectra in the registry's own file (one self-contained file; about
        4 kB per weight matrix of hidden size 1,024); anything else is
        passed to :func:`~sklearn_specsig.store.resolve_store`.
    device : str, default="auto"
        Where eigenvalues are computed (``compute_signature``'s ``device``).
    timeout : float, default=60.0
        Seconds a writer waits for another process's lock.

    Notes
    -----
    **p-values.**  The null is the similarity of every pair of recorded
    models of *different* families: all of them up to 2,000,000 pairs, a
    seeded uniform sample of 1,000,000 beyond.  A neighbour's p-value is
    ``(1 + #{null >= s}) / (1 + n_null)`` (smallest ``1 / (1 + n_null)``).
    The verdict's tests the best match s* itself: the best similarity of a
    recorded model to another family, each pair of families counted once,
    is modelled as a normal; ``p_family = max(Phi_bar((s* - mean) / sd),
    1 / (1 + n_null))``, then ``1 - (1 - p_family)**K`` over the K families
    (Sidak).  Unlabelled models are searched but take no part in the null
    nor the verdict.  See :mod:`sklearn_specsig.registry._null`.

    **Similarity.**  Paper Eq. 2 (mean Spearman correlation over module
    rows), exactly as :func:`~sklearn_specsig.kernels.spearman_similarity`
    computes it on the grid; ties go to the name first in sort order.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from sklearn_specsig.registry import ModelIndex
    >>> folder = tempfile.TemporaryDirectory()
    >>> rng = np.random.default_rng(0)
    >>> bases = rng.normal(size=(6, 7, 12))
    >>> children = bases + 0.05 * rng.normal(size=bases.shape)
    >>> index = ModelIndex(folder.name)
    >>> _ = index.add(np.concatenate([bases, children]),
    ...               names=[f"{k}-{i}" for k in ("base", "ft") for i in range(6)],
    ...               families=[f"fam{i}" for i in range(6)] * 2)
    >>> query = bases[3] + 0.05 * rng.normal(size=(7, 12))
    >>> (answer,) = index.query([query], names=["new"], top=2)
    >>> [n["name"] for n in answer["neighbours"]]
    ['base-3', 'ft-3']
    >>> index.summary()["n_null"]  # 66 pairs, less the 6 within families
    60
    >>> folder.cleanup()
    """

    def __init__(self, path, *, alpha=0.01, n_layers=None, metric=None,
                 cache="registry", device="auto", timeout=60.0):
        if not isinstance(alpha, Real) or not 0 < alpha <= 1:
            raise ValueError(f"alpha={alpha!r} must be a number in (0, 1].")
        if n_layers is not None and (not isinstance(n_layers, Integral) or n_layers < 2):
            raise ValueError(f"n_layers={n_layers!r} must be an int >= 2 or None.")
        # At the boundary: a bad metric or device is refused before the
        # registry records anything (the metric is fixed by the first add).
        check_signing(metric or "alpha_hill", device, "float32")
        self.path = path
        self.alpha = alpha
        self.n_layers = n_layers
        self.metric = metric
        self.cache = cache
        self.device = device
        self.timeout = timeout
        self._file = RegistryFile(path, timeout)
        self._state = None

    def __repr__(self):
        return f"ModelIndex({str(self._file.path)!r})"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_state"] = None
        return state

    def __len__(self):
        return self._file.count()

    @property
    def file_path(self):
        """The registry's SQLite file (:class:`pathlib.Path`)."""
        return self._file.path

    def settings(self):
        """``{"metric", "n_layers"}`` in force (``n_layers`` None until the
        first model fixes the grid)."""
        grid, metric = self._fixed()
        return {"metric": metric, "n_layers": grid}

    # -- settings fixed by the first model ----------------------------------

    def _fixed(self, depth=None):
        """(grid, metric) of the registry; ``depth`` (the first model's, at an
        add) fixes them when the registry has none yet.  Reading takes no
        lock: only the first add writes."""
        grid = self._file.meta("n_layers")
        if grid is None and depth is not None and self.n_layers is None and depth < 2:
            raise ValueError(
                f"a profile of {depth} layer cannot fix the registry's grid of "
                "relative depth (nothing to rank along it); create the registry with "
                "n_layers= (--n-layers), e.g. the depth of the models it will hold.")
        metric = self._file.meta("metric")
        if metric is None and depth is not None:
            metric = self._file.set_meta_once("metric", self.metric or "alpha_hill")
        metric = metric or self.metric or "alpha_hill"
        if self.metric is not None and metric != self.metric:
            raise ValueError(f"the registry {self._file.path} records {metric!r} "
                             f"signatures, not {self.metric!r}; leave metric unset.")
        if grid is None and depth is not None:
            grid = self._file.set_meta_once("n_layers", self.n_layers or depth)
        if grid is not None and self.n_layers is not None and int(grid) != self.n_layers:
            raise ValueError(
                f"the registry {self._file.path} compares profiles on {grid} points of "
                f"relative depth, not n_layers={self.n_layers}; leave n_layers unset.")
        return (None if grid is None else int(grid)), metric

    # -- inputs -------------------------------------------------------------

    def _sign(self, models, metric, n_jobs, progress, on_error):
        check_signing(metric, self.device, "float32")
        cache = self.cache
        if isinstance(cache, str) and cache == "registry":
            self._file.generation()  # the file exists before the store opens it
            cache = SignatureStore(self._file.path, timeout=self.timeout)
        kwargs = {"device": self.device, "cache": cache, "precision": "float32",
                  "progress": progress}
        # A failing store raises (its message knows a registry: store.file_kind).
        return sign_models(list(models), metric, kwargs, n_jobs, on_error)

    def _items(self, models, names, metric, n_jobs=None, progress=False, on_error="raise",
               default=None, explicit=None):
        """``[(name, record or exception)]`` of what was given; arrays need
        ``names`` unless a ``default`` prefix is given (queries).  ``explicit``
        says whether the names were the caller's (default: given)."""
        if isinstance(models, (str, os.PathLike, Signature)):
            models = [models]
        if isinstance(models, np.ndarray) or (
                isinstance(models, (list, tuple)) and models
                and all(isinstance(m, np.ndarray) for m in models)):
            return array_records(models, names, default)
        models = list(models)
        given = names is not None if explicit is None else explicit
        names = list(names) if names is not None else short_names(
            [display_name(m) for m in models])
        if len(names) != len(models):
            raise ValueError(f"{len(names)} names for {len(models)} models.")
        results = self._sign(models, metric, n_jobs, progress, on_error)
        return signed_records(models, names, results, given)

    # -- add / remove -------------------------------------------------------

    def add(self, models, *, families=None, names=None, n_jobs=None, progress=False,
            on_error="raise"):
        """Sign models through the cache and record them.

        Parameters
        ----------
        models : sequence of paths, hub ids, Signatures or models in memory, or array
            Checkpoints to sign (re-adding a model whose weights the cache
            knows solves nothing), or signatures as an array of shape
            ``(n, 7 * L)`` or ``(n, 7, L)`` (with ``names``).
        families : str or sequence of str or None, default=None
            Family label of every model (one label for all, or one each;
            None, NaN or pandas' NA for none).  A new model without a label
            is recorded unlabelled; a recorded one keeps its label.
        names : sequence of str, default=None
            Names to record them under; default: short names of the paths.
            A default name that another model holds is refused (pass names);
            an explicit one replaces the model recorded under it.
        n_jobs : int, default=None
            Models signed in parallel (joblib).
        progress : bool, default=False
            Show progress bars while signing.
        on_error : {"raise", "warn"}, default="raise"
            Either way every model that can be read is recorded.  ``"raise"``
            then raises the first failure (with a note of how many were
            recorded); ``"warn"`` gives a failed model (unreadable, or its
            name taken) status ``"failed"`` with the reason, and a
            ``RegistryWarning``.

        Returns
        -------
        records : list of dict
            ``{"name", "family", "status", "error"}`` per model; status is
            ``"added"``, ``"updated"`` (same name, new weights or family),
            ``"unchanged"`` or ``"failed"``.
        """
        if on_error not in ("raise", "warn"):
            raise ValueError(f"on_error={on_error!r} must be 'raise' or 'warn'.")
        n = len(models) if not isinstance(models, (str, os.PathLike, Signature)) else 1
        fams = per_model(families, n, "families")
        if names is not None and len(names) != n:
            raise ValueError(f"{len(names)} names for {n} models.")
        _, metric = self._fixed()
        seq = models if not isinstance(models, (str, os.PathLike, Signature)) else [models]
        is_array = isinstance(seq, np.ndarray) or (
            isinstance(seq, (list, tuple)) and all(isinstance(m, np.ndarray) for m in seq))
        explicit = names is not None or is_array
        names = add_names(seq, names, is_array, self._file.names_by_source)
        records, errors = [], []
        step = n if is_array else max(_ADD_CHUNK, 2 * (n_jobs or 1))
        for start in range(0, n, step):
            part = seq[start:start + step]
            part_names = None if names is None else names[start:start + step]
            # Signed with "warn" in either mode: the models of a chunk that
            # can be read are recorded before a failure is raised.
            items = self._items(part, part_names, metric, n_jobs, progress, "warn",
                                explicit=explicit)
            errors += [rec for _, rec in items if isinstance(rec, BaseException)]
            records += self._record(items, fams[start:start + step])
        failed = [r for r in records if r["status"] == "failed"]
        if on_error == "warn":
            for r in failed:
                warnings.warn(f"{r['name']} was not recorded: {r['error']}",
                              RegistryWarning, stacklevel=2)
        if failed and on_error == "raise":
            recorded = len(records) - len(failed)
            said = (f"{len(failed)} of {len(records)} models were not recorded; the other "
                    f"{recorded} were (add with on_error='warn' for a record of each).")
            if errors:
                if hasattr(errors[0], "add_note"):  # Python >= 3.11
                    errors[0].add_note(said)
                else:
                    warnings.warn(said, RegistryWarning, stacklevel=2)
                raise errors[0]
            raise ValueError("; ".join(r["error"] for r in failed) + " " + said)
        return records

    def _record(self, items, families):
        good = [(rec, fam) for (_, rec), fam in zip(items, families)
                if not isinstance(rec, BaseException)]
        if good:
            grid, _ = self._fixed(depth=good[0][0]["profile"].shape[1])
            for rec, _ in good:
                depth = rec["profile"].shape[1]
                if depth > grid:
                    # Never silent: a coarser grid than the model loses detail.
                    warnings.warn(
                        f"{rec['name']} has {depth} layers; the registry compares profiles "
                        f"on {grid} points of relative depth (fixed by its first model), so "
                        "its profile is resampled coarser. Create a registry with "
                        "n_layers= (--n-layers) for a finer grid.", RegistryWarning,
                        stacklevel=3)
        metric = self._file.meta("metric")
        for rec, fam in good:
            rec["family"] = fam
            rec["metric"] = rec["metric"] or metric
            if rec["metric"] != metric:  # another process fixed the metric first
                rec["refused"] = (f"signed with {rec['metric']!r}; the registry records "
                                  f"{metric!r}")
        statuses = iter(self._file.put([rec for rec, _ in good], decide) if good else [])
        records = []
        for (name, rec), fam in zip(items, families):
            if isinstance(rec, BaseException):
                records.append({"name": name, "family": fam, "status": "failed",
                                "error": f"{type(rec).__name__}: {rec}"})
                continue
            status = next(statuses)
            error = None
            if isinstance(status, tuple):
                status, error = status
            records.append({"name": name, "family": rec["family"], "status": status,
                            "error": error})
        return records

    def remove(self, names):
        """Remove the models recorded under ``names`` (all, or none if one is
        not recorded: a ``KeyError`` naming it)."""
        names = [names] if isinstance(names, str) else list(names)
        try:
            self._file.remove(names)
        except KeyError as exc:
            raise KeyError(f"not in the registry {self._file.path}: {exc.args[0]}; "
                           "nothing was removed.") from None

    # -- reading ------------------------------------------------------------

    def list(self):
        """Every recorded model, by name: a list of dicts (name, family,
        architecture, n_layers, fingerprint, source)."""
        return [{"name": r[0], "family": r[1], "architecture": r[4], "n_layers": r[7],
                 "fingerprint": r[2], "source": r[3]} for r in self._file.rows()]

    def _current(self):
        generation = self._file.generation()
        if self._state is None or self._state.generation != generation:
            grid, _ = self._fixed()
            gen, names, families, profiles = self._file.profiles()
            self._state = RegistryState(gen, names, families, profiles,
                                        grid or (profiles[0].shape[1] if profiles else 1))
        return self._state

    def _null(self, state):
        if state.null is None:
            cached = self._file.cached_null(state.generation)
            if cached is None and state.index is None:  # an empty registry
                cached = (np.empty(0), "exact", 0, VerdictTail(np.nan, np.nan, 0, 0)._asdict())
            elif cached is None:
                ranked = state.index.ranked_
                seed = content_seed(*state.names, *map(str, state.families))
                null, method, n_cross = cross_family_null(ranked, state.codes, seed=seed)
                tail = fit_verdict_tail(*family_max_statistics(ranked, state.codes, seed=seed))
                cached = (null, method, n_cross, tail._asdict())
                self._file.put_null(state.generation, *cached)
            null, method, n_cross, tail = cached
            state.null = (null, method, n_cross, VerdictTail(**tail))
        return state.null

    def recorded_signature(self, name):
        """The :class:`~sklearn_specsig.signature.Signature` (with spectra) of
        a recorded model, signed again from its checkpoint through the cache.

        Raises ``KeyError`` for an unknown name, ``ValueError`` when the model
        was recorded from an array or its checkpoint changed since.
        """
        rows = self._file.rows([name])
        if not rows:
            raise KeyError(f"{name!r} is not in the registry {self._file.path}.")
        _, _, fingerprint, source, *_ = rows[0]
        if source is None:
            raise ValueError(f"{name!r} was recorded from an array: it has no checkpoint.")
        _, metric = self._fixed()
        (signature,) = self._sign([source], metric, None, False, "raise")
        if signature.fingerprint != fingerprint:
            raise ValueError(f"the checkpoint of {name!r} at {source} changed since it was "
                             "recorded; add it again to update the record.")
        return signature

    def summary(self):
        """What the registry holds and what its p-values can resolve (a dict)."""
        state = self._current()
        null, method, n_cross, tail = self._null(state)
        k = len(state.family_names)
        smallest = 1.0 / (1.0 + null.size)
        return {
            "path": str(self._file.path), "n_models": len(state.names),
            "n_families": k, "n_unlabelled": int((state.codes < 0).sum()),
            "n_layers": int(state.P.shape[2]), "metric": self._file.meta("metric"),
            "null_method": method, "n_cross_family_pairs": n_cross, "n_null": int(null.size),
            "smallest_p_value": smallest,
            "smallest_verdict_p_value": float(family_wise_pvalue(smallest, k)),
            "verdict_tail": tail._asdict(),
            "alpha": self.alpha,
        }

    def signatures(self):
        """``(X, names, families)``: the recorded signatures on the registry's
        grid, flattened ``(n_models, 7 * n_layers)``, for any estimator."""
        state = self._current()
        return state.X.copy(), list(state.names), list(state.families)

    def lineage_classifier(self, **params):
        """A :class:`~sklearn_specsig.LineageClassifier` fitted on the labelled
        models (``params`` are its parameters)."""
        from ..estimators import LineageClassifier

        state = self._current()
        rows = state.labelled
        if len(set(state.families[rows])) < 1:
            raise ValueError("the registry has no labelled model; add some with families=.")
        return LineageClassifier(**params).fit(state.X[rows], list(state.families[rows]))

    # -- query --------------------------------------------------------------

    def query(self, models, *, top=5, names=None, alpha=None, as_frame=False):
        """Nearest recorded models of each query, with p-values and a verdict.

        Parameters
        ----------
        models : sequence of paths, hub ids, Signatures or models in memory, or array
            The models to place (signed through the cache), or signatures
            as arrays, of any depth.
        top : int, default=5
            Neighbours per query.
        names : sequence of str, default=None
            Names of the queries in the answer (default: short names).
        alpha : float, default=None
            Verdict threshold; None uses the index's ``alpha``.
        as_frame : bool, default=False
            Return a pandas DataFrame, one row per (query, neighbour).

        Returns
        -------
        list of dict or pandas.DataFrame
            Per query ``{"model", "verdict": {"family", "p_value"},
            "neighbours": [{"name", "family", "similarity", "p_value"}]}``,
            neighbours most similar first: ``specsig index query --json``.
        """
        if not isinstance(top, Integral) or top < 1:
            raise ValueError(f"top={top!r} must be a positive int.")
        if not isinstance(models, (str, os.PathLike, Signature)) and len(models) == 0:
            return answers_frame([]) if as_frame else []
        state = self._current()
        if not len(state.names):
            raise ValueError(f"the registry {self._file.path} is empty; add models first.")
        _, metric = self._fixed()
        items = self._items(models, names, metric, default="query")
        profiles = [rec["profile"] for _, rec in items]
        answers = self.query_profiles(profiles, top=top, alpha=alpha)
        for (name, _), answer in zip(items, answers):
            answer["model"] = name
        answers = [{"model": a.pop("model"), **a} for a in answers]
        return answers_frame(answers) if as_frame else answers

    def query_profiles(self, profiles, *, top=5, alpha=None, exclude=None):
        """:meth:`query` for (n_modules, L) profiles, without the names.

        ``exclude[i]``, a recorded name or None, is left out of query ``i``'s
        neighbours and verdict: a recorded model's nearest *other* relative
        (the report's per-model table).

        Returns
        -------
        list of dict
            ``{"verdict", "neighbours"}`` per profile, as in :meth:`query`.
        """
        if exclude is not None and len(exclude) != len(profiles):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(profiles)} "
                             "profiles; give one name (or None) per profile.")
        state = self._current()
        if not len(state.names):
            raise ValueError(f"the registry {self._file.path} is empty; add models first.")
        null, _, _, tail = self._null(state)
        return answer_profiles(state, null, tail, profiles, top=top,
                               alpha=self.alpha if alpha is None else alpha, exclude=exclude)
