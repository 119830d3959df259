"""Tests of the perturbation writers and PCS against independent float64 references.

Role matrices are cut out of the raw tensors here by hand (names, fused row
blocks, GPT-2's (in, out) storage), without the library's split plans, and
every invariant is checked on the function the weights compute: attention
bilinear forms per head (biases included), the MLP on random inputs.
"""

import json
import math

import numpy as np
import pytest
import torch
from _checkpoint_factories import write_gguf
from safetensors.torch import save_file

from sklearn_specsig import compute_signature
from sklearn_specsig.checkpoints import open_checkpoint
from sklearn_specsig.datasets import make_model_zoo
from sklearn_specsig.perturb import (
    add_noise,
    drop_layers,
    parameter_cosine_similarity,
    permute_mlp,
    prune_magnitude,
    scale_attention,
)

ARCHS = ("llama", "qwen2", "phi3", "gpt2")
N_LAYERS = 3


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """One base model per architecture, width 16, three layers: arch -> path."""
    bunch = make_model_zoo(tmp_path_factory.mktemp("perturb-zoo"), n_families=len(ARCHS),
                           n_derived=0, n_layers=N_LAYERS, hidden_size=16,
                           architectures=ARCHS, random_state=0)
    return dict(zip(bunch.architectures.tolist(), bunch.paths))


@pytest.fixture(scope="module")
def wide_zoo(tmp_path_factory):
    """llama and phi3 of width 64, so every matrix has >= 2048 entries."""
    bunch = make_model_zoo(tmp_path_factory.mktemp("perturb-wide"), n_families=2,
                           n_derived=0, n_layers=2, hidden_size=64,
                           architectures=("llama", "phi3"), random_state=1)
    return dict(zip(bunch.architectures.tolist(), bunch.paths))


def read(path):
    """(config, {name: tensor}) read back through open_checkpoint."""
    ckpt = open_checkpoint(path)
    return ckpt.config, dict(ckpt.iter_tensors())


def roles(path):
    """{(role, layer): (float64 (out, in) matrix, float64 bias of its rows)} by hand."""
    cfg, t = read(path)
    f = {k: v.to(torch.float64).numpy() for k, v in t.items()}
    out = {}

    def put(role, n, w, b=None):
        out[role, n] = (w, np.zeros(w.shape[0]) if b is None else b)

    if cfg["model_type"] == "gpt2":
        h = cfg["n_embd"]
        for n in range(cfg["n_layer"]):
            p = f"h.{n}."
            qkv, qkv_b = f[p + "attn.c_attn.weight"].T, f[p + "attn.c_attn.bias"]
            for i, role in enumerate("qkv"):
                put(role, n, qkv[i * h:(i + 1) * h], qkv_b[i * h:(i + 1) * h])
            put("o", n, f[p + "attn.c_proj.weight"].T)
            put("up", n, f[p + "mlp.c_fc.weight"].T, f[p + "mlp.c_fc.bias"])
            put("down", n, f[p + "mlp.c_proj.weight"].T)
        return out
    h = cfg["hidden_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        if cfg["model_type"] == "phi3":
            qkv, gate_up = f[p + "self_attn.qkv_proj.weight"], f[p + "mlp.gate_up_proj.weight"]
            put("q", n, qkv[:h])
            put("k", n, qkv[h:h + kv])
            put("v", n, qkv[h + kv:])
            half = gate_up.shape[0] // 2
            put("gate", n, gate_up[:half])
            put("up", n, gate_up[half:])
        else:
            for role in "qkv":
                put(role, n, f[p + f"self_attn.{role}_proj.weight"],
                    f.get(p + f"self_attn.{role}_proj.bias"))
            for role in ("gate", "up"):
                put(role, n, f[p + f"mlp.{role}_proj.weight"])
        put("o", n, f[p + "self_attn.o_proj.weight"])
        put("down", n, f[p + "mlp.down_proj.weight"])
    return out


def heads(path):
    cfg = open_checkpoint(path).config
    n_heads = cfg.get("num_attention_heads", cfg.get("n_head"))
    return n_heads, cfg.get("num_key_value_heads", n_heads)


def attention_forms(path):
    """Per layer: the q.k bilinear form of every head and the summed O V map (biases in)."""
    mats, (n_heads, n_kv) = roles(path), heads(path)
    forms = []
    for n in range(N_LAYERS):
        aug = {r: np.column_stack(mats[r, n]) for r in "qkv"}  # [W | b]: acts on (x, 1)
        d = aug["q"].shape[0] // n_heads
        group = n_heads // n_kv
        rows = [(slice(h * d, (h + 1) * d), slice(h // group * d, (h // group + 1) * d))
                for h in range(n_heads)]
        qk = np.stack([aug["q"][qr].T @ aug["k"][kr] for qr, kr in rows])
        ov = sum(mats["o", n][0][:, qr] @ aug["v"][kr] for qr, kr in rows)
        forms.append((qk, ov))
    return forms


def mlp_outputs(path, x):
    """Per layer: down(tanh(gate x + b) * (up x + b)) (no gate: down(tanh(up x + b)))."""
    mats, out = roles(path), []
    for n in range(N_LAYERS):
        up = mats["up", n][0] @ x + mats["up", n][1][:, None]
        if ("gate", n) in mats:
            hidden = np.tanh(mats["gate", n][0] @ x + mats["gate", n][1][:, None]) * up
        else:
            hidden = np.tanh(up)
        out.append(mats["down", n][0] @ hidden)
    return out


def signature(path):
    return compute_signature(path, cache=None, progress=False).values


def pcs_reference(path_a, path_b):
    """Float64 cosine of all role matrices, concatenated by hand."""
    a, b = roles(path_a), roles(path_b)
    assert a.keys() == b.keys()
    x = np.concatenate([a[key][0].ravel() for key in sorted(a)])
    y = np.concatenate([b[key][0].ravel() for key in sorted(a)])
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


@pytest.mark.parametrize("arch", ARCHS)
def test_scale_attention_preserves_function_and_signature(zoo, arch, tmp_path):
    base = zoo[arch]
    scaled = scale_attention(base, tmp_path / "scaled", gamma=1.0, random_state=0)
    for (qk0, ov0), (qk1, ov1) in zip(attention_forms(base), attention_forms(scaled)):
        np.testing.assert_allclose(qk1, qk0, rtol=1e-5, atol=1e-5 * abs(qk0).max())
        np.testing.assert_allclose(ov1, ov0, rtol=1e-5, atol=1e-5 * abs(ov0).max())
    before, after = roles(base), roles(scaled)
    for n in range(N_LAYERS):
        for role in "qkvo":  # every matrix really moved, by one factor
            ratio = after[role, n][0] / before[role, n][0]
            assert not np.allclose(ratio, 1.0, rtol=1e-3)
            np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
        a = (after["q", n][0] / before["q", n][0]).flat[0]
        assert (after["k", n][0] / before["k", n][0]).flat[0] == pytest.approx(1 / a, rel=1e-5)
        for role in ("gate", "up", "down"):
            if (role, n) in before:
                np.testing.assert_array_equal(after[role, n][0], before[role, n][0])
    np.testing.assert_allclose(signature(scaled), signature(base), rtol=1e-5)
    assert parameter_cosine_similarity(base, scaled) < 0.99


def test_scale_attention_gamma_zero_is_an_exact_copy(zoo, tmp_path):
    copy = scale_attention(zoo["llama"], tmp_path / "copy", gamma=0.0, random_state=0)
    assert parameter_cosine_similarity(zoo["llama"], copy) == 1.0
    (_, t0), (_, t1) = read(zoo["llama"]), read(copy)
    assert t0.keys() == t1.keys() and all(torch.equal(t0[k], t1[k]) for k in t0)


def test_scale_attention_pairs_and_random_state(zoo, tmp_path):
    base = zoo["llama"]
    qk_only = roles(scale_attention(base, tmp_path / "qk", pairs="qk", random_state=3))
    both = roles(scale_attention(base, tmp_path / "both", random_state=np.random.RandomState(3)))
    again = roles(scale_attention(base, tmp_path / "again", random_state=3))
    original = roles(base)
    for n in range(N_LAYERS):
        np.testing.assert_array_equal(qk_only["q", n][0], both["q", n][0])  # same draw
        np.testing.assert_array_equal(qk_only["v", n][0], original["v", n][0])
        np.testing.assert_array_equal(again["o", n][0], both["o", n][0])
    gen = scale_attention(base, tmp_path / "gen", random_state=np.random.default_rng(0))
    assert parameter_cosine_similarity(base, gen) < 0.99


@pytest.mark.parametrize("arch", ARCHS)
def test_permute_mlp_preserves_function_and_signature(zoo, arch, tmp_path):
    base = zoo[arch]
    permuted = permute_mlp(base, tmp_path / "permuted", random_state=0)
    x = np.random.default_rng(0).standard_normal((16, 5))
    for y0, y1 in zip(mlp_outputs(base, x), mlp_outputs(permuted, x)):
        np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-6 * abs(y0).max())
    before, after = roles(base), roles(permuted)
    for n in range(N_LAYERS):
        np.testing.assert_allclose(after["down", n][0] @ after["up", n][0],
                                   before["down", n][0] @ before["up", n][0], atol=1e-6)
        for role in "qkvo":
            np.testing.assert_array_equal(after[role, n][0], before[role, n][0])
        # rows of up really moved, as a permutation of the original rows
        assert not np.array_equal(after["up", n][0], before["up", n][0])
        np.testing.assert_array_equal(np.sort(after["up", n][0], axis=0),
                                      np.sort(before["up", n][0], axis=0))
    np.testing.assert_allclose(signature(permuted), signature(base), rtol=1e-5)
    mlp = [key for key in before if key[0] in ("gate", "up", "down")]
    x0 = np.concatenate([before[k][0].ravel() for k in mlp])
    x1 = np.concatenate([after[k][0].ravel() for k in mlp])
    assert x0 @ x1 / (x0 @ x0) < 0.2  # the MLP weights are unrecognisable
    assert parameter_cosine_similarity(base, permuted) == pytest.approx(
        pcs_reference(base, permuted), rel=1e-9)


def test_add_noise_reuses_one_noise_across_gammas(wide_zoo, tmp_path):
    for arch, base in wide_zoo.items():
        gammas = (0.05, 0.3, 1.0)
        paths = add_noise(base, tmp_path / arch, gammas=gammas, random_state=0)
        assert list(paths) == list(gammas)
        assert [p.name for p in paths.values()] == ["gamma=0.05", "gamma=0.3", "gamma=1.0"]
        original = roles(base)
        scaled_deltas = {g: {k: (m[0] - original[k][0]) / g for k, m in roles(p).items()}
                         for g, p in paths.items()}
        for key, (w, _) in original.items():
            ref = scaled_deltas[1.0][key]
            for g in gammas[:2]:
                np.testing.assert_allclose(scaled_deltas[g][key], ref, rtol=1e-4,
                                           atol=1e-4 * w.std())
            assert w.size >= 1000
            assert ref.std() == pytest.approx(w.std(), rel=0.05)
            assert abs(ref.mean()) < 0.2 * w.std()
        # reversed order, other root: the very same files' tensors
        reverse = add_noise(base, tmp_path / f"{arch}-rev", gammas=gammas[::-1], random_state=0)
        for g in gammas:
            (_, t0), (_, t1) = read(paths[g]), read(reverse[g])
            assert all(torch.equal(t0[k], t1[k]) for k in t0)
    other = add_noise(base, tmp_path / "other", gammas=[0.3], random_state=1)[0.3]
    assert parameter_cosine_similarity(other, paths[0.3]) < 0.99  # another seed, other noise


def test_add_noise_leaves_other_tensors(zoo, tmp_path):
    base = zoo["qwen2"]
    noisy = add_noise(base, tmp_path, gammas=[0.5], random_state=0)[0.5]
    (_, t0), (_, t1) = read(base), read(noisy)
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                 "model.layers.0.self_attn.q_proj.bias", "model.layers.2.input_layernorm.weight"):
        assert torch.equal(t0[name], t1[name])
    assert not torch.equal(t0["model.layers.0.mlp.up_proj.weight"],
                           t1["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.parametrize("arch", ["llama", "phi3", "gpt2"])
def test_prune_magnitude_zeroes_the_smallest_entries(zoo, arch, tmp_path):
    base, sparsity = zoo[arch], 0.3
    pruned = prune_magnitude(base, tmp_path / "pruned", sparsity=sparsity)
    before, after = roles(base), roles(pruned)
    for key, (w, _) in before.items():
        p = after[key][0]
        zeroed = p == 0
        assert abs(zeroed.sum() - sparsity * w.size) <= 1, key
        assert np.abs(w[zeroed]).max() <= np.abs(w[~zeroed]).min()
        np.testing.assert_array_equal(p[~zeroed], w[~zeroed])
    (_, t0), (_, t1) = read(base), read(pruned)
    role_names = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                  "qkv_proj", "gate_up_proj", "c_attn", "c_proj", "c_fc"}
    others = [k for k in t0 if not (k.endswith(".weight") and k.split(".")[-2] in role_names)]
    assert len(others) >= 2 * N_LAYERS
    for name in others:
        assert t0[name].dtype == t1[name].dtype
        assert t0[name].view(torch.uint8).numpy().tobytes() == \
            t1[name].view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("arch, key", [("llama", "num_hidden_layers"), ("gpt2", "n_layer")])
def test_drop_layers_renumbers(zoo, arch, key, tmp_path):
    base = zoo[arch]
    short = drop_layers(base, tmp_path / "short", [1])
    cfg0, t0 = read(base)
    cfg1, t1 = read(short)
    assert (cfg0[key], cfg1[key]) == (N_LAYERS, N_LAYERS - 1)
    assert {k: v for k, v in cfg1.items() if k != key} == {
        k: v for k, v in cfg0.items() if k != key}
    prefix = "model.layers." if arch == "llama" else "h."
    expected = {}
    for name, tensor in t0.items():
        if name.startswith(prefix):
            layer, rest = name[len(prefix):].split(".", 1)
            if int(layer) == 1:
                continue
            name = f"{prefix}{int(layer) - (int(layer) > 1)}.{rest}"
        expected[name] = tensor
    assert t1.keys() == expected.keys()
    assert all(torch.equal(t1[k], expected[k]) for k in expected)
    np.testing.assert_allclose(signature(short), signature(base)[:, [0, 2]], rtol=1e-6)
    last = drop_layers(base, tmp_path / "last", (-1, 0))
    assert open_checkpoint(last).config[key] == 1
    np.testing.assert_allclose(signature(last), signature(base)[:, [1]], rtol=1e-6)


def test_pcs_matches_float64_reference(zoo, tmp_path):
    base = zoo["llama"]
    noisy = add_noise(base, tmp_path / "noisy", gammas=[0.5], random_state=0)[0.5]
    pruned = prune_magnitude(base, tmp_path / "pruned", sparsity=0.6)
    for other in (noisy, pruned):
        value = parameter_cosine_similarity(base, other)
        assert value == pytest.approx(pcs_reference(base, other), rel=1e-12, abs=1e-12)
        assert -1 <= value < 1
    assert parameter_cosine_similarity(base, base) == 1.0
    assert parameter_cosine_similarity(noisy, noisy) == 1.0
    # negated weights: exactly -1
    ckpt = open_checkpoint(base)
    flipped = {n: (-t if n.endswith("_proj.weight") and n.startswith("model.layers.") else t)
               for n, t in ckpt.iter_tensors()}
    (tmp_path / "neg").mkdir()
    # a .bin file with another tensor order exercises the non-lockstep path
    torch.save(dict(reversed(list(flipped.items()))), tmp_path / "neg" / "pytorch_model.bin")
    (tmp_path / "neg" / "config.json").write_text(json.dumps(ckpt.config))
    assert parameter_cosine_similarity(base, tmp_path / "neg") == -1.0


def test_pcs_rejects_different_models(zoo, tmp_path):
    with pytest.raises(ValueError, match="signature matrices differ"):
        parameter_cosine_similarity(zoo["llama"], zoo["gpt2"])
    short = drop_layers(zoo["llama"], tmp_path / "short", [0])
    with pytest.raises(ValueError, match="signature matrices differ"):
        parameter_cosine_similarity(zoo["llama"], short)
    zero = prune_magnitude(zoo["llama"], tmp_path / "zero", sparsity=0.0)
    assert parameter_cosine_similarity(zoo["llama"], zero) == 1.0


def write_model(path, tensors, **config):
    path.mkdir()
    save_file(tensors, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_interleaved_heads_and_expert_stacks(tmp_path):
    """GPT-NeoX's per-head interleaved [q; k; v] (with bias), and 3-D expert stacks."""
    g = torch.Generator().manual_seed(0)
    h, n_heads, inter, n_exp = 16, 4, 24, 3
    neox = {}
    for i in range(2):
        p = f"gpt_neox.layers.{i}."
        neox.update({p + "attention.query_key_value.weight": torch.randn(3 * h, h, generator=g),
                     p + "attention.query_key_value.bias": torch.randn(3 * h, generator=g),
                     p + "attention.dense.weight": torch.randn(h, h, generator=g),
                     p + "mlp.dense_h_to_4h.weight": torch.randn(4 * h, h, generator=g),
                     p + "mlp.dense_4h_to_h.weight": torch.randn(h, 4 * h, generator=g)})
    base = write_model(tmp_path / "neox", neox, model_type="gpt_neox", hidden_size=h,
                       num_attention_heads=n_heads, num_hidden_layers=2)
    _, scaled = read(scale_attention(base, tmp_path / "neox-scaled", random_state=0))

    def qk_forms(t, i):  # rows are (head, [q, k, v], head_dim): cut by hand
        p = f"gpt_neox.layers.{i}.attention.query_key_value."
        w = torch.cat([t[p + "weight"], t[p + "bias"][:, None]], 1).double()
        w = w.reshape(n_heads, 3, h // n_heads, h + 1)
        return torch.stack([w[j, 0].T @ w[j, 1] for j in range(n_heads)])

    for i in range(2):
        torch.testing.assert_close(qk_forms(scaled, i), qk_forms(neox, i), rtol=1e-5, atol=1e-4)
        assert not torch.equal(qk_forms(scaled, i), qk_forms(neox, i))

    moe = {"model.layers.0.self_attn.q_proj.weight": torch.randn(h, h, generator=g),
           "model.layers.0.mlp.experts.gate_up_proj": torch.randn(n_exp, 2 * inter, h, generator=g),
           "model.layers.0.mlp.experts.down_proj": torch.randn(n_exp, h, inter, generator=g)}
    base = write_model(tmp_path / "moe", moe, model_type="qwen2_moe", hidden_size=h,
                       num_attention_heads=n_heads, num_hidden_layers=1)
    x = torch.randn(h, 5, generator=g, dtype=torch.float64)

    def experts(t):  # down_e (tanh(gate_e x) * up_e x), per expert
        gu = t["model.layers.0.mlp.experts.gate_up_proj"].double()
        down = t["model.layers.0.mlp.experts.down_proj"].double()
        return torch.stack([down[e] @ (torch.tanh(gu[e, :inter] @ x) * (gu[e, inter:] @ x))
                            for e in range(n_exp)])

    _, permuted = read(permute_mlp(base, tmp_path / "moe-permuted", random_state=0))
    torch.testing.assert_close(experts(permuted), experts(moe), rtol=1e-5, atol=1e-5)
    assert parameter_cosine_similarity(base, tmp_path / "moe-permuted") < 0.6
    _, pruned = read(prune_magnitude(base, tmp_path / "moe-pruned", sparsity=0.25))
    gate_up = pruned["model.layers.0.mlp.experts.gate_up_proj"]
    for e in range(n_exp):  # each expert's gate and up pruned on its own
        for block in (gate_up[e, :inter], gate_up[e, inter:]):
            assert (block == 0).sum().item() == round(0.25 * block.numel())


def test_gguf_source_becomes_a_safetensors_directory(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"token_embd.weight": (rng.standard_normal((10, 16)).astype(np.float32), None)}
    for i in range(3):
        for role, shape in (("attn_q", (16, 16)), ("attn_k", (16, 16)), ("attn_v", (16, 16)),
                            ("attn_output", (16, 16)), ("ffn_gate", (24, 16)),
                            ("ffn_up", (24, 16)), ("ffn_down", (16, 24))):
            arrays[f"blk.{i}.{role}.weight"] = (rng.standard_normal(shape).astype(np.float32),
                                                None)
    source = write_gguf(tmp_path / "m.gguf", arrays, metadata={
        "block_count": 3, "attention.head_count": 4, "embedding_length": 16})
    short = drop_layers(source, tmp_path / "short", [1])
    ckpt = open_checkpoint(short)
    assert ckpt.format == "safetensors" and ckpt.config["num_hidden_layers"] == 2
    np.testing.assert_array_equal(dict(ckpt.iter_tensors())["blk.1.ffn_down.weight"].numpy(),
                                  arrays["blk.2.ffn_down.weight"][0])
    np.testing.assert_allclose(signature(short), signature(source)[:, [0, 2]], rtol=1e-6)


def test_pytorch_source_with_tied_and_view_tensors(zoo, tmp_path):
    """A .bin whose lm_head is the embedding (one storage) and a tensor that is a view."""
    _, tensors = read(zoo["llama"])
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    wide = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    tensors["model.norm.weight"] = wide[3]
    (tmp_path / "src").mkdir()
    torch.save(tensors, tmp_path / "src" / "pytorch_model.bin")
    (tmp_path / "src" / "config.json").write_text(json.dumps(open_checkpoint(zoo["llama"]).config))
    _, out = read(prune_magnitude(tmp_path / "src", tmp_path / "out", sparsity=0.0))
    assert out.keys() == tensors.keys() and all(torch.equal(out[k], tensors[k]) for k in out)


def test_bfloat16_dtype_is_preserved(tmp_path):
    base = make_model_zoo(tmp_path / "zoo", n_families=1, n_derived=0, n_layers=2,
                          hidden_size=16, dtype="bfloat16", random_state=0).paths[0]
    outputs = [scale_attention(base, tmp_path / "scaled", random_state=0),
               permute_mlp(base, tmp_path / "permuted", random_state=0),
               prune_magnitude(base, tmp_path / "pruned", sparsity=0.5),
               drop_layers(base, tmp_path / "short", [0]),
               *add_noise(base, tmp_path / "noisy", gammas=[0.1], random_state=0).values()]
    _, t0 = read(base)
    assert {t.dtype for t in t0.values()} == {torch.bfloat16}
    for path in outputs:
        _, t1 = read(path)
        assert {t.dtype for t in t1.values()} == {torch.bfloat16}
    _, t1 = read(outputs[0])  # bf16 in, bf16 out: q rescaled by one factor, in float32
    q0 = t0["model.layers.0.self_attn.q_proj.weight"].float()
    q1 = t1["model.layers.0.self_attn.q_proj.weight"].float()
    ratio = q1 / q0
    assert not torch.allclose(ratio, torch.ones(()), rtol=1e-2)
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio.median().item()),
                               rtol=2 ** -7, atol=0)


def test_sharded_output_reads_back(zoo, tmp_path):
    base = zoo["llama"]
    dest = scale_attention(base, tmp_path / "sharded", gamma=0.0, max_shard_bytes=4096)
    index = json.loads((dest / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (dest / "model.safetensors").exists()
    assert sorted(p.name for p in dest.glob("*.safetensors")) == shards
    assert not list(dest.glob(".*tmp"))
    _, t0 = read(base)
    _, t1 = read(dest)
    assert t1.keys() == t0.keys() and all(torch.equal(t0[k], t1[k]) for k in t0)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size()
                                                  for t in t0.values())
    for shard in shards:
        names = [k for k, v in index["weight_map"].items() if v == shard]
        size = sum(t0[k].numel() * t0[k].element_size() for k in names)
        assert size <= 4096 or len(names) == 1
    # overwrite the sharded copy with a single file: no stale shard is left
    scale_attention(base, dest, gamma=1.0, random_state=0, overwrite=True)
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]
    assert parameter_cosine_similarity(base, dest) < 0.99


def test_bad_inputs(zoo, tmp_path):
    base = zoo["llama"]
    dest = prune_magnitude(base, tmp_path / "out", sparsity=0.1)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        prune_magnitude(base, dest, sparsity=0.2)
    add_noise(base, tmp_path / "noisy", gammas=[0.1, 0.2], random_state=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        add_noise(base, tmp_path / "noisy", gammas=[0.3, 0.2], random_state=0)
    assert not (tmp_path / "noisy" / "gamma=0.3").exists()  # refused before writing any
    with pytest.raises(ValueError, match="source checkpoint's directory"):
        permute_mlp(base, base, overwrite=True)
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        scale_attention(base, tmp_path / "a", gamma=-1.0)
    with pytest.raises(ValueError, match="each of gammas must be"):
        add_noise(base, tmp_path / "b", gammas=[0.1, math.nan])
    with pytest.raises(ValueError, match="sparsity must be a finite number >= 0 and < 1"):
        prune_magnitude(base, tmp_path / "c", sparsity=1.5)
    with pytest.raises(ValueError, match="Cannot drop all 3 layers"):
        drop_layers(base, tmp_path / "d", [0, 1, 2])
    with pytest.raises(ValueError, match="each of layers"):
        drop_layers(base, tmp_path / "e", [3])
    with pytest.raises(ValueError, match="pairs must be"):
        scale_attention(base, tmp_path / "f", pairs=("qv",))
    with pytest.raises(ValueError, match="max_shard_bytes"):
        permute_mlp(base, tmp_path / "g", max_shard_bytes=0)
    with pytest.raises(ValueError, match="gamma must be a finite number"):
        scale_attention(base, tmp_path / "h", gamma=10**400)  # overflows math.isfinite
    # nothing was written by the refused calls
    assert not any((tmp_path / d).exists() for d in "abcdefgh")


def test_a_failure_midway_leaves_no_temporary_shards(zoo, tmp_path, monkeypatch):
    from sklearn_specsig.checkpoints import open_checkpoint

    ckpt = open_checkpoint(zoo["llama"])
    real = ckpt.iter_tensors

    def failing(names=None):  # the disk goes away after 5 tensors
        for i, item in enumerate(real(names)):
            if i == 5:
                raise OSError("disk went away")
            yield item

    monkeypatch.setattr(ckpt, "iter_tensors", failing)
    dest = tmp_path / "out"
    with pytest.raises(OSError, match="disk went away"):
        prune_magnitude(ckpt, dest, sparsity=0.5, max_shard_bytes=100)
    assert dest.is_dir() and list(dest.iterdir()) == []
