"""SpectralSignatureTransformer: model paths in, flattened signatures out.

The one estimator that reads checkpoints.  The engine (and with it torch)
is imported when it signs, not with this module, so that building or
unpickling a Pipeline that holds it costs no torch import.
"""

import os
import sys
import warnings
from collections.abc import Mapping
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_is_fitted

from ..architectures import ROLES
from ..signature import Signature, as_profiles, feature_names
from ..spectral import METRICS
from ..store import SignatureStore, resolve_store

__all__ = ["SpectralSignatureTransformer"]

_DEPTH_HINT = "set n_layers=<int> to resample them onto a common relative-depth grid"


def _model_id(model):
    if isinstance(model, Signature):
        return model.source if model.source is not None else model.fingerprint
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    # A model in memory: torch is loaded (it was signed).
    from ..checkpoints import describe_model

    return describe_model(model)


def _in_memory(model):
    """A torch.nn.Module, a mapping of tensors or a MemoryCheckpoint; found
    without importing torch (none of them exists before torch is loaded)."""
    if isinstance(model, Mapping):
        return True
    if "torch" not in sys.modules:
        return False
    from ..checkpoints import is_model_in_memory

    return is_model_in_memory(model)


def _check_models(X):
    """A list of models (paths, hub ids, models in memory or Signature
    objects) from ``X``."""
    if isinstance(X, (str, bytes, os.PathLike, Signature)) or _in_memory(X):
        raise ValueError(
            "X should be a list of models (paths, hub ids, models in memory or "
            f"Signature objects), got a single {type(X).__name__}; wrap it in a list."
        )
    if hasattr(X, "ndim") and getattr(X, "ndim") != 1:
        raise ValueError(
            "X should be a 1-D list of models (paths, hub ids or Signature "
            f"objects), got an array of shape {getattr(X, 'shape', None)}."
        )
    try:
        models = list(X)
    except TypeError:
        raise ValueError(
            f"X should be a list of models, got {type(X).__name__}."
        ) from None
    if not models:
        raise ValueError("X is empty: pass at least one model.")
    for model in models:
        if not isinstance(model, (str, os.PathLike, Signature)) and not _in_memory(model):
            raise ValueError(
                "each model should be a path, a hub id or a Signature, or a "
                "model in memory (a torch.nn.Module or a MemoryCheckpoint), got "
                f"{type(model).__name__}: {model!r:.200}."
            )
    return models


class SpectralSignatureTransformer(TransformerMixin, BaseEstimator):
    """Turn model checkpoints into flattened spectral signatures.

    Each model (a directory in Hugging Face layout, a ``.safetensors`` or
    ``.gguf`` file, a hub id, a model in memory, or a
    :class:`~sklearn_specsig.Signature`) becomes one row: its (7, n_layers) signature flattened module-major,
    feature ``role_index * n_layers + layer`` named ``"{role}_{layer:03d}"``.
    Spectra are cached (see ``cache``), so changing ``metric`` or
    ``n_layers`` never re-reads a model.

    Parameters
    ----------
    metric : str, default="alpha_hill"
        Metric of each weight matrix's spectrum, one of
        ``sklearn_specsig.spectral.METRICS``: ``"alpha_hill"``
        (PL_Alpha_Hill, the paper's shape metric), ``"log_norm"``,
        ``"spectral_norm"``, ``"log_spectral_norm"``, ``"alpha_weighted"``,
        ``"log_alpha_norm"``, ``"stable_rank"``.
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        Where eigenvalues are computed; ``"auto"`` uses CUDA when present.
        Checked by ``fit`` and ``transform`` before any model is read: a
        CUDA device on a machine without one (say, a fitted transformer
        unpickled there) is a ``ValueError``.
    n_layers : int or None, default=None
        None keeps the native depth (all models must share it, the one seen
        in ``fit``); an int resamples every depth profile onto that many
        points of relative depth, so models of different depth compare.
    cache : "auto", None, str or SignatureStore, default="auto"
        Spectra store: ``"auto"`` is the user cache directory
        (``$SPECSIG_CACHE`` overrides it), None disables caching, a path
        names a store file or directory.
    n_jobs : int, default=None
        Models signed in parallel through joblib (``-1``: all cores).  A
        ``joblib.parallel_config(backend="dask")`` context runs them on a
        Dask cluster.  Models in memory are then pickled to the workers (a
        copy of each model's weights in its worker process).
    precision : {"float32", "float64"}, default="float32"
        Precision of the Gram matrices and eigensolver.
    progress : bool, default=False
        Show a progress bar over each model's matrices.
    on_error : {"raise", "warn"}, default="raise"
        What a model that cannot be read does: raise, or warn and give a
        row of NaN while the other models are computed (and cached).  A
        store that cannot be opened or written
        (:class:`~sklearn_specsig.errors.StoreError`) raises in either mode.
    base : str, os.PathLike or None, default=None
        The base model (a path or hub id) of the PEFT LoRA adapters in
        ``X``: each is signed as the merged model over it, ``base`` winning
        over the adapter's own ``base_model_name_or_path`` (see
        :func:`~sklearn_specsig.compute_signature`).  ``None`` lets each
        adapter name its base.  It is for adapters only, as in
        ``compute_signature``: a full model (a path, a hub id or a model in
        memory) in ``X`` with ``base`` set is a ``ValueError`` naming that
        model, raised or, with ``on_error="warn"``, its warning and NaN row.
        :class:`~sklearn_specsig.Signature` objects are used as they are.

    Attributes
    ----------
    n_layers_ : int
        Depth of the output profiles.
    n_features_out_ : int
        ``7 * n_layers_``.

    See Also
    --------
    sklearn_specsig.compute_signature : The signature of one model.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_specsig import SpectralSignatureTransformer
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> folder = tempfile.TemporaryDirectory()
    >>> zoo = make_model_zoo(folder.name, n_families=2, n_derived=1,
    ...                      n_layers=4, random_state=0)
    >>> sig = SpectralSignatureTransformer(cache=None)
    >>> Z = sig.fit_transform(zoo.paths)
    >>> Z.shape
    (4, 28)
    >>> sig.get_feature_names_out()[:2].tolist()
    ['q_000', 'q_001']
    >>> folder.cleanup()
    """

    _parameter_constraints = {
        "metric": [StrOptions(set(METRICS)), callable],
        # str or torch.device: checked at fit / transform by the engine's
        # check_device, which knows the devices of this machine (a pickled
        # "cuda" may reach one without a GPU) and needs torch, which a
        # constraint here would import with the estimator.
        "device": "no_validation",
        "n_layers": [Interval(Integral, 1, None, closed="left"), None],
        "cache": [str, os.PathLike, SignatureStore, None],
        "n_jobs": [Integral, None],
        "precision": [StrOptions({"float32", "float64"})],
        "progress": ["boolean"],
        "on_error": [StrOptions({"raise", "warn"})],
        "base": [str, os.PathLike, None],
    }

    def __init__(
        self,
        metric="alpha_hill",
        *,
        device="auto",
        n_layers=None,
        cache="auto",
        n_jobs=None,
        precision="float32",
        progress=False,
        on_error="raise",
        base=None,
    ):
        self.metric = metric
        self.device = device
        self.n_layers = n_layers
        self.cache = cache
        self.n_jobs = n_jobs
        self.precision = precision
        self.progress = progress
        self.on_error = on_error
        self.base = base

    def _signatures(self, models):
        # The engine loads torch: imported here, when a model is signed.
        from ..engine import sign_models

        kwargs = {
            "device": self.device,
            "cache": resolve_store(self.cache),
            "precision": self.precision,
            "progress": self.progress,
        }
        if self.base is not None:
            kwargs["base"] = self.base
            # The engine's message for a model in memory names no model.
            in_memory = [m for m in models if not isinstance(m, (str, os.PathLike, Signature))]
            if in_memory and self.on_error == "raise":
                raise ValueError(
                    f"{_model_id(in_memory[0])}: base={os.fspath(self.base)!r} is for "
                    "PEFT LoRA adapters (a folder or hub id), not for a model in "
                    "memory: leave base=None, or merge the adapter first."
                )
        # sign_models checks metric, device and precision first: a bad one is
        # one ValueError before any file is read, whatever on_error says (a
        # pickled "cuda" on a CPU-only machine included), not a warning and a
        # NaN row per model.
        results = sign_models(models, self.metric, kwargs, self.n_jobs, self.on_error)
        for model, result in zip(models, results):
            if isinstance(result, BaseException):
                warnings.warn(
                    f"{_model_id(model)}: {result} Its row is NaN.",
                    UserWarning,
                    stacklevel=3,
                )
        read = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
        if not read:
            raise ValueError("no model in X could be read; see the warnings above.")
        return results, read

    def _profiles(self, signatures, read):
        """(n_read, 7, L) profiles of the models that could be read."""
        return as_profiles([signatures[i] for i in read], len(ROLES),
                           n_layers=self.n_layers, hint=_DEPTH_HINT)

    def _rows(self, models, signatures, read, profiles):
        """Flattened rows of every model; NaN for those that could not be read."""
        depth = profiles.shape[2]
        if depth != self.n_layers_ and self.n_layers is not None:
            raise ValueError(
                f"n_layers={self.n_layers} but the transformer was fitted with "
                f"n_layers={self.n_layers_}; fit it again after set_params."
            )
        if depth != self.n_layers_:
            first = next(i for i in read if signatures[i].n_layers != self.n_layers_)
            raise ValueError(
                f"{_model_id(models[first])} has {signatures[first].n_layers} layers "
                f"but the transformer was fitted on models of {self.n_layers_}. Set "
                "n_layers=<int> to resample every model onto a common "
                "relative-depth grid."
            )
        rows = np.full((len(models), len(ROLES) * depth), np.nan)
        rows[read] = profiles.reshape(len(read), -1)
        return rows

    def _fit(self, models):
        signatures, read = self._signatures(models)
        profiles = self._profiles(signatures, read)
        self.n_layers_ = profiles.shape[2]
        self.n_features_out_ = len(ROLES) * self.n_layers_
        return signatures, read, profiles

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Compute (and cache) the signatures of ``X`` and fix the depth.

        Parameters
        ----------
        X : list of str, os.PathLike, torch.nn.Module, MemoryCheckpoint or Signature
            Models: directories, weight files, hub ids, models in memory or
            signatures.  A ``transformers`` model brings its config; a
            plain module or a state dict is given with its config as
            ``MemoryCheckpoint(model.state_dict(), config=...)``
            (:class:`sklearn_specsig.checkpoints.MemoryCheckpoint`).
        y : None
            Ignored.

        Returns
        -------
        self : SpectralSignatureTransformer
        """
        self._fit(_check_models(X))
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit and transform, reading each model once.

        Parameters
        ----------
        X : list of str, os.PathLike or Signature
        y : None
            Ignored.

        Returns
        -------
        ndarray or DataFrame of shape (n_models, 7 * n_layers_)
        """
        models = _check_models(X)
        signatures, read, profiles = self._fit(models)
        return self._output(models, self._rows(models, signatures, read, profiles))

    def transform(self, X):
        """Flattened signatures of ``X``.

        Parameters
        ----------
        X : list of str, os.PathLike or Signature

        Returns
        -------
        ndarray or DataFrame of shape (n_models, 7 * n_layers_)
            A DataFrame indexed by model id under ``set_output(transform="pandas")``.
            Rows of models that could not be read (``on_error="warn"``) are NaN.

        Raises
        ------
        ValueError
            A bad ``device`` for this machine (checked before any read), or
            no model of ``X`` could be read.
        """
        check_is_fitted(self, "n_layers_")
        models = _check_models(X)
        signatures, read = self._signatures(models)
        profiles = self._profiles(signatures, read)
        return self._output(models, self._rows(models, signatures, read, profiles))

    def _output(self, models, rows):
        if _get_output_config("transform", self)["dense"] == "pandas":
            import pandas as pd

            return pd.DataFrame(
                rows,
                index=pd.Index([_model_id(m) for m in models], name="model"),
                columns=self.get_feature_names_out(),
            )
        return rows

    def get_feature_names_out(self, input_features=None):
        """Names ``"{role}_{layer:03d}"`` of the output features.

        Parameters
        ----------
        input_features : None
            Ignored: the inputs are models, not features.

        Returns
        -------
        ndarray of str of shape (n_features_out_,)
        """
        check_is_fitted(self, "n_layers_")
        return feature_names(self.n_layers_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        tags.non_deterministic = False
        return tags
