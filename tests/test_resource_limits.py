"""Part 4 of the bad-input contract: bounded memory, absurd claims refused.

The engine streams: signing a checkpoint needs memory for a few matrices,
not for the model. A file that claims a gigantic header, tensor or config is
refused from its numbers alone, before anything of that size is allocated.
"""

import json
import struct
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import torch
from _checkpoint_factories import llama_dir, write_gguf
from safetensors.torch import save_file

from sklearn_specsig.checkpoints import open_checkpoint
from sklearn_specsig.errors import CheckpointFormatError, ConfigError

MB = 1_000_000


def test_signing_streams_with_bounded_memory(tmp_path):
    # 16 layers x 7 matrices of 64 x 16384 float32: a 470 MB checkpoint of
    # 4 MB matrices. Peak resident memory of a fresh process may grow by a
    # few matrices plus allocator slack (40-80 MB measured), never by the
    # model: loading it whole would add 470 MB.
    n_layers, shape = 16, (64, 16384)
    gen = torch.Generator().manual_seed(0)
    roles = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    tensors = {
        f"model.layers.{layer}.{role}.weight": torch.randn(shape, generator=gen)
        for layer in range(n_layers)
        for role in roles
    }
    big = llama_dir(tmp_path / "big", tensors, num_hidden_layers=n_layers)
    del tensors
    small = llama_dir(tmp_path / "small")
    size = (big / "model.safetensors").stat().st_size
    assert size > 450 * MB

    script = textwrap.dedent(f"""
        import resource
        from sklearn_specsig import compute_signature
        # Sign a tiny model first: imports, thread pools and BLAS buffers
        # are then part of the baseline.
        compute_signature({str(small)!r}, cache=None, progress=False)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sig = compute_signature({str(big)!r}, cache=None, progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert sig.values.shape == (7, {n_layers})
        print((after - before) * 1024)  # ru_maxrss is in KiB on Linux
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.strip())
    assert growth < size / 3, f"peak memory grew by {growth / MB:.0f} MB for a {size / MB:.0f} MB model"


def _peak_python_allocation(fn):
    """Largest Python-level allocation (bytes objects, numpy) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _sparse(path, prefix, size):
    """A file of ``size`` bytes that starts with ``prefix`` and takes no disk."""
    with open(path, "wb") as f:
        f.write(prefix)
        f.truncate(size)
    return path


def _safetensors_with_a_150mb_header(tmp):
    return _sparse(tmp / "model.safetensors", struct.pack("<Q", 150 * MB), 300 * MB)


def _safetensors_claiming_a_trillion_elements(tmp):
    header = json.dumps(
        {"w": {"dtype": "BF16", "shape": [10**6, 10**6], "data_offsets": [0, 2 * 10**12]}}
    ).encode()
    file = tmp / "model.safetensors"
    file.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    return file


def _config_of_200mb(tmp):
    save_file({"w": torch.ones(2, 2)}, tmp / "model.safetensors")
    _sparse(tmp / "config.json", b'{"model_type": "', 200 * MB)
    return tmp


def _index_of_200mb(tmp):
    _sparse(tmp / "model.safetensors.index.json", b'{"weight_map": {"', 200 * MB)
    return tmp


def _gguf_claiming_a_trillion_elements(tmp):
    file = write_gguf(tmp / "m.gguf", {"w": (np.ones((32, 32), np.float32), None)})
    raw = bytearray(file.read_bytes())
    dims_at = raw.index(b"w\x02\x00\x00\x00") + 1 + 4  # name, then n_dims=2
    struct.pack_into("<QQ", raw, dims_at, 10**6, 10**6)
    file.write_bytes(bytes(raw))
    return file


@pytest.mark.parametrize("make, error, fragment", [
    (_safetensors_with_a_150mb_header, CheckpointFormatError, "150000000-byte header"),
    (_safetensors_claiming_a_trillion_elements, CheckpointFormatError, "ends at byte 2000000000000"),
    (_config_of_200mb, ConfigError, "too large for a config or index file"),
    (_index_of_200mb, CheckpointFormatError, "too large for a config or index file"),
    (_gguf_claiming_a_trillion_elements, CheckpointFormatError, "(1000000,1000000)"),
], ids=lambda p: p.__name__.lstrip("_") if callable(p) else None)
def test_absurd_claims_are_refused_before_allocating(tmp_path, make, error, fragment):
    source = make(tmp_path)

    def read():
        with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            list(open_checkpoint(source).iter_tensors())

    assert _peak_python_allocation(read) < 5 * MB
