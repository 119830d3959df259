"""Perturbed copies of a checkpoint, and the parameter-cosine-similarity baseline.

The robustness study of the paper (appendix 7.6) compares a model with copies
that compute the same function (:func:`scale_attention`, :func:`permute_mlp`),
that were damaged (:func:`add_noise`, :func:`prune_magnitude`) or that lost
blocks (:func:`drop_layers`).  Each writer streams the source tensor by tensor
into a Hugging Face directory (``config.json`` and safetensors shards of at
most ``max_shard_bytes``).  Only signature matrices (roles q, k, v, o, gate,
up, down) change -- plus, where the function must be preserved, their biases;
embeddings, norms and ``lm_head`` are copied, and every tensor keeps its dtype.
:func:`parameter_cosine_similarity` is the paper's data-free baseline (PCS).
"""

import hashlib
import json
import math
import numbers
import re
from pathlib import Path

import numpy as np
import torch

from ._rewrite import (
    PCS_CHUNK,
    SHARD_BYTES,
    as_generator,
    check_dest,
    check_number,
    matrix_slots,
    open_with_architecture,
    part_shapes,
    per_part,
    rewrite,
)
from .architectures import CONFIG_ALIASES

__all__ = ["add_noise", "drop_layers", "parameter_cosine_similarity", "permute_mlp",
           "prune_magnitude", "scale_attention"]

def scale_attention(source, dest, *, gamma=1.0, pairs=("qk", "vo"), random_state=None,
                    overwrite=False, max_shard_bytes=SHARD_BYTES):
    """Write a copy with Q, K and V, O rescaled: same function, other weights.

    Per layer, ``a = exp(gamma z)`` and ``b = exp(gamma z')`` with ``z, z' ~
    N(0, 1)`` give ``Q' = a Q``, ``K' = K / a``, ``V' = b V``, ``O' = O / b``;
    q, k, v biases (if any) are scaled like their rows, so ``Q K^T``, ``O V``
    and the model's outputs are unchanged.  Fused q/k/v tensors (Phi-3,
    GPT-2's transposed Conv1D, GPT-NeoX) are scaled role by role.

    Parameters
    ----------
    source : str, path-like or Checkpoint
        Anything :func:`~sklearn_specsig.checkpoints.open_checkpoint` opens.
    dest : str or path-like
        Directory to write (created if needed).
    gamma : float, default=1.0
        Spread of the log factors; 0 writes an exact copy.
    pairs : sequence of {"qk", "vo"}, default=("qk", "vo")
        Pairs to rescale; a pair's factors do not depend on the other pair.
    random_state : int, RandomState instance, Generator or None, default=None
    overwrite : bool, default=False
        Replace weights already in ``dest`` instead of raising ``FileExistsError``.
    max_shard_bytes : int, default=2_000_000_000
        Largest shard (a larger single tensor gets a shard of its own).

    Returns
    -------
    dest : pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_specsig import compute_signature
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> from sklearn_specsig.perturb import parameter_cosine_similarity, scale_attention
    >>> with tempfile.TemporaryDirectory() as root:
    ...     base = make_model_zoo(root, 1, 0, n_layers=2, hidden_size=16, random_state=0).paths[0]
    ...     scaled = scale_attention(base, f"{root}/scaled", gamma=1.0, random_state=0)
    ...     sigs = [compute_signature(p, cache=None, progress=False) for p in (base, scaled)]
    ...     print(abs(sigs[0].values - sigs[1].values).max() < 1e-4,
    ...           parameter_cosine_similarity(base, scaled) < 0.99)
    True True
    """
    gamma = float(check_number(gamma, "gamma", 0))
    pairs = (pairs,) if isinstance(pairs, str) else tuple(pairs)
    if not pairs or set(pairs) - {"qk", "vo"}:
        raise ValueError(f"pairs must be a non-empty subset of ('qk', 'vo'), got {pairs!r}.")
    check_number(max_shard_bytes, "max_shard_bytes", 1, integral=True, example="10**9")
    ckpt, arch = open_with_architecture(source)
    replaced = check_dest(dest, ckpt, overwrite)
    present, partner = set(part_shapes(arch)), {"q": "k", "k": "q", "v": "o", "o": "v"}
    for role, layer, expert in present:
        pair = "qk" if role in ("q", "k") else "vo"
        if role in partner and pair in pairs and (partner[role], layer, expert) not in present:
            raise ValueError(
                f"Layer {layer} has a {role!r} matrix but no {partner[role]!r} matrix, so "
                f"rescaling pair {pair!r} would change the model; pass pairs without {pair!r}.")
    a, b = np.exp(gamma * as_generator(random_state).standard_normal((2, arch.n_layers)))
    factors = {**({"q": (a, False), "k": (a, True)} if "qk" in pairs else {}),
               **({"v": (b, False), "o": (b, True)} if "vo" in pairs else {})}

    def rescale(role, layer, expert, matrix):
        if role not in factors:
            return None
        factor, divide = factors[role][0][layer].item(), factors[role][1]
        return matrix / factor if divide else matrix * factor

    return rewrite(ckpt, arch, dest, edit=per_part(rescale),
                    bias_edit=per_part(rescale, roles={"q", "k", "v"}),
                    replaced=replaced, max_shard_bytes=max_shard_bytes)


def permute_mlp(source, dest, *, random_state=None, overwrite=False,
                max_shard_bytes=SHARD_BYTES):
    """Write a copy whose MLP hidden units are permuted: same function, other weights.

    Per layer (and expert) a random permutation ``P`` gives ``W_gate' = P
    W_gate``, ``W_up' = P W_up``, ``W_down' = W_down P^-1``; gate and up
    biases (if any) are permuted too.  Without a gate (GPT-2, BERT) up and
    down are permuted.  Fused ``[gate; up]`` tensors and expert stacks work.

    Parameters
    ----------
    source, dest, overwrite, max_shard_bytes
        See :func:`scale_attention`.
    random_state : int, RandomState instance, Generator or None, default=None

    Returns
    -------
    dest : pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> from sklearn_specsig.perturb import parameter_cosine_similarity, permute_mlp
    >>> with tempfile.TemporaryDirectory() as root:
    ...     base = make_model_zoo(root, 1, 0, n_layers=2, hidden_size=16, random_state=0).paths[0]
    ...     permuted = permute_mlp(base, f"{root}/permuted", random_state=0)
    ...     print(parameter_cosine_similarity(base, permuted) < 0.9)
    True
    """
    check_number(max_shard_bytes, "max_shard_bytes", 1, integral=True, example="10**9")
    ckpt, arch = open_with_architecture(source)
    replaced = check_dest(dest, ckpt, overwrite)
    width = {}
    for (role, layer, expert), (rows, cols) in part_shapes(arch).items():
        if role in ("gate", "up", "down"):
            width.setdefault((layer, expert), {})[role] = cols if role == "down" else rows
    for (layer, expert), sizes in width.items():
        if "up" not in sizes or "down" not in sizes or len(set(sizes.values())) != 1:
            where = f"layer {layer}" + ("" if expert is None else f", expert {expert}")
            raise ValueError(f"Cannot permute the MLP of {where}: it needs up and down matrices "
                             f"(and gate, if any) of one hidden width, got widths {sizes}.")
    seeds = as_generator(random_state).integers(2**62, size=arch.n_layers)
    perms = {(layer, expert): torch.from_numpy(np.random.default_rng(
        [seeds[layer], 0 if expert is None else expert + 1]).permutation(sizes["up"]))
        for (layer, expert), sizes in width.items()}

    def permute(role, layer, expert, matrix):
        if role in ("gate", "up"):
            return matrix[perms[layer, expert]]
        return matrix[:, perms[layer, expert]] if role == "down" else None

    return rewrite(ckpt, arch, dest, edit=per_part(permute),
                    bias_edit=per_part(permute, roles={"gate", "up"}),
                    replaced=replaced, max_shard_bytes=max_shard_bytes)


def add_noise(source, dest_root, *, gammas=(0.05, 0.3, 1.0), random_state=None,
              overwrite=False, max_shard_bytes=SHARD_BYTES):
    """Write one noisy copy per noise level, all with the same noise (paper Eq. 11).

    Every signature matrix ``W`` becomes ``W + gamma std(W) Z``, ``Z ~ N(0, I)``
    of its shape, ``std`` the population standard deviation of that matrix
    (each role of a fused tensor, each expert of a stack).  ``Z`` is drawn
    per tensor from ``(random_state, tensor name)``, so all ``gammas`` share
    it whatever their order or number (a controlled comparison).

    Parameters
    ----------
    source, overwrite, max_shard_bytes
        See :func:`scale_attention`.
    dest_root : str or path-like
        Each copy is written to ``dest_root / f"gamma={gamma!r}"``.
    gammas : sequence of float, default=(0.05, 0.3, 1.0)
        Noise levels, each >= 0.
    random_state : int, RandomState instance, Generator or None, default=None

    Returns
    -------
    paths : dict of float to pathlib.Path
        Directory of each noise level, in the order of ``gammas``.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> from sklearn_specsig.perturb import add_noise, parameter_cosine_similarity
    >>> with tempfile.TemporaryDirectory() as root:
    ...     base = make_model_zoo(root, 1, 0, n_layers=2, hidden_size=16, random_state=0).paths[0]
    ...     paths = add_noise(base, f"{root}/noisy", gammas=(0.1, 1.0), random_state=0)
    ...     pcs = [parameter_cosine_similarity(base, p) for p in paths.values()]
    ...     print([p.name for p in paths.values()], pcs[0] > 0.99, 0.6 < pcs[1] < 0.8)
    ['gamma=0.1', 'gamma=1.0'] True True
    """
    gammas = (gammas,) if isinstance(gammas, numbers.Real) else tuple(gammas)
    gammas = list(dict.fromkeys(float(check_number(g, "each of gammas", 0)) for g in gammas))
    if not gammas:
        raise ValueError("gammas must hold at least one noise level, e.g. gammas=(0.05, 0.3).")
    check_number(max_shard_bytes, "max_shard_bytes", 1, integral=True, example="10**9")
    ckpt, arch = open_with_architecture(source)
    dests = {g: Path(dest_root) / f"gamma={g!r}" for g in gammas}
    replaced = {g: check_dest(d, ckpt, overwrite) for g, d in dests.items()}
    base = int(as_generator(random_state).integers(2**62))

    for gamma in gammas:
        def noisy(plan, work, gamma=gamma):
            digest = hashlib.blake2b(f"{base}/{plan.name}".encode(), digest_size=8).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
            z = torch.randn(plan.shape, generator=generator, dtype=work.dtype)
            for (_, oriented, index), (_, z_oriented, _) in zip(matrix_slots(plan, work),
                                                                matrix_slots(plan, z)):
                matrix = oriented[index]
                std = matrix.double().std(correction=0).item()
                oriented[index] = matrix + (gamma * std) * z_oriented[index]

        rewrite(ckpt, arch, dests[gamma], edit=noisy, replaced=replaced[gamma],
                 max_shard_bytes=max_shard_bytes)
    return dests


def prune_magnitude(source, dest, *, sparsity, overwrite=False, max_shard_bytes=SHARD_BYTES):
    """Write a copy with the smallest-magnitude entries of each matrix set to zero.

    In every signature matrix (each role of a fused tensor, each expert of a
    stack) the ``round(sparsity * size)`` entries of smallest ``|w|`` are
    zeroed (unstructured magnitude pruning); ties are broken by position.

    Parameters
    ----------
    source, dest, overwrite, max_shard_bytes
        See :func:`scale_attention`.
    sparsity : float
        Fraction of entries to zero, ``0 <= sparsity < 1``.

    Returns
    -------
    dest : pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_specsig.checkpoints import open_checkpoint
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> from sklearn_specsig.perturb import prune_magnitude
    >>> with tempfile.TemporaryDirectory() as root:
    ...     base = make_model_zoo(root, 1, 0, n_layers=2, hidden_size=16, random_state=0).paths[0]
    ...     tensors = dict(open_checkpoint(prune_magnitude(
    ...         base, f"{root}/pruned", sparsity=0.5)).iter_tensors())
    >>> (tensors["model.layers.0.self_attn.q_proj.weight"] == 0).float().mean().item()
    0.5
    """
    sparsity = float(check_number(sparsity, "sparsity", 0, 1, example="0.5"))
    check_number(max_shard_bytes, "max_shard_bytes", 1, integral=True, example="10**9")
    ckpt, arch = open_with_architecture(source)
    replaced = check_dest(dest, ckpt, overwrite)

    def prune(role, layer, expert, matrix):
        k = round(sparsity * matrix.numel())
        if k == 0:
            return None
        flat = matrix.flatten()
        flat[torch.argsort(flat.abs(), stable=True)[:k]] = 0
        return flat.reshape(matrix.shape)

    return rewrite(ckpt, arch, dest, edit=per_part(prune), replaced=replaced,
                    max_shard_bytes=max_shard_bytes)


def drop_layers(source, dest, layers, *, overwrite=False, max_shard_bytes=SHARD_BYTES):
    """Write a copy without some transformer blocks, for depth-alignment tests.

    Every tensor of a dropped block (matrices, norms, biases) is left out and
    the other blocks are renumbered contiguously.  In ``config.json`` (and
    its ``text_config``) the layer count (``num_hidden_layers`` or an alias)
    and ``layer_types`` are updated; other per-layer entries
    (``mlp_only_layers``, ``max_window_layers``, ...) are left as they are.

    Parameters
    ----------
    source, dest, overwrite, max_shard_bytes
        See :func:`scale_attention`.
    layers : int or sequence of int
        Blocks to drop, ``0 <= layer < n_layers`` (negative values count from
        the end); at least one block must remain.

    Returns
    -------
    dest : pathlib.Path

    Examples
    --------
    >>> import json, tempfile
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> from sklearn_specsig.perturb import drop_layers
    >>> with tempfile.TemporaryDirectory() as root:
    ...     base = make_model_zoo(root, 1, 0, n_layers=3, hidden_size=16, random_state=0).paths[0]
    ...     short = drop_layers(base, f"{root}/short", [1])
    ...     print(json.loads((short / "config.json").read_text())["num_hidden_layers"])
    2
    """
    check_number(max_shard_bytes, "max_shard_bytes", 1, integral=True, example="10**9")
    ckpt, arch = open_with_architecture(source)
    n = arch.n_layers
    given = [layers] if isinstance(layers, numbers.Integral) else list(layers)
    for x in given:
        check_number(x, f"each of layers (this model has {n})", -n, n, integral=True,
                      example=f"0 .. {n - 1}")
    dropped = sorted({int(x) % n for x in given})
    if len(dropped) >= n:
        raise ValueError(f"Cannot drop all {n} layers: pass at most {n - 1} layer indices so "
                         "at least one layer is kept.")
    replaced = check_dest(dest, ckpt, overwrite)
    layer_re = re.compile(arch.scheme.layer_pattern)

    def rename(name):
        match = layer_re.match(name)
        if match is None:
            return name
        old = int(match.group("layer"))
        new = old - sum(d < old for d in dropped)
        return None if old in dropped else (
            name[:match.start("layer")] + str(new) + name[match.end("layer"):])

    config = json.loads(json.dumps(ckpt.config, default=str))
    for scope in (config, config.get("text_config")):
        if isinstance(scope, dict):
            for key in CONFIG_ALIASES["num_layers"][0]:
                if isinstance(scope.get(key), int):
                    scope[key] -= len(dropped)
            if isinstance(scope.get("layer_types"), list):
                scope["layer_types"] = [t for i, t in enumerate(scope["layer_types"])
                                        if i not in dropped]
    return rewrite(ckpt, arch, dest, rename=rename, config=config, replaced=replaced,
                    max_shard_bytes=max_shard_bytes)


def parameter_cosine_similarity(a, b):
    """Cosine similarity of two models' flattened signature weights (PCS).

    The paper's data-free baseline: each model's q, k, v, o, gate, up, down
    matrices concatenated in one fixed order, tensor ``n`` of ``a`` against
    tensor ``n`` of ``b`` (identity alignment), compared by cosine.  Tensors
    are streamed one at a time; sums are accumulated in float64.

    Parameters
    ----------
    a, b : str, path-like or Checkpoint
        Checkpoints whose signature tensors have the same names and shapes.

    Returns
    -------
    similarity : float
        In ``[-1, 1]``; exactly 1.0 for identical weights.

    Raises
    ------
    ValueError
        The signature tensors differ in names or shapes, or are all zero.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> from sklearn_specsig.perturb import parameter_cosine_similarity
    >>> with tempfile.TemporaryDirectory() as root:
    ...     zoo = make_model_zoo(root, 1, 1, n_layers=2, hidden_size=16, random_state=0)
    ...     print(parameter_cosine_similarity(zoo.paths[0], zoo.paths[0]),
    ...           0.9 < parameter_cosine_similarity(zoo.paths[0], zoo.paths[1]) < 1)
    1.0 True
    """
    (ckpt_a, arch_a), (ckpt_b, arch_b) = open_with_architecture(a), open_with_architecture(b)
    names_a = [n for n in ckpt_a.tensor_names() if n in arch_a.plans]
    names_b = [n for n in ckpt_b.tensor_names() if n in arch_b.plans]
    shapes_a = {n: arch_a.plans[n].shape for n in names_a}
    shapes_b = {n: arch_b.plans[n].shape for n in names_b}
    if shapes_a != shapes_b:
        differ = sorted(set(shapes_a) ^ set(shapes_b)) or sorted(
            n for n in shapes_a if shapes_a[n] != shapes_b[n])
        raise ValueError(
            f"The two models' signature matrices differ ({len(differ)} names or shapes, e.g. "
            f"{differ[0]!r}: {shapes_a.get(differ[0])} in a, {shapes_b.get(differ[0])} in b); "
            "PCS compares models of one architecture and size.")
    if names_a == names_b:  # same on-disk order: read both in lockstep
        pairs = ((ta, tb) for (_, ta), (_, tb) in zip(ckpt_a.iter_tensors(names_a),
                                                      ckpt_b.iter_tensors(names_b)))
    else:
        pairs = ((ta, next(ckpt_b.iter_tensors([n]))[1]) for n, ta in ckpt_a.iter_tensors(names_a))
    dot = norm_a = norm_b = 0.0
    for ta, tb in pairs:
        x, y = ta.reshape(-1), tb.reshape(-1)
        for start in range(0, x.numel(), PCS_CHUNK):
            xs = x[start:start + PCS_CHUNK].to(torch.float64)
            ys = y[start:start + PCS_CHUNK].to(torch.float64)
            dot += torch.dot(xs, ys).item()
            norm_a += torch.dot(xs, xs).item()
            norm_b += torch.dot(ys, ys).item()
    if norm_a == 0 or norm_b == 0:
        raise ValueError("All signature weights of one model are zero: the cosine is undefined.")
    return float(min(1.0, max(-1.0, dot / math.sqrt(norm_a * norm_b))))
