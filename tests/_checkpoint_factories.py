"""Writers of small checkpoints for the tests of ``sklearn_specsig.checkpoints``.

Everything is written at test time into a temporary directory: no weights are
committed to the repository.
"""

import hashlib
import json
import os

import gguf
import numpy as np
import torch
from safetensors.torch import save_file

QK_K = 256  # elements per k-quant super-block


def make_tensors(dtype=torch.float32, seed=0):
    """A small state dict with non-square matrices and a 1-D vector."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "model.embed_tokens.weight": (11, 8),
        "model.layers.0.self_attn.q_proj.weight": (8, 8),
        "model.layers.0.mlp.up_proj.weight": (16, 8),
        "model.layers.0.mlp.down_proj.weight": (8, 16),
        "model.norm.weight": (8,),
    }
    return {k: torch.randn(s, generator=gen).to(dtype) for k, s in shapes.items()}


# A small Llama-named model for the bad-input tests.
HIDDEN, INTER, N_LAYERS = 8, 16, 2


def llama_tensors(seed=0, n_layers=N_LAYERS):
    """A Llama-named state dict of random float32 matrices."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {"model.embed_tokens.weight": torch.randn(20, HIDDEN, generator=gen)}
    for layer in range(n_layers):
        prefix = f"model.layers.{layer}."
        for role in "qkvo":
            tensors[f"{prefix}self_attn.{role}_proj.weight"] = torch.randn(
                HIDDEN, HIDDEN, generator=gen
            )
        tensors[f"{prefix}mlp.gate_proj.weight"] = torch.randn(INTER, HIDDEN, generator=gen)
        tensors[f"{prefix}mlp.up_proj.weight"] = torch.randn(INTER, HIDDEN, generator=gen)
        tensors[f"{prefix}mlp.down_proj.weight"] = torch.randn(HIDDEN, INTER, generator=gen)
    return tensors


def llama_dir(path, tensors=None, **config):
    """A Hugging Face model directory holding ``tensors`` (default: llama_tensors)."""
    path.mkdir(parents=True, exist_ok=True)
    save_file(llama_tensors() if tensors is None else tensors, path / "model.safetensors")
    write_config(path, **{"num_hidden_layers": N_LAYERS, "hidden_size": HIDDEN, **config})
    return path


def _split(tensors, n_shards):
    names = list(tensors)
    return [names[i::n_shards] for i in range(n_shards)]


def write_sharded(directory, tensors, n_shards, fmt="safetensors"):
    """Write ``tensors`` as Hugging Face shards plus their index file.

    Returns
    -------
    index_file : pathlib.Path
    """
    directory.mkdir(parents=True, exist_ok=True)
    prefix, ext = (
        ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    )
    weight_map = {}
    for i, names in enumerate(_split(tensors, n_shards), start=1):
        shard = f"{prefix}-{i:05d}-of-{n_shards:05d}.{ext}"
        part = {n: tensors[n] for n in names}
        if fmt == "safetensors":
            save_file(part, directory / shard)
        else:
            torch.save(part, directory / shard)
        weight_map.update(dict.fromkeys(names, shard))
    return write_index(directory / f"{prefix}.{ext}.index.json", weight_map)


def write_index(path, weight_map):
    path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def write_config(directory, **config):
    config = {"model_type": "llama", "num_hidden_layers": 1, **config}
    (directory / "config.json").write_text(json.dumps(config))
    return config


def write_gguf(path, tensors, arch="llama", metadata=None):
    """Write a GGUF file.

    Parameters
    ----------
    tensors : dict of str to (numpy.ndarray, GGMLQuantizationType or None)
        Arrays in (out, in) order: float arrays (type inferred when None) or
        raw uint8 blocks for block types.
    metadata : dict of str to int or list of int
        Keys without the ``"{arch}."`` prefix, written as uint32 (arrays of).
    """
    writer = gguf.GGUFWriter(path, arch)
    for key, value in (metadata or {}).items():
        if isinstance(value, list):
            writer.add_array(f"{arch}.{key}", value)
        else:
            writer.add_uint32(f"{arch}.{key}", value)
    for name, (array, qtype) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_converted_gguf(path, arch, tensors, meta):
    """Write a float32 GGUF as llama.cpp's converter does.

    Parameters
    ----------
    tensors : dict of str to numpy.ndarray
        llama.cpp tensor names to arrays in (out, in) order.
    meta : dict of str to value
        ``GGUFWriter`` setter name without ``add_`` (``block_count``,
        ``head_count_kv``, ...) to its value, so that every key is spelled
        by gguf-py itself.
    """
    writer = gguf.GGUFWriter(path, arch)
    for setter, value in meta.items():
        getattr(writer, f"add_{setter}")(value)
    for name, array in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def assert_same_gguf_reader(fast, plain):
    """Fields and tensors of two ``gguf.GGUFReader`` of one file are equal,
    part for part; ``fast``'s tensor data are plain ndarrays."""
    def fields(reader):
        return [
            (key, f.offset, f.types, f.data, [(p.dtype.str, p.shape, p.tobytes()) for p in f.parts])
            for key, f in reader.fields.items()
        ]

    assert fields(fast) == fields(plain)
    assert fast.data_offset == plain.data_offset
    assert [t.name for t in fast.tensors] == [t.name for t in plain.tensors]
    for a, b in zip(fast.tensors, plain.tensors):
        assert (a.tensor_type, a.data_offset, a.n_bytes) == (b.tensor_type, b.data_offset, b.n_bytes)
        np.testing.assert_array_equal(a.shape, b.shape)
        np.testing.assert_array_equal(a.data, b.data)
        assert type(a.data) is np.ndarray  # not a memmap: the point of it


def _half_bytes(x):
    return np.array([x], dtype=np.float16).view(np.uint8)


def q4_k_block(q, sc, m, d, dmin):
    """Pack one Q4_K super-block (ggml ``block_q4_K``, 144 bytes).

    Element ``i`` decodes to ``d * sc[i // 32] * q[i] - dmin * m[i // 32]``.

    Parameters
    ----------
    q : array of 256 ints in [0, 15]
    sc, m : arrays of 8 ints in [0, 63]
        6-bit scale and min of each 32-element sub-block.
    d, dmin : float
        Super-block scales, stored as float16.
    """
    scales = np.zeros(12, dtype=np.uint8)
    for j in range(4):
        # Sub-blocks 0-3 take the low 6 bits of bytes 0-7; sub-blocks 4-7
        # put their low nibbles in bytes 8-11 and their top 2 bits in the
        # spare top bits of bytes 0-7 (ggml's get_scale_min_k4).
        scales[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6)
        scales[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6)
        scales[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4)
    qs = np.zeros(QK_K // 2, dtype=np.uint8)
    for c in range(4):
        # Each 32-byte chunk holds 64 elements: low nibbles then high nibbles.
        for lo in range(32):
            qs[32 * c + lo] = q[64 * c + lo] | (q[64 * c + 32 + lo] << 4)
    return np.concatenate([_half_bytes(d), _half_bytes(dmin), scales, qs])


def q6_k_block(q, sc, d):
    """Pack one Q6_K super-block (ggml ``block_q6_K``, 210 bytes).

    Element ``i`` decodes to ``d * sc[i // 16] * (q[i] - 32)``.

    Parameters
    ----------
    q : array of 256 ints in [0, 63]
    sc : array of 16 ints in [-128, 127]
        Scale of each 16-element sub-block.
    d : float
        Super-block scale, stored as float16.
    """
    ql = np.zeros(QK_K // 2, dtype=np.uint8)
    qh = np.zeros(QK_K // 4, dtype=np.uint8)
    for h in range(2):
        # Each 128-element half: ql holds low nibbles of elements (l, l+64)
        # and (l+32, l+96); qh holds the top 2 bits of all four.
        y, ql_at, qh_at = 128 * h, 64 * h, 32 * h
        for lo in range(32):
            a, b, c, e = (q[y + lo + 32 * k] for k in range(4))
            ql[ql_at + lo] = (a & 0xF) | ((c & 0xF) << 4)
            ql[ql_at + 32 + lo] = (b & 0xF) | ((e & 0xF) << 4)
            qh[qh_at + lo] = (
                (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6)
            )
    scales = np.asarray(sc, dtype=np.int8).view(np.uint8)
    return np.concatenate([ql, qh, scales, _half_bytes(d)])


def write_hub_cache(cache_dir, repo_id, commit, files, refs=("main",)):
    """Lay out one snapshot of a repo exactly as huggingface_hub caches it.

    ``models--{org}--{name}/blobs/<hash>`` holds the content,
    ``snapshots/<commit>/<file>`` relative symlinks to it, and
    ``refs/<ref>`` the commit hash.

    Parameters
    ----------
    files : dict of str to pathlib.Path
        Repo file name to a local file to cache.

    Returns
    -------
    snapshot : pathlib.Path
    """
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    blobs = repo / "blobs"
    snapshot = repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        content = source.read_bytes()
        blob = blobs / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot
