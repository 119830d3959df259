"""SpectralSignatureTransformer: model paths in, flattened signatures out."""

import os
import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_is_fitted

from ..architectures import ROLES
from ..engine import sign_models
from ..signature import Signature, feature_names, resample_depth
from ..spectral import METRICS
from ..store import SignatureStore, resolve_store

__all__ = ["SpectralSignatureTransformer"]


def _model_id(model):
    if isinstance(model, Signature):
        return model.source if model.source is not None else model.fingerprint
    return os.fspath(model)


def _check_models(X):
    """A list of models (paths, hub ids or Signature objects) from ``X``."""
    if isinstance(X, (str, bytes, os.PathLike, Signature)):
        raise ValueError(
            "X should be a list of models (paths, hub ids or Signature "
            f"objects), got a single {type(X).__name__}; wrap it in a list."
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
        if not isinstance(model, (str, os.PathLike, Signature)):
            raise ValueError(
                "each model should be a path, a hub id or a Signature, got "
                f"{type(model).__name__}: {model!r}."
            )
    return models


class SpectralSignatureTransformer(TransformerMixin, BaseEstimator):
    """Turn model checkpoints into flattened spectral signatures.

    Each model (a directory in Hugging Face layout, a ``.safetensors`` or
    ``.gguf`` file, a hub id, or a :class:`~sklearn_specsig.Signature`)
    becomes one row: its (7, n_layers) signature flattened module-major,
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
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where eigenvalues are computed; ``"auto"`` uses CUDA when present.
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
        Dask cluster.
    precision : {"float32", "float64"}, default="float32"
        Precision of the Gram matrices and eigensolver.
    progress : bool, default=False
        Show a progress bar over each model's matrices.
    on_error : {"raise", "warn"}, default="raise"
        What a model that cannot be read does: raise, or warn and give a
        row of NaN while the other models are computed (and cached).  A
        store that cannot be opened or written
        (:class:`~sklearn_specsig.errors.StoreError`) raises in either mode.

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
        "device": [str, torch.device],
        "n_layers": [Interval(Integral, 1, None, closed="left"), None],
        "cache": [str, os.PathLike, SignatureStore, None],
        "n_jobs": [Integral, None],
        "precision": [StrOptions({"float32", "float64"})],
        "progress": ["boolean"],
        "on_error": [StrOptions({"raise", "warn"})],
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
    ):
        self.metric = metric
        self.device = device
        self.n_layers = n_layers
        self.cache = cache
        self.n_jobs = n_jobs
        self.precision = precision
        self.progress = progress
        self.on_error = on_error

    def _signatures(self, models):
        kwargs = {
            "device": self.device,
            "cache": resolve_store(self.cache),
            "precision": self.precision,
            "progress": self.progress,
        }
        results = sign_models(models, self.metric, kwargs, self.n_jobs, self.on_error)
        for model, result in zip(models, results):
            if isinstance(result, BaseException):
                warnings.warn(
                    f"{_model_id(model)}: {result} Its row is NaN.",
                    UserWarning,
                    stacklevel=3,
                )
        return results

    def _rows(self, models, signatures, n_layers):
        rows = np.full((len(models), len(ROLES) * n_layers), np.nan)
        for i, (model, sig) in enumerate(zip(models, signatures)):
            if isinstance(sig, BaseException):
                continue
            values = sig.values
            if self.n_layers is not None:
                values = resample_depth(values, self.n_layers)
            elif sig.n_layers != n_layers:
                raise ValueError(
                    f"{_model_id(model)} has {sig.n_layers} layers but the "
                    f"transformer was fitted on models of {n_layers}. Set "
                    "n_layers=<int> to resample every model onto a common "
                    "relative-depth grid."
                )
            rows[i] = values.reshape(-1)
        return rows

    def _fit(self, models):
        signatures = self._signatures(models)
        ok = [s for s in signatures if not isinstance(s, BaseException)]
        if not ok:
            raise ValueError("no model in X could be read; see the warnings above.")
        if self.n_layers is not None:
            self.n_layers_ = self.n_layers
        else:
            depths = sorted({s.n_layers for s in ok})
            if len(depths) > 1:
                raise ValueError(
                    f"the models in X have different depths {depths}; set "
                    "n_layers=<int> to resample them onto a common relative-"
                    "depth grid."
                )
            self.n_layers_ = depths[0]
        self.n_features_out_ = len(ROLES) * self.n_layers_
        return signatures

    def fit(self, X, y=None):
        """Compute (and cache) the signatures of ``X`` and fix the depth.

        Parameters
        ----------
        X : list of str, os.PathLike or Signature
            Models: directories, weight files, hub ids or signatures.
        y : None
            Ignored.

        Returns
        -------
        self : SpectralSignatureTransformer
        """
        self._validate_params()
        self._fit(_check_models(X))
        return self

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
        self._validate_params()
        models = _check_models(X)
        signatures = self._fit(models)
        return self._output(models, self._rows(models, signatures, self.n_layers_))

    def transform(self, X):
        """Flattened signatures of ``X``.

        Parameters
        ----------
        X : list of str, os.PathLike or Signature

        Returns
        -------
        ndarray or DataFrame of shape (n_models, 7 * n_layers_)
            A DataFrame indexed by model id under ``set_output(transform="pandas")``.
        """
        check_is_fitted(self, "n_layers_")
        models = _check_models(X)
        rows = self._rows(models, self._signatures(models), self.n_layers_)
        return self._output(models, rows)

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
