"""Every key the store is asked for, made in one place.

What a key means (and :data:`FORMAT_VERSION`, which must change when that
meaning does) sits here, next to the store whose tables it indexes; the
engine calls these functions and builds no key of its own.  The keys, from
the finest to the coarsest (``docs/design.md``, "The cache"):

- :func:`spectrum_key`: one spectrum, by the content of its tensor;
- :func:`model_fingerprint`: one model, by the content of its mapped tensors;
- :func:`plan_stat_key`: files as they are on disk under a resolved mapping;
- :func:`quick_key`: files as they are on disk under this library and these
  naming schemes, decided before any weight file is parsed.
"""

import functools
import hashlib
import json
from pathlib import Path

__all__ = [
    "FORMAT_VERSION",
    "code_digest",
    "digest",
    "model_fingerprint",
    "plan_key",
    "plan_stat_key",
    "quick_key",
    "settings_key",
    "spectrum_key",
    "stat_key",
    "tensor_digest",
]

#: Bumped whenever the meaning of a stored key or value changes.
FORMAT_VERSION = 1


def digest(*parts):
    """A short hash of ``parts`` (str, bytes or anything with a ``str``),
    each ended by a NUL so that ``("ab", "c")`` and ``("a", "bc")`` differ."""
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


def tensor_digest(tensor):
    """Content hash of a tensor: its dtype, shape and raw bytes.

    BLAKE3 is cryptographic, so an auditor's cache cannot be poisoned by a
    crafted collision, and hashes several GB/s (multithreaded on large
    buffers), so hashing a 13 GB checkpoint costs seconds.  It releases the
    GIL: the engine's reader thread hashes while the eigensolver runs.
    """
    import blake3
    import torch

    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update(f"{tensor.dtype}:{tuple(tensor.shape)}".encode())
    h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest(length=20)


def settings_key(precision):
    """What besides the weights decides a spectrum: the store's format and
    the eigensolver's precision."""
    return f"format={FORMAT_VERSION};precision={precision}"


def spectrum_key(content, descriptor, part, settings):
    """Key of one spectrum: the tensor's content hash, how it was cut
    (:attr:`TensorPlan.descriptor`), which part, and the settings."""
    return digest(content, descriptor, part, settings)


def model_fingerprint(tensor_lines):
    """A model's fingerprint: the hash of its ``name|descriptor|content``
    lines, in sorted order (independent of reading order)."""
    return digest(*sorted(tensor_lines))


def plan_key(architecture):
    """What a naming scheme made of a checkpoint: its name and every plan."""
    return digest(architecture.name,
                  *(f"{p.name}|{p.descriptor}" for p in architecture.plans.values()))


@functools.cache
def code_digest():
    """The library's version and a digest of its source files.

    Part of the quick memo's key: a changed naming scheme, reader or split
    rule (a new release, or a developer's edit) must not reuse a mapping
    decided by the old code.  None when the source cannot be read (a
    zipped install): the quick memo is then not used.
    """
    from .. import __version__

    # The whole package's source, not this folder's.
    root = Path(__file__).resolve().parent.parent
    try:
        sources = sorted(root.rglob("*.py"))
        parts = [__version__] + [
            f"{p.relative_to(root)}:{hashlib.blake2b(p.read_bytes()).hexdigest()}"
            for p in sources
        ]
    except OSError:
        return None
    return digest(*parts) if sources else None


def stat_key(file_stats, extra=""):
    """Key of a checkpoint's files as they are on disk now (``(path, size,
    mtime_ns)`` triples), with ``extra`` saying under what they were read."""
    return digest(json.dumps(sorted(map(list, file_stats))), extra)


def quick_key(file_stats, settings, schemes):
    """The memo key decided before any weight file is parsed: file stats,
    settings, the library (:func:`code_digest`) and the naming schemes in
    force (``architectures.schemes_in_force``).  None without a code digest."""
    code = code_digest()
    if code is None:
        return None
    return stat_key(file_stats, extra=f"quick;{settings};{code};{schemes}")


def plan_stat_key(file_stats, plan, settings):
    """The slower memo key: file stats under a resolved mapping
    (:func:`plan_key`), for when the code changed but not what it makes of
    this checkpoint."""
    return stat_key(file_stats, extra=plan + settings)
