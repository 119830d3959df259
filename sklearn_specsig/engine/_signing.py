"""Signing models: checkpoints in, :class:`~sklearn_specsig.Signature` out."""

from joblib import Parallel, delayed

from ..checkpoints import describe_model
from ..errors import SpecsigError, StoreError
from ..signature import ROLES, Signature, metric_name, signature_values
from ..spectral import METRICS
from ._extract import check_device, check_precision, extract_spectra

__all__ = ["check_metric", "check_signing", "compute_signature", "sign_models"]


def check_metric(metric):
    """Raise a ValueError unless ``metric`` is a name of ``METRICS`` or a callable."""
    if not (callable(metric) or (isinstance(metric, str) and metric in METRICS)):
        raise ValueError(
            f"metric={metric!r} is not a metric; use one of {sorted(METRICS)} or a "
            "callable of a spectrum."
        )
    return metric


def check_signing(metric, device, precision):
    """Check the settings of a signing before any file is read.

    Whatever ``on_error`` says, a bad setting is one ``ValueError`` here,
    not a failure (and a warning) per model.

    Returns
    -------
    torch.device
        The device ``device`` names (:func:`check_device`).
    """
    check_metric(metric)
    check_precision(precision)
    return check_device(device)


def compute_signature(
    source,
    metric="alpha_hill",
    *,
    device="auto",
    cache="auto",
    precision="float32",
    revision=None,
    scheme=None,
    progress=True,
    config=None,
    base=None,
):
    """Compute the spectral signature of a checkpoint or a model in memory.

    Parameters
    ----------
    source : str, os.PathLike, torch.nn.Module or mapping of str to Tensor
        A model directory (Hugging Face layout, safetensors or PyTorch
        ``.bin``), a ``.safetensors`` or ``.gguf`` file, or a hub id
        ``"org/name"`` resolved with huggingface_hub; or a model in memory,
        read where it is (nothing written to disk, one tensor at a time
        moved to the CPU): a ``torch.nn.Module`` (through its
        ``state_dict()``; a ``transformers`` model brings its ``config``),
        or a state dict of tensor names to tensors, with ``config=``.  The
        same weights in memory and on disk give the same signature and
        share every cached spectrum.
    metric : str or callable, default="alpha_hill"
        Metric of each spectrum; see
        :data:`sklearn_specsig.spectral.METRICS`.  Every other metric is
        available afterwards through :meth:`Signature.with_metric`.
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        Where eigenvalues are computed; ``"auto"`` uses CUDA when present,
        and a CUDA device where torch sees none is a ``ValueError``.
    cache : "auto", None, path or SignatureStore, default="auto"
        Where spectra are cached; see :func:`sklearn_specsig.store.resolve_store`.
    precision : {"float32", "float64"}, default="float32"
        Precision of the Gram matrix and the eigensolver.
    revision : str, optional
        Hub revision (branch, tag or commit) for a hub id.
    scheme : str or NamingScheme, optional
        Force a naming scheme instead of detecting it; see
        :func:`sklearn_specsig.architectures.register_naming_scheme`.
    progress : bool, default=True
        Show a progress bar over matrices (only on a terminal).
    config : dict or transformers config, optional
        The configuration (``config.json`` keys) of a model in memory; it
        wins over a module's own ``model.config``.  With a path or hub id it
        is a ``ValueError``: their ``config.json`` is read from their files.
    base : str or os.PathLike, optional
        The base model of a PEFT LoRA adapter folder (``adapter_config.json``
        with ``adapter_model.safetensors`` or ``.bin``), a path or hub id; it
        wins over the adapter's ``base_model_name_or_path``.  The adapter is
        signed as the merged model ``W + s * B A`` (``s = lora_alpha / r``,
        ``lora_alpha / sqrt(r)`` with ``use_rslora``), merged one matrix at
        a time as peft's ``merge_and_unload`` does (float32 delta, base
        dtype); a matrix the adapter leaves alone hits the base's cached
        spectrum.  Given with a full model it is a ``ValueError``.

    Returns
    -------
    Signature

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_specsig import compute_signature
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> folder = tempfile.TemporaryDirectory()
    >>> zoo = make_model_zoo(folder.name, n_families=1, n_derived=0,
    ...                      n_layers=4, random_state=0)
    >>> sig = compute_signature(zoo.paths[0], cache=None, progress=False)
    >>> sig.values.shape
    (7, 4)
    >>> sig.with_metric("log_norm").metric
    'log_norm'

    The same weights in memory, as a state dict with its config:

    >>> import json, os
    >>> from safetensors.torch import load_file
    >>> weights = load_file(os.path.join(zoo.paths[0], "model.safetensors"))
    >>> with open(os.path.join(zoo.paths[0], "config.json")) as f:
    ...     config = json.load(f)
    >>> in_memory = compute_signature(weights, config=config, cache=None, progress=False)
    >>> bool((in_memory.values == sig.values).all()), in_memory.source
    (True, '<state dict of 39 tensors in memory>')
    >>> folder.cleanup()
    """
    check_signing(metric, device, precision)
    result = extract_spectra(
        source,
        device=device,
        cache=cache,
        precision=precision,
        revision=revision,
        scheme=scheme,
        progress=progress,
        config=config,
        base=base,
    )
    values = signature_values(result.entries, result.spectra, metric, result.n_layers)
    return Signature(
        values=values,
        roles=ROLES,
        n_layers=result.n_layers,
        architecture=result.architecture,
        metric=metric_name(metric),
        fingerprint=result.fingerprint,
        spectra=result.spectra,
        entries=result.entries,
        source=describe_model(source),
    )


def _signature(model, metric, kwargs):
    if isinstance(model, Signature):
        return model if model.metric == metric else model.with_metric(metric)
    return compute_signature(model, metric, **kwargs)


def _signature_or_error(model, metric, kwargs, on_error):
    try:
        return _signature(model, metric, kwargs)
    except StoreError:
        # A broken or unwritable store is not this model's fault: every
        # other model would fail the same way, each with its NaN row.
        raise
    except (SpecsigError, OSError, ValueError, RuntimeError) as exc:
        if on_error == "raise":
            raise
        return exc


def sign_models(models, metric, kwargs, n_jobs, on_error):
    """Signatures of ``models`` (paths, hub ids, models in memory or
    Signatures) through joblib, in order.

    ``kwargs`` are :func:`compute_signature`'s keyword arguments (a
    ``config`` among them is for models in memory, all of them; a path then
    fails with a ``ValueError``).  With ``n_jobs > 1`` and joblib's default
    process backend, a model in memory is pickled to its worker (a copy of
    its weights there); ``joblib.parallel_config(backend="threading")``
    shares it instead.  With
    ``on_error="warn"`` a model that cannot be read gives its exception in
    place of a Signature; with ``"raise"`` the first one is raised.  A
    :class:`~sklearn_specsig.errors.StoreError` is raised in either mode.
    joblib's active backend is used, so ``joblib.parallel_config(
    backend="dask")`` runs this on a Dask cluster unchanged.

    The settings are checked first (:func:`check_signing`): a bad
    ``metric``, ``device`` or ``precision`` raises one ``ValueError``
    before any model is read, in either ``on_error`` mode.
    """
    check_signing(metric, kwargs.get("device", "auto"), kwargs.get("precision", "float32"))
    return Parallel(n_jobs=n_jobs)(
        delayed(_signature_or_error)(m, metric, kwargs, on_error) for m in models
    )
