"""Streaming extraction of a checkpoint's spectra, through the store.

The only expensive step of the library.  Tensors are read one at a time
(a reader thread reads and hashes the next ones while the current one is
decomposed), each matrix's spectrum is looked up in the store by a hash of
its content before anything is solved, and every finished batch of spectra
is committed at once, so an interrupted extraction keeps its work.  The keys
are made by :mod:`sklearn_specsig.store`; see ``docs/design.md``.
"""

import os
import re
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..architectures import resolve_architecture, schemes_in_force
from ..checkpoints import locate_checkpoint, locate_model
from ..errors import CheckpointFormatError
from ..signature import MatrixEntry
from ..spectral import resolve_device
from ..store import (
    model_fingerprint,
    plan_key,
    plan_stat_key,
    quick_key,
    resolve_store,
    settings_key,
    spectrum_key,
)
from ._prefetch import prefetched
from ._solver import SpectrumSolver

__all__ = ["Extraction", "check_device", "check_precision", "extract_spectra"]

_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")
_PRECISIONS = ("float32", "float64")


def check_device(device):
    """The :class:`torch.device` that ``device`` names, checked before any read.

    The rule of the library's ``device=`` parameters: ``"auto"`` (CUDA when
    present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`.
    A CUDA device is refused when torch sees no GPU (or fewer than ``N + 1``):
    an estimator fitted on a GPU machine and unpickled on a CPU-only one
    says so here, not once per model in the middle of a batch.  ``"auto"``
    is resolved by :func:`sklearn_specsig.spectral.resolve_device`; this
    rule is that function's, narrowed to the devices the eigensolvers run
    on and told how many GPUs there are.

    Parameters
    ----------
    device : str or torch.device

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        Not a device of the rule, or CUDA asked for where there is none.

    Examples
    --------
    >>> from sklearn_specsig.engine._extract import check_device
    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: device='gpu' is not a device: use 'auto', 'cpu', 'cuda', \
'cuda:N' or a torch.device.
    """
    if not isinstance(device, torch.device) and not (
            isinstance(device, str) and _DEVICE_NAME.fullmatch(device)):
        raise ValueError(
            f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda', "
            "'cuda:N' or a torch.device."
        )
    if isinstance(device, torch.device) or device == "auto":
        resolved = resolve_device(device)
    else:
        # No resolve_device here: it would accept what torch knows ('mps',
        # 'cuda:7') without asking how many GPUs this machine has.
        resolved = torch.device(device)
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device={device!r} asks for CUDA but torch sees no CUDA GPU on this "
                "machine; use device='auto' (CUDA when present) or 'cpu'."
            )
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device={device!r} asks for CUDA GPU {resolved.index} but torch sees "
                f"{count}; use 'cuda:0' to 'cuda:{count - 1}' or 'auto'."
            )
    return resolved


def check_precision(precision):
    """Raise a ValueError unless ``precision`` is "float32" or "float64"."""
    if not (isinstance(precision, str) and precision in _PRECISIONS):
        raise ValueError(
            f"precision={precision!r} is not supported; use 'float32' or 'float64'."
        )
    return precision


@dataclass(frozen=True)
class Extraction:
    """The spectra of every signature matrix of one checkpoint.

    Attributes
    ----------
    architecture : str
        The model type (``config.json``'s ``model_type``, GGUF's
        ``general.architecture``), else the naming scheme that mapped it.
    n_layers : int
    fingerprint : str
        Content hash of the mapped tensors (:func:`~sklearn_specsig.store.model_fingerprint`).
    entries : tuple of MatrixEntry
        Where each matrix sits (label, role, layer, expert).
    spectra : dict of str to ndarray
        Float32 ascending eigenvalues by entry label.
    """

    architecture: str
    n_layers: int
    fingerprint: str
    entries: tuple
    spectra: dict = field(repr=False)


def _from_store(store, memo_key, settings):
    """A complete stored extraction for the files behind ``memo_key``, or None."""
    fingerprint = store.get_source(memo_key)
    if fingerprint is None:
        return None
    model = store.get_model(fingerprint, settings)
    if model is None:
        return None
    keys = [row[4] for row in model["entries"]]
    # A damaged spectrum makes this a miss: get_spectra warns and removes
    # it, and the extraction that follows solves that matrix again.
    found = store.get_spectra(keys)
    if len(found) != len(set(keys)):
        return None
    return Extraction(
        architecture=model["architecture"],
        n_layers=model["n_layers"],
        fingerprint=fingerprint,
        entries=tuple(MatrixEntry(*row[:4]) for row in model["entries"]),
        spectra={row[0]: found[row[4]] for row in model["entries"]},
    )


def _remember(store, fingerprint, *memo_keys):
    for key in memo_keys:
        if key is not None:
            store.put_source(key, fingerprint)


def _check_floating(tensor, name, source):
    if not tensor.is_floating_point():
        raise CheckpointFormatError(
            f"Tensor {name!r} of '{source}' is stored as {tensor.dtype}, not as "
            "floating point: this looks like a quantized checkpoint "
            "(bitsandbytes, GPTQ, AWQ ...), whose integer codes have no "
            "meaningful spectrum. Sign the unquantized weights, or a GGUF file "
            "(which is dequantized on reading)."
        )


def _part_label(plan, index):
    if len(plan.parts) == 1:
        return plan.name
    role, _, expert = plan.parts[index]
    return f"{plan.name}[{role if expert is None else f'{role}:{expert}'}]"


def extract_spectra(
    source,
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
    """Spectra of every signature matrix of a checkpoint or a model in memory.

    Parameters are those of :func:`~sklearn_specsig.compute_signature`.

    Returns
    -------
    Extraction
    """
    # Settings first: a bad one raises before any file is opened.
    device = check_device(device)
    check_precision(precision)
    store = resolve_store(cache)
    settings = settings_key(precision)
    if isinstance(source, (str, os.PathLike)) and config is None:
        location = locate_checkpoint(source, revision=revision, base=base)
    elif base is not None:
        raise ValueError("base= is for a LoRA adapter folder (a path or hub id), not "
                         "for a model in memory: merge the adapter and pass the model.")
    else:  # a model in memory (MemoryLocation), or config= with a path: refused
        location = locate_model(source, config=config, revision=revision)
    quick = None
    # A model in memory has no file stats (None): both memos are skipped and
    # its tensors are read and hashed, each spectrum still found by content.
    stats = location.file_stats() if store is not None else None
    if stats is not None:
        # A full hit costs file stats and a few SQLite reads: no header, no
        # GGUF vocabulary, no architecture resolution.
        quick = quick_key(stats, settings, schemes_in_force(scheme))
        cached = quick and _from_store(store, quick, settings)
        if cached:
            return cached
    ckpt = location.open()
    names = ckpt.tensor_names()
    arch = resolve_architecture(
        names, ckpt.config, {n: ckpt.tensor_shape(n) for n in names}, scheme=scheme
    )
    stat = None
    stats = ckpt.file_stats() if store is not None else None
    if stats is not None:
        stat = plan_stat_key(stats, plan_key(arch), settings)
        cached = _from_store(store, stat, settings)
        if cached is not None:
            _remember(store, cached.fingerprint, quick)
            return cached

    n_matrices = sum(len(p.parts) for p in arch.plans.values())
    entries, keys, lines = [], {}, []
    with tqdm(
        total=n_matrices,
        desc=f"spectra of {location.source}",
        unit="matrix",
        disable=None if progress else True,
        leave=False,
    ) as bar:
        solver = SpectrumSolver(device, precision, store, bar)
        for name, tensor, content in prefetched(ckpt.iter_tensors(list(arch.plans))):
            plan = arch.plans[name]
            _check_floating(tensor, name, location.source)
            lines.append(f"{name}|{plan.descriptor}|{content}")
            part_keys = [
                spectrum_key(content, plan.descriptor, i, settings)
                for i in range(len(plan.parts))
            ]
            stored = store.get_spectra(part_keys) if store is not None else {}
            solver.found(stored)
            matrices = None
            for i, (role, layer, expert) in enumerate(plan.parts):
                label = _part_label(plan, i)
                entries.append(MatrixEntry(label, role, layer, expert))
                keys[label] = part_keys[i]
                if part_keys[i] not in stored:
                    if matrices is None:
                        matrices = plan.split(tensor)
                    solver.add(part_keys[i], label, matrices[i][3])
            del tensor, matrices
        solved = solver.close()

    fingerprint = model_fingerprint(lines)
    # The model's own type ("qwen2") says more than the naming scheme that
    # read it ("llama" covers Mistral, Qwen2, Gemma ...).
    architecture = arch.model_type or arch.name
    if store is not None:
        store.put_model(
            fingerprint,
            settings,
            architecture,
            arch.n_layers,
            [[e.label, e.role, e.layer, e.expert, keys[e.label]] for e in entries],
        )
        _remember(store, fingerprint, stat, quick)
    return Extraction(
        architecture=architecture,
        n_layers=arch.n_layers,
        fingerprint=fingerprint,
        entries=tuple(entries),
        spectra={label: solved[key] for label, key in keys.items()},
    )
