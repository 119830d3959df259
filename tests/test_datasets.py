"""Tests of make_model_zoo against an independent float64 reference.

The reference (name -> role mapping, Gram eigenvalues, Hill formula) is
written out here on purpose, without importing the library's readers or
metrics, so that the zoo can later serve as ground truth for them.
"""

import hashlib
import json
import os
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from sklearn_specsig.datasets import make_model_zoo

ROLES = ("q", "k", "v", "o", "gate", "up", "down")
ALL_ARCHS = ("llama", "qwen2", "mistral", "gpt2", "phi3")
N_LAYERS = 6


def hill_alpha_ref(w):
    """PL_Alpha_Hill of a matrix in float64: x_min = median eigenvalue, included."""
    w = np.asarray(w, dtype=np.float64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    lam = np.sort(np.linalg.eigvalsh(gram))
    i = lam.size // 2
    return 1.0 + (lam.size - i) / np.sum(np.log(lam[i:] / lam[i]))


def role_matrices(path):
    """{(role, layer): float64 (out, in) matrix} read straight from the files."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    tensors = {k: v.to(torch.float64).numpy() for k, v in
               load_file(os.path.join(path, "model.safetensors")).items()}
    out = {}
    if cfg["model_type"] == "gpt2":
        h = cfg["n_embd"]
        for n in range(cfg["n_layer"]):
            qkv = tensors[f"h.{n}.attn.c_attn.weight"].T  # Conv1D stores (in, out)
            out.update({("q", n): qkv[:h], ("k", n): qkv[h:2 * h], ("v", n): qkv[2 * h:],
                        ("o", n): tensors[f"h.{n}.attn.c_proj.weight"].T,
                        ("up", n): tensors[f"h.{n}.mlp.c_fc.weight"].T,
                        ("down", n): tensors[f"h.{n}.mlp.c_proj.weight"].T})
        return out
    pattern = re.compile(r"model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)_proj\.weight")
    h, kv = cfg["hidden_size"], cfg["num_key_value_heads"] * cfg["hidden_size"] // cfg[
        "num_attention_heads"]
    for name, w in tensors.items():
        m = pattern.fullmatch(name)
        if not m:
            continue
        n, role = int(m.group(1)), m.group(2)
        if role == "qkv":
            out.update({("q", n): w[:h], ("k", n): w[h:h + kv], ("v", n): w[h + kv:]})
        elif role == "gate_up":
            half = w.shape[0] // 2
            out.update({("gate", n): w[:half], ("up", n): w[half:]})
        else:
            out[(role, n)] = w
    return out


def signature_ref(path, n_layers):
    sig = np.full((len(ROLES), n_layers), np.nan)
    for (role, n), w in role_matrices(path).items():
        sig[ROLES.index(role), n] = hill_alpha_ref(w)
    return sig


def mean_spearman(a, b):
    rows = [r for r in range(len(ROLES)) if np.all(np.isfinite(a[r])) and np.all(np.isfinite(b[r]))]
    return float(np.mean([spearmanr(a[r], b[r])[0] for r in rows]))


def file_digest(path):
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(os.path.join(path, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    # The reference decomposes 64-wide matrices: threaded BLAS only spins,
    # which made this module several times slower on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return make_model_zoo(tmp_path_factory.mktemp("zoo"), n_families=5, n_derived=2,
                          n_layers=N_LAYERS, architectures=ALL_ARCHS, random_state=0)


@pytest.fixture(scope="module")
def signatures(zoo):
    return {p: signature_ref(p, N_LAYERS) for p in zoo.paths}


def test_files_exist_and_load(zoo):
    assert len(zoo.paths) == 5 * 3
    for path in zoo.paths:
        assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
        tensors = load_file(os.path.join(path, "model.safetensors"))
        assert len(tensors) >= 4 * N_LAYERS + 3  # role matrices plus skipped extras
        assert all(t.dtype == torch.float32 for t in tensors.values())
        assert all(torch.isfinite(t).all() for t in tensors.values())
        n_roles = 6 if "gpt2" in path else 7
        assert len(role_matrices(path)) == n_roles * N_LAYERS


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_shapes_match_config(zoo, arch):
    path = zoo.base_paths[ALL_ARCHS.index(arch)]
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    t = {k: tuple(v.shape) for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
    assert cfg["model_type"] == arch and cfg["torch_dtype"] == "float32"
    if arch == "gpt2":
        h, n_layers, v = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]
        assert n_layers == N_LAYERS and t["wte.weight"] == (v, h)
        assert t[f"h.{n_layers - 1}.attn.c_attn.weight"] == (h, 3 * h)
        assert t["h.0.attn.c_proj.weight"] == (h, h)
        assert t["h.0.mlp.c_fc.weight"] == (h, 4 * h) and t["h.0.mlp.c_proj.weight"] == (4 * h, h)
        assert t["wpe.weight"] == (cfg["n_positions"], h) and "h.0.ln_1.bias" in t
        assert not any("gate" in k for k in t)
        return
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    assert cfg["num_hidden_layers"] == N_LAYERS
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    assert kv < h  # GQA: fewer key/value heads than query heads
    p = f"model.layers.{N_LAYERS - 1}."
    assert t["model.embed_tokens.weight"] == (v, h) and t["lm_head.weight"] == (v, h)
    assert t["model.norm.weight"] == (h,) and t[p + "input_layernorm.weight"] == (h,)
    if arch == "phi3":
        assert t[p + "self_attn.qkv_proj.weight"] == (h + 2 * kv, h)
        assert t[p + "mlp.gate_up_proj.weight"] == (2 * i, h)
    else:
        assert t[p + "self_attn.q_proj.weight"] == (h, h)
        assert t[p + "self_attn.k_proj.weight"] == t[p + "self_attn.v_proj.weight"] == (kv, h)
        assert t[p + "mlp.gate_proj.weight"] == t[p + "mlp.up_proj.weight"] == (i, h)
    assert t[p + "self_attn.o_proj.weight"] == (h, h) and t[p + "mlp.down_proj.weight"] == (h, i)
    assert (p + "self_attn.q_proj.bias" in t) == (arch == "qwen2")


def test_labels_and_bookkeeping(zoo):
    assert zoo.families == ["fam00-llama", "fam01-qwen2", "fam02-mistral", "fam03-gpt2",
                            "fam04-phi3"]
    assert zoo.labels.tolist() == [f for f in zoo.families for _ in range(3)]
    assert zoo.is_base.tolist() == [True, False, False] * 5
    assert zoo.base_paths == [p for p, b in zip(zoo.paths, zoo.is_base) if b]
    assert zoo.derived_paths == [p for p, b in zip(zoo.paths, zoo.is_base) if not b]
    assert [os.path.basename(p) for p in zoo.base_paths] == [f + "-base" for f in zoo.families]
    assert zoo.architectures.tolist() == [a for a in ALL_ARCHS for _ in range(3)]
    assert [e is None for e in zoo.edits] == zoo.is_base.tolist()
    for edit in zoo.edits[1::3] + zoo.edits[2::3]:
        assert edit["lora_rank"] in (0, 2, 3, 4) and 0 <= edit["prune_fraction"] <= 0.1
        assert edit["lora_rank"] or edit["noise_gamma"] or edit["prune_fraction"]
    for path, arch in zip(zoo.paths, zoo.architectures):
        target = zoo.alpha_targets[path]
        assert target.shape == (7, N_LAYERS)
        assert np.isnan(target[ROLES.index("gate")]).all() == (arch == "gpt2")
        finite = target[np.isfinite(target)]
        assert finite.size == (6 if arch == "gpt2" else 7) * N_LAYERS
        assert finite.min() >= 2.0 and finite.max() <= 6.0
        base = zoo.base_paths[zoo.families.index(zoo.labels[zoo.paths.index(path)])]
        np.testing.assert_array_equal(target, zoo.alpha_targets[base])


def test_random_state_reproducible(tmp_path):
    kwargs = {"n_families": 2, "n_derived": 1, "n_layers": 3, "architectures": ("llama", "gpt2")}
    a = make_model_zoo(tmp_path / "a", random_state=7, **kwargs)
    b = make_model_zoo(tmp_path / "b", random_state=7, **kwargs)
    c = make_model_zoo(tmp_path / "c", random_state=8, **kwargs)
    digests = [[file_digest(p) for p in z.paths] for z in (a, b, c)]
    assert digests[0] == digests[1]
    assert all(x != y for x, y in zip(digests[0], digests[2]))
    np.testing.assert_array_equal(a.alpha_targets[a.paths[0]], b.alpha_targets[b.paths[0]])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype(tmp_path, dtype):
    zoo = make_model_zoo(tmp_path, n_families=1, n_derived=0, n_layers=2, dtype=dtype,
                         random_state=0)
    tensors = load_file(os.path.join(zoo.paths[0], "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {getattr(torch, dtype)}
    with open(os.path.join(zoo.paths[0], "config.json")) as f:
        assert json.load(f)["torch_dtype"] == dtype
    # Half precision rounding barely moves alpha.
    err = np.abs(signature_ref(zoo.paths[0], 2) - zoo.alpha_targets[zoo.paths[0]])
    assert np.nanmax(err) < 0.05


def test_base_alpha_matches_target(zoo, signatures):
    for path in zoo.base_paths:
        err = np.abs(signatures[path] - zoo.alpha_targets[path])
        assert np.array_equal(np.isnan(err), np.isnan(zoo.alpha_targets[path]))
        assert np.nanmax(err) < 0.15
        assert np.nanmax(err) < 1e-3  # what the closed-form calibration actually gives


def test_derived_differ_but_alpha_stays_close(zoo, signatures):
    for path, label in zip(zoo.derived_paths, zoo.labels[~zoo.is_base]):
        base = zoo.base_paths[zoo.families.index(label)]
        wb, wd = role_matrices(base), role_matrices(path)
        assert wb.keys() == wd.keys()
        rel = [np.linalg.norm(wd[k] - wb[k]) / np.linalg.norm(wb[k]) for k in wb]
        assert min(rel) > 1e-3 and max(rel) < 0.2
        diff = np.abs(signatures[path] - signatures[base])
        assert np.nanmedian(diff) < 0.15
        assert np.nanmax(diff) < 1.0


def test_spearman_separates_families(zoo, signatures):
    within, between = [], []
    for i, p in enumerate(zoo.paths):
        for j in range(i + 1, len(zoo.paths)):
            same = zoo.labels[i] == zoo.labels[j]
            (within if same else between).append(mean_spearman(signatures[p],
                                                                signatures[zoo.paths[j]]))
    assert np.mean(within) > 0.85
    assert np.abs(np.mean(between)) < 0.3
    assert np.mean(within) - np.mean(between) > 0.6
    assert min(within) > max(between)  # nearest-base classification is perfect


@pytest.mark.parametrize("kwargs, match", [
    ({"n_families": 0}, "n_families"),
    ({"n_derived": -1}, "n_derived"),
    ({"n_layers": 1}, "n_layers"),
    ({"hidden_size": 60}, "hidden_size"),
    ({"hidden_size": True}, "hidden_size"),
    ({"architectures": ("llama", "bert")}, "bert"),
    ({"architectures": ()}, "architectures"),
    ({"dtype": "float64"}, "dtype"),
])
def test_invalid_parameters(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_model_zoo(tmp_path, **kwargs)
    assert os.listdir(tmp_path) == []
