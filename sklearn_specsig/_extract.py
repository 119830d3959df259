"""Streaming extraction of a checkpoint's spectra, through the store.

The only expensive step of the library.  Tensors are read one at a time
(a background thread reads and hashes the next ones while the current one is
decomposed), each matrix's spectrum is looked up in the store by a hash of its
content before anything is solved, and every finished batch of spectra is
committed at once, so an interrupted extraction keeps its work.
"""

import functools
import hashlib
import queue
import threading
import warnings
from collections import defaultdict
from pathlib import Path

import blake3
import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .architectures import resolve_architecture, schemes_in_force
from .checkpoints import locate_checkpoint
from .errors import CheckpointFormatError, SpectralWarning
from .spectral import resolve_device, spectra
from .store import FORMAT_VERSION, _digest, resolve_store

#: Tensors read ahead of the one being decomposed.
_PREFETCH = 2
#: Same-shape matrices solved in one batched call on a GPU.
_CUDA_BATCH = 4


def _tensor_digest(tensor):
    """Content hash of a tensor: its dtype, shape and raw bytes.

    BLAKE3 is cryptographic, so an auditor's cache cannot be poisoned by a
    crafted collision, and hashes several GB/s (multithreaded on large
    buffers), so hashing a 13 GB checkpoint costs seconds, not a minute as
    BLAKE2 did.  It releases the GIL: this overlaps with the eigensolver.
    """
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update(f"{tensor.dtype}:{tuple(tensor.shape)}".encode())
    h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest(length=20)


def _prefetched(iterator, depth=_PREFETCH):
    """Yield ``(name, tensor, digest)`` from a reader thread running ahead."""
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for name, tensor in iterator:
                item = (name, tensor, _tensor_digest(tensor))
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # re-raised in the consumer
            items.put(exc)

    thread = threading.Thread(target=produce, name="specsig-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _settings(precision):
    return f"format={FORMAT_VERSION};precision={precision}"


@functools.cache
def _code_digest():
    """The library's version and a digest of its source files.

    Part of the quick memo's key: a changed naming scheme, reader or split
    rule (a new release, or a developer's edit) must not reuse a mapping
    decided by the old code.  None when the source cannot be read (a
    zipped install): the quick memo is then not used.
    """
    root = Path(__file__).resolve().parent
    try:
        sources = sorted(root.rglob("*.py"))
        parts = [__version__] + [
            f"{p.relative_to(root)}:{hashlib.blake2b(p.read_bytes()).hexdigest()}"
            for p in sources
        ]
    except OSError:
        return None
    return _digest(*parts) if sources else None


def _quick_key(store, location, settings, scheme):
    """Memo key decided before any weight file is parsed: the files' stats,
    the settings, the library (version and source) and the naming schemes
    in force.  None when it cannot be made."""
    code = _code_digest()
    if code is None:
        return None
    extra = f"quick;{settings};{code};{schemes_in_force(scheme)}"
    return store.stat_key(location.file_stats(), extra=extra)


def _from_store(store, stat_key, settings):
    """A complete stored extraction for unchanged files, or None."""
    fingerprint = store.get_source(stat_key)
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
    return {
        "architecture": model["architecture"],
        "n_layers": model["n_layers"],
        "fingerprint": fingerprint,
        "entries": [row[:4] for row in model["entries"]],
        "spectra": {row[0]: found[row[4]] for row in model["entries"]},
    }


def _remember(store, fingerprint, *keys):
    for key in keys:
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


class _Solver:
    """Queue of matrices to decompose, flushed by shape into the store."""

    def __init__(self, device, precision, store, progress_bar):
        self.device = device
        self.precision = precision
        self.store = store
        self.bar = progress_bar
        self.batch = _CUDA_BATCH if device.type == "cuda" else 1
        self.pending = defaultdict(list)
        self.solved = {}

    def add(self, key, label, matrix):
        shape = tuple(matrix.shape)
        self.pending[shape].append((key, label, matrix))
        if len(self.pending[shape]) >= self.batch:
            self._flush(shape)

    def _flush(self, shape):
        batch = self.pending.pop(shape, [])
        if batch:
            eigs = spectra(
                [m for _, _, m in batch], device=self.device, precision=self.precision
            )
            for (_, label, _), eig in zip(batch, eigs):
                if np.isnan(eig).any():
                    warnings.warn(
                        f"{label} contains NaN or Inf weights; its metrics are "
                        "NaN. Check the checkpoint: it may be corrupted or badly "
                        "converted.",
                        SpectralWarning,
                        stacklevel=5,
                    )
            self._finish({key: e.astype(np.float32) for (key, _, _), e in zip(batch, eigs)})

    def _finish(self, solved):
        if self.store is not None:
            self.store.put_spectra(solved)
        self.solved.update(solved)
        self.bar.update(len(solved))

    def close(self):
        for shape in list(self.pending):
            self._flush(shape)
        return self.solved


def extract_spectra(
    source,
    *,
    device="auto",
    cache="auto",
    precision="float32",
    revision=None,
    scheme=None,
    progress=True,
):
    """Spectra of every signature matrix of a checkpoint (see compute_signature).

    Returns
    -------
    dict
        ``architecture``, ``n_layers``, ``fingerprint``, ``entries`` (a list
        of ``[label, role, layer, expert]``) and ``spectra`` (label to
        float32 eigenvalues).
    """
    device = resolve_device(device)
    store = resolve_store(cache)
    settings = _settings(precision)
    location = locate_checkpoint(source, revision=revision)
    quick_key = stat_key = None
    if store is not None:
        # A full hit costs file stats and a few SQLite reads: no header, no
        # GGUF vocabulary, no architecture resolution.
        quick_key = _quick_key(store, location, settings, scheme)
        cached = quick_key and _from_store(store, quick_key, settings)
        if cached:
            return cached
    ckpt = location.open()
    names = ckpt.tensor_names()
    arch = resolve_architecture(
        names, ckpt.config, {n: ckpt.tensor_shape(n) for n in names}, scheme=scheme
    )
    plan_key = _digest(
        arch.name, *(f"{p.name}|{p.descriptor}" for p in arch.plans.values())
    )
    if store is not None:
        # The slower memo: unchanged files under the same mapping (the code
        # changed, but not what it makes of this checkpoint).
        stat_key = store.stat_key(ckpt.file_stats(), extra=plan_key + settings)
        cached = _from_store(store, stat_key, settings)
        if cached is not None:
            _remember(store, cached["fingerprint"], quick_key)
            return cached

    n_matrices = sum(len(p.parts) for p in arch.plans.values())
    entries, keys, digests = [], {}, []
    with tqdm(
        total=n_matrices,
        desc=f"spectra of {source}",
        unit="matrix",
        disable=None if progress else True,
        leave=False,
    ) as bar:
        solver = _Solver(device, precision, store, bar)
        for name, tensor, digest in _prefetched(ckpt.iter_tensors(list(arch.plans))):
            plan = arch.plans[name]
            _check_floating(tensor, name, source)
            digests.append(f"{name}|{plan.descriptor}|{digest}")
            part_keys = [
                _digest(digest, plan.descriptor, i, settings) for i in range(len(plan.parts))
            ]
            stored = store.get_spectra(part_keys) if store is not None else {}
            bar.update(len(stored))
            solver.solved.update(stored)
            matrices = None
            for i, (role, layer, expert) in enumerate(plan.parts):
                label = _part_label(plan, i)
                entries.append([label, role, layer, expert])
                keys[label] = part_keys[i]
                if part_keys[i] not in stored:
                    if matrices is None:
                        matrices = plan.split(tensor)
                    solver.add(part_keys[i], label, matrices[i][3])
            del tensor, matrices
        solved = solver.close()

    fingerprint = _digest(*sorted(digests))
    # The model's own type ("qwen2") says more than the naming scheme that
    # read it ("llama" covers Mistral, Qwen2, Gemma ...).
    architecture = arch.model_type or arch.name
    if store is not None:
        store.put_model(
            fingerprint,
            settings,
            architecture,
            arch.n_layers,
            [row + [keys[row[0]]] for row in entries],
        )
        _remember(store, fingerprint, stat_key, quick_key)
    return {
        "architecture": architecture,
        "n_layers": arch.n_layers,
        "fingerprint": fingerprint,
        "entries": entries,
        "spectra": {label: solved[key] for label, key in keys.items()},
    }
