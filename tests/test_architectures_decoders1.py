"""Decoders of issue 13, list 1: the variants the table test cannot hold.

``test_architectures_transformers.py`` has one row per ``model_type``; this
module checks the other configurations of those architectures (GPT-BigCode
without multi-query, GraniteMoeShared, MPT's grouped and multi-query
attention), the names that older or other writers use (OPT without the
``model.`` prefix, GPT-J's saved causal mask, GraniteMoE under transformers
5's in-memory names) and the published sizes (StarCoder's 48 heads with one
key-value head), against layouts read from the modelling code.
"""

import numpy as np
import pytest
import torch
from _transformers_factories import assert_column, state_dict64, write_tiny_checkpoint

from sklearn_specsig import ROLES, compute_signature
from sklearn_specsig.architectures import resolve_architecture
from sklearn_specsig.errors import ConfigError


def _assert_signature_matches(model_type, folder, expected, **overrides):
    """The table test's check, for a configuration of one's own."""
    model = write_tiny_checkpoint(model_type, folder, **overrides)
    sig = compute_signature(folder, cache=None, progress=False)
    n_layers = model.config.num_hidden_layers
    assert sig.n_layers == n_layers
    assert sig.missing_layers() == {} and sig.undefined_matrices() == {}
    sd = state_dict64(model)
    max_err = 0.0
    for layer in range(n_layers):
        cells = expected(sd, layer)
        max_err = max(max_err, assert_column(sig, layer, cells, model_type))
    print(f"{model_type} {overrides}: roles {sorted(cells)} layers {n_layers} "
          f"max rel err {max_err:.1e}")
    return sig


def _bigcode_multi_head(sd, layer):
    p = f"transformer.h.{layer}."
    # GPTBigCodeAttention without multi_query: c_attn(x).view(..., heads,
    # 3 * head_dim).split(head_dim): each head's q, k, v rows together.
    qkv = sd[p + "attn.c_attn.weight"].reshape(4, 3, 16, 64)
    q, k, v = (qkv[:, i].reshape(64, 64) for i in range(3))
    return {"q": [q], "k": [k], "v": [v], "o": [sd[p + "attn.c_proj.weight"]],
            "up": [sd[p + "mlp.c_fc.weight"]], "down": [sd[p + "mlp.c_proj.weight"]]}


def _granitemoe_shared(sd, layer):
    # GraniteMoeSharedMLP: act(chunk 0) * chunk 1 of input_linear, numbered
    # after the routed experts (GraniteMoeExperts: gate_up_proj.chunk(2)).
    p = f"model.layers.{layer}."
    cells = {r: [sd[p + f"self_attn.{r}_proj.weight"]] for r in "qkvo"}
    stack, down = (sd[p + f"block_sparse_moe.experts.{n}"] for n in ("gate_up_proj", "down_proj"))
    half = stack.shape[1] // 2
    cells["gate"] = [stack[e, :half] for e in range(len(stack))]
    cells["up"] = [stack[e, half:] for e in range(len(stack))]
    cells["down"] = list(down)
    shared = sd[p + "shared_mlp.input_linear.weight"]
    cells["gate"].append(shared[:shared.shape[0] // 2])
    cells["up"].append(shared[shared.shape[0] // 2:])
    cells["down"].append(sd[p + "shared_mlp.output_linear.weight"])
    return cells


@pytest.mark.parametrize("model_type, overrides, expected", [
    ("gpt_bigcode", {"multi_query": False}, _bigcode_multi_head),
    ("granitemoeshared", {"shared_intermediate_size": 48}, _granitemoe_shared),
])
def test_variant_signature_equal_to_a_float64_reference(model_type, overrides, expected,
                                                        tmp_path):
    pytest.importorskip("transformers")
    _assert_signature_matches(model_type, tmp_path, expected, **overrides)


def test_granitemoe_under_in_memory_names_signs_the_same(tmp_path):
    """Files written from a transformers 5 state dict keep the new names."""
    pytest.importorskip("transformers")
    from safetensors.torch import load_file, save_file

    write_tiny_checkpoint("granitemoe", tmp_path / "saved")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "config.json").write_bytes((tmp_path / "saved" / "config.json").read_bytes())
    tensors = load_file(tmp_path / "saved" / "model.safetensors")
    names = {"input_linear.weight": "experts.gate_up_proj",
             "output_linear.weight": "experts.down_proj", "router.layer.weight": "router.weight"}
    out = {}
    for name, tensor in tensors.items():
        for old, new in names.items():
            name = name.replace(f"block_sparse_moe.{old}", f"block_sparse_moe.{new}")
        out[name] = tensor
    assert any("experts.gate_up_proj" in name for name in out)
    save_file(out, renamed / "model.safetensors", metadata={"format": "pt"})
    a, b = (compute_signature(d, cache=None, progress=False)
            for d in (tmp_path / "saved", renamed))
    np.testing.assert_array_equal(a.values, b.values)


def _bigcode_shapes(hidden, kv_dim, layers=2):
    shapes = {"transformer.wte.weight": (49152, hidden), "transformer.wpe.weight": (8192, hidden)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        shapes.update({p + "attn.c_attn.weight": (hidden + 2 * kv_dim, hidden),
                       p + "attn.c_proj.weight": (hidden, hidden),
                       p + "mlp.c_fc.weight": (4 * hidden, hidden),
                       p + "mlp.c_proj.weight": (hidden, 4 * hidden)})
    return shapes


def test_starcoder_is_multi_query_with_48_heads_whatever_num_key_value_heads_says():
    # bigcode/starcoder's config.json: no num_key_value_heads; one saved by
    # transformers 5 may carry any value, which GPTBigCodeAttention ignores.
    for extra in ({}, {"num_key_value_heads": 48}):
        config = {"model_type": "gpt_bigcode", "n_embd": 6144, "n_head": 48, "n_layer": 40,
                  "multi_query": True, **extra}
        arch = resolve_architecture(list(_bigcode_shapes(6144, 128)), config,
                                    _bigcode_shapes(6144, 128))
        assert arch.name == "gpt_bigcode"
        plan = arch.plans["transformer.h.1.attn.c_attn.weight"]
        assert plan.descriptor == "qkv:q=6144,k=128,v=128"
        assert not plan.transpose
        assert not arch.plans["transformer.h.1.attn.c_proj.weight"].transpose


def test_gpt_bigcode_splits_are_bit_exact():
    hidden, heads, dim = 32, 4, 8
    q, k, v = torch.randn(hidden, hidden), torch.randn(dim, hidden), torch.randn(dim, hidden)
    shapes = _bigcode_shapes(hidden, dim, layers=1)
    config = {"model_type": "gpt_bigcode", "n_embd": hidden, "n_head": heads}
    plan = resolve_architecture(list(shapes), {**config, "multi_query": True}, shapes).plans[
        "transformer.h.0.attn.c_attn.weight"]
    parts = plan.split(torch.cat([q, k, v]))
    assert [p[0] for p in parts] == ["q", "k", "v"]
    for (_, _, _, got), want in zip(parts, (q, k, v)):
        assert torch.equal(got, want)
    # Without multi_query: (heads, 3, head_dim) rows.
    full = [torch.randn(hidden, hidden) for _ in range(3)]
    fused = torch.stack([m.reshape(heads, dim, hidden) for m in full], 1).reshape(-1, hidden)
    shapes = _bigcode_shapes(hidden, hidden, layers=1)
    plan = resolve_architecture(list(shapes), {**config, "multi_query": False}, shapes).plans[
        "transformer.h.0.attn.c_attn.weight"]
    assert plan.descriptor == "qkv_interleaved:heads=4,head_dim=8"
    for (_, _, _, got), want in zip(plan.split(fused), full):
        assert torch.equal(got, want)


def test_gpt_bigcode_config_that_contradicts_the_shape_is_an_error():
    shapes = _bigcode_shapes(64, 64, layers=1)  # a multi-head c_attn
    with pytest.raises(ConfigError, match="c_attn"):
        resolve_architecture(list(shapes), {"model_type": "gpt_bigcode", "n_embd": 64,
                                            "n_head": 4, "multi_query": True}, shapes)


def _mpt_shapes(d_model, kv_dim, glu=False):
    p = "transformer.blocks.0."
    shapes = {"transformer.wte.weight": (50432, d_model),
              p + "attn.Wqkv.weight": (d_model + 2 * kv_dim, d_model),
              p + "attn.out_proj.weight": (d_model, d_model),
              p + "ffn.up_proj.weight": (4 * d_model, d_model),
              p + "ffn.down_proj.weight": (d_model, 4 * d_model),
              p + "norm_1.weight": (d_model,)}
    if glu:
        shapes[p + "ffn.gate_proj.weight"] = (4 * d_model, d_model)
    return shapes


@pytest.mark.parametrize("attn_config, kv_dim", [
    ({}, 4096),  # mosaicml/mpt-7b names no attn_type: multi-head
    ({"attn_type": "multihead_attention", "kv_n_heads": 1}, 4096),  # stray kv_n_heads
    ({"attn_type": "multiquery_attention"}, 128),
    ({"attn_type": "grouped_query_attention", "kv_n_heads": 8}, 1024),
])
def test_mpt_key_value_heads_follow_attn_type(attn_config, kv_dim):
    config = {"model_type": "mpt", "d_model": 4096, "n_heads": 32, "n_layers": 32,
              "attn_config": attn_config}
    arch = resolve_architecture(list(_mpt_shapes(4096, kv_dim)), config, _mpt_shapes(4096, kv_dim))
    assert arch.name == "mpt"
    assert arch.plans["transformer.blocks.0.attn.Wqkv.weight"].descriptor == (
        f"qkv:q=4096,k={kv_dim},v={kv_dim}")


def test_mpt_glu_gate_and_unknown_attn_type():
    config = {"model_type": "mpt", "d_model": 64, "n_heads": 4, "n_layers": 1}
    arch = resolve_architecture(list(_mpt_shapes(64, 64, glu=True)), config,
                                _mpt_shapes(64, 64, glu=True))
    assert {role for role, _, _ in arch.parts} == set(ROLES)
    with pytest.raises(ConfigError, match="attn_type"):
        resolve_architecture(list(_mpt_shapes(64, 64)),
                             {**config, "attn_config": {"attn_type": "flash_attention"}},
                             _mpt_shapes(64, 64))


def test_gptj_saved_causal_mask_is_skipped_and_opt_without_model_prefix():
    p = "transformer.h.0."
    shapes = {p + f"attn.{r}_proj.weight": (64, 64) for r in ("q", "k", "v", "out")}
    shapes.update({p + "mlp.fc_in.weight": (256, 64), p + "mlp.fc_out.weight": (64, 256),
                   p + "attn.bias": (1, 1, 2048, 2048), p + "attn.masked_bias": ()})
    arch = resolve_architecture(list(shapes), {"model_type": "gptj", "n_embd": 64}, shapes)
    assert arch.name == "gptj" and len(arch.parts) == 6
    assert p + "attn.bias" in arch.skipped
    # facebook/opt-* were saved from OPTModel: ``decoder.layers.N`` at the root.
    p = "decoder.layers.0."
    shapes = {p + f"self_attn.{r}_proj.weight": (64, 64) for r in ("q", "k", "v", "out")}
    shapes.update({p + "fc1.weight": (256, 64), p + "fc2.weight": (64, 256),
                   "decoder.embed_positions.weight": (2050, 64)})
    arch = resolve_architecture(list(shapes), {"model_type": "opt", "hidden_size": 64}, shapes)
    assert arch.name == "opt"
    assert sorted(role for role, _, _ in arch.parts) == sorted(["q", "k", "v", "o", "up", "down"])


# -- GGUF ---------------------------------------------------------------------
# llama.cpp's converter renames by gguf-py's own table (``get_tensor_name_map``)
# and splits GraniteMoE's [gate; up] stacks (GraniteMoeModel.modify_tensors:
# ``split(intermediate_size, dim=-2)``, gate first); the GGUF file of a tiny
# checkpoint must then sign exactly as the checkpoint does.

def _to_gguf(folder, path, arch, metadata, fuse_qkv=False):
    gguf = pytest.importorskip("gguf")
    from _checkpoint_factories import write_gguf
    from safetensors.torch import load_file

    enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch]
    table = gguf.get_tensor_name_map(enum, metadata["block_count"])
    tensors = {}
    for name, t in load_file(folder / "model.safetensors").items():
        array = t.float().numpy()
        if name.endswith("input_linear.weight"):  # [gate; up] rows, gate first
            kind = "exps" if "block_sparse_moe" in name else "shexp"
            layer = name.split(".")[2]
            half = array.shape[-2] // 2
            tensors[f"blk.{layer}.ffn_gate_{kind}.weight"] = (array[..., :half, :].copy(), None)
            tensors[f"blk.{layer}.ffn_up_{kind}.weight"] = (array[..., half:, :].copy(), None)
            continue
        new = table.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is not None:
            tensors[new] = (array, None)
    if fuse_qkv:  # Phi-2 as first published: one Wqkv, [q; k; v]
        for layer in range(metadata["block_count"]):
            p = f"blk.{layer}."
            parts = [tensors.pop(p + f"attn_{r}.weight")[0] for r in "qkv"]
            tensors[p + "attn_qkv.weight"] = (np.concatenate(parts), None)
    return write_gguf(path, tensors, arch=arch, metadata=metadata)


@pytest.mark.parametrize("model_type, overrides, arch, fuse_qkv", [
    ("gpt_bigcode", {"multi_query": True}, "starcoder", False),
    ("phi", {}, "phi2", False),
    ("phi", {}, "phi2", True),
    ("starcoder2", {}, "starcoder2", False),
    ("gptj", {}, "gptj", False),
    ("mpt", {"n_layers": 3}, "mpt", False),
    ("granitemoe", {}, "granitemoe", False),
    ("granitemoeshared", {"shared_intermediate_size": 48}, "granitemoe", False),
])
def test_gguf_of_the_checkpoint_signs_the_same(model_type, overrides, arch, fuse_qkv, tmp_path):
    pytest.importorskip("transformers")
    model = write_tiny_checkpoint(model_type, tmp_path / "hf", **overrides)
    config = model.config
    heads = config.num_attention_heads
    # What the converter writes: StarCoder one key-value head under
    # multi_query, MPT none unless attn_config names kv_n_heads.
    kv_heads = {"gpt_bigcode": 1, "mpt": None}.get(
        model_type, getattr(config, "num_key_value_heads", heads))
    metadata = {"block_count": config.num_hidden_layers, "attention.head_count": heads,
                "embedding_length": config.hidden_size}
    if kv_heads is not None:
        metadata["attention.head_count_kv"] = kv_heads
    inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    metadata["feed_forward_length"] = inner or 4 * config.hidden_size
    path = _to_gguf(tmp_path / "hf", tmp_path / "model.gguf", arch, metadata, fuse_qkv)
    hf, gg = (compute_signature(p, cache=None, progress=False) for p in (tmp_path / "hf", path))
    assert gg.missing_layers() == {} and gg.undefined_matrices() == {}
    np.testing.assert_array_equal(np.isnan(gg.values), np.isnan(hf.values))
    np.testing.assert_allclose(gg.values, hf.values, rtol=1e-6)
