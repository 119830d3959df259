"""Streaming rewrite of a checkpoint with per-matrix edits, for :mod:`perturb`.

A source is read tensor by tensor; each signature tensor (and, where asked,
its bias) is edited role by role in float, whatever its layout (fused rows,
interleaved heads, transposed Conv1D, expert stacks), and written into
safetensors shards of bounded size, so rewriting a model needs memory for
one shard, not for the model.
"""

import json
import math
import numbers
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.utils import check_random_state

from .architectures import cut_matrix, resolve_architecture
from .checkpoints import Checkpoint, open_checkpoint
from .errors import CheckpointFormatError

SHARD_BYTES = 2_000_000_000
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json")
PCS_CHUNK = 1 << 22  # elements per float64 chunk of the PCS accumulation


def open_with_architecture(source):
    ckpt = source if isinstance(source, Checkpoint) else open_checkpoint(source)
    names = ckpt.tensor_names()
    return ckpt, resolve_architecture(names, ckpt.config,
                                      {n: ckpt.tensor_shape(n) for n in names})


def as_generator(random_state):
    """A numpy Generator from a scikit-learn ``random_state`` (or a Generator)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(
        int(check_random_state(random_state).randint(2**62, dtype=np.int64)))


def check_number(value, name, low, high=math.inf, integral=False, example="0.3"):
    kind = numbers.Integral if integral else numbers.Real
    try:  # math.isfinite of a huge int overflows
        valid = (isinstance(value, kind) and not isinstance(value, bool)
                 and math.isfinite(value) and low <= value < high)
    except OverflowError:
        valid = False
    if not valid:
        bound = f">= {low}" + ("" if high == math.inf else f" and < {high}")
        raise ValueError(f"{name} must be a finite {'integer' if integral else 'number'} {bound} "
                         f"(e.g. {example}), got {value!r}.")
    return value


def check_dest(dest, ckpt, overwrite):
    """Refuse a destination holding weights (unless ``overwrite``) or the source's folder.

    Returns the weight files that ``overwrite`` replaces.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"Destination '{dest}' is a file; pass a directory path.")
    source_dir = ckpt.path if Path(ckpt.path).is_dir() else Path(ckpt.path).parent
    if dest.exists() and dest.resolve() == Path(source_dir).resolve():
        raise ValueError(f"Destination '{dest}' is the source checkpoint's directory; pass "
                         "another directory so the source is not overwritten.")
    existing = sorted(p for p in dest.iterdir() if p.is_file()
                      and p.name.endswith(_WEIGHT_SUFFIXES)) if dest.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(f"Destination '{dest}' already contains weights "
                              f"({existing[0].name}); pass overwrite=True to replace them "
                              "or choose an empty directory.")
    return existing


class ShardWriter:
    """Write tensors into safetensors shards of bounded size, named on close."""

    def __init__(self, dest, max_bytes, replaced):
        self.dest, self.max_bytes, self.replaced = Path(dest), max_bytes, replaced
        self.dest.mkdir(parents=True, exist_ok=True)
        self.buffer, self.size, self.total, self.shards, self.ptrs = {}, 0, 0, [], set()

    def add(self, name, tensor):
        nbytes = tensor.numel() * tensor.element_size()
        if self.buffer and self.size + nbytes > self.max_bytes:
            self._flush()
        storage = tensor.untyped_storage()
        # safetensors refuses tensors sharing memory (tied weights of a .bin) or views.
        if storage.data_ptr() in self.ptrs or storage.nbytes() != nbytes:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        self.ptrs.add(tensor.untyped_storage().data_ptr())
        self.buffer[name] = tensor.contiguous()
        self.size, self.total = self.size + nbytes, self.total + nbytes

    def _flush(self):
        tmp = self.dest / f".perturb-shard-{len(self.shards):05d}.tmp"
        save_file(self.buffer, tmp, metadata={"format": "pt"})
        self.shards.append((tmp, list(self.buffer)))
        self.buffer, self.size, self.ptrs = {}, 0, set()

    def discard(self):
        """Delete the temporary shards written so far."""
        for tmp, _ in self.shards:
            tmp.unlink(missing_ok=True)
        self.shards, self.buffer = [], {}

    def close(self, config):
        if self.buffer or not self.shards:
            self._flush()
        for path in self.replaced:
            path.unlink(missing_ok=True)
        n, weight_map = len(self.shards), {}
        for i, (tmp, names) in enumerate(self.shards, 1):
            shard = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            tmp.replace(self.dest / shard)
            weight_map.update(dict.fromkeys(names, shard))
        if n > 1:
            index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
            (self.dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (self.dest / "config.json").write_text(
            json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")


def row_indices(plan):
    """Row indices, in the (out, in) matrix, of each role a stored matrix holds."""
    if plan.layout == "head_stack":
        # A per-head 3-D stack (llama.cpp's MLA attn_k_b / attn_v_b) is one
        # signature matrix assembled from every head: no row of it is a row
        # of a stored matrix, so it cannot be edited in place.
        raise CheckpointFormatError(
            f"Tensor {plan.name!r} is a per-head stack ({plan.descriptor}); "
            "perturb cannot edit it in place. Perturb the original "
            "(transformers) checkpoint of this model instead of its GGUF file."
        )
    out = plan.shape[-1] if plan.transpose else plan.shape[-2]
    return [block[:, 0] for block in cut_matrix(
        torch.arange(out).unsqueeze(1), plan.layout, plan.layout_args)]


def matrix_slots(plan, tensor, transpose=None):
    """Yield ``((role, layer, expert), oriented, index)`` per matrix of ``tensor``.

    ``oriented[index]`` is the (out, in) matrix, a copy; assigning to it
    writes into ``tensor``, whatever the layout (fused rows, interleaved
    heads, transposed Conv1D, expert stacks).
    """
    transpose = plan.transpose if transpose is None else transpose
    rows, parts = row_indices(plan), iter(plan.parts)
    for mat in (tensor.unbind(0) if len(plan.shape) == 3 else (tensor,)):
        for index in rows:
            yield next(parts), (mat.T if transpose else mat), index


def part_shapes(arch):
    """``(role, layer, expert) -> (out, in)`` of every signature matrix, from plans only."""
    shapes = {}
    for plan in arch.plans.values():
        cols, rows = plan.shape[-2] if plan.transpose else plan.shape[-1], row_indices(plan)
        for i, part in enumerate(plan.parts):
            shapes[part] = (len(rows[i % len(rows)]), cols)
    return shapes


def bias_plans(arch, ckpt):
    """Bias name -> plan of its weight (``x.weight`` -> ``x.bias``, ``x`` -> ``x_bias``)."""
    names, found = set(ckpt.tensor_names()), {}
    for name, plan in arch.plans.items():
        bias = name[:-len(".weight")] + ".bias" if name.endswith(".weight") else name + "_bias"
        out = plan.shape[-1] if plan.transpose else plan.shape[-2]
        if bias in names and tuple(ckpt.tensor_shape(bias)) == (*plan.shape[:-2], out):
            found[bias] = plan
    return found


def per_part(edit, roles=None):
    """Turn ``edit(role, layer, expert, matrix) -> matrix or None`` into a tensor edit."""
    def tensor_edit(plan, work, transpose=None):
        for (role, layer, expert), oriented, index in matrix_slots(plan, work, transpose):
            if roles is None or role in roles:
                new = edit(role, layer, expert, oriented[index])
                if new is not None:
                    oriented[index] = new
    return tensor_edit


def rewrite(ckpt, arch, dest, *, edit=None, bias_edit=None, rename=None, config=None,
             replaced=(), max_shard_bytes=SHARD_BYTES):
    """Stream ``ckpt`` into ``dest``, editing signature tensors and their biases in float."""
    biases = bias_plans(arch, ckpt) if bias_edit is not None else {}
    writer = ShardWriter(dest, max_shard_bytes, replaced)
    try:
        for name, tensor in ckpt.iter_tensors():
            new_name = name if rename is None else rename(name)
            if new_name is None:
                continue
            if (edit is not None and name in arch.plans) or name in biases:
                work = tensor.to(torch.float64 if tensor.dtype == torch.float64 else torch.float32,
                                 copy=True)
                if name in biases:  # a bias is an (out, 1) matrix, never transposed
                    bias_edit(biases[name], work.unsqueeze(-1), transpose=False)
                else:
                    edit(arch.plans[name], work)
                tensor = work.to(tensor.dtype)
            writer.add(new_name, tensor)
    except BaseException:
        writer.discard()  # no half-written shards left in dest (up to GBs each)
        raise
    writer.close(dict(ckpt.config) if config is None else config)
    return Path(dest)
