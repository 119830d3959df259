"""Tests of sklearn_specsig.architectures: naming schemes and fused splits.

Checkpoints are described by tensor names and shapes only, as the real
ones are laid out; fused tensors are built from random q/k/v (gate/up)
matrices exactly the way each library fuses them, and the split must give
the originals back bit for bit.
"""

import itertools
import pickle

import numpy as np
import pytest
import torch

from sklearn_specsig.architectures import (
    ROLES,
    NamingScheme,
    TensorPlan,
    get_naming_scheme,
    list_naming_schemes,
    naming_scheme_context,
    register_naming_scheme,
    resolve_architecture,
    unregister_naming_scheme,
)
from sklearn_specsig.errors import ConfigError, UnknownArchitectureError

HIDDEN, HEADS, KV_HEADS, INTER, VOCAB = 16, 4, 2, 24, 50
HEAD_DIM = HIDDEN // HEADS


_SEEDS = itertools.count()


def rand(*shape):
    """A fresh random tensor, reproducible run to run."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(next(_SEEDS)))


def layer_roles(arch, layer):
    present = {role for role, lay, _ in arch.parts if lay == layer}
    return [role for role in ROLES if role in present]


def experts_of(arch, role, layer):
    return sorted({e for r, lay, e in arch.parts if (r, lay) == (role, layer)},
                  key=lambda e: -1 if e is None else e)


def by_role(split):
    return {(role, expert): m for role, _, expert, m in split}


def same_storage(a, b):
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def llama_shapes(prefix="model.", n_layers=2, extra=lambda p: {}):
    shapes = {f"{prefix}embed_tokens.weight": (VOCAB, HIDDEN), f"{prefix}norm.weight": (HIDDEN,),
              "lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(n_layers):
        p = f"{prefix}layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (HIDDEN,),
            p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
            p + "mlp.gate_proj.weight": (INTER, HIDDEN),
            p + "mlp.up_proj.weight": (INTER, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, INTER),
            **extra(p),
        })
    return shapes


CONFIG = {"num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
          "hidden_size": HIDDEN, "intermediate_size": INTER}


def test_roles_are_the_canonical_rows():
    assert ROLES == ("q", "k", "v", "o", "gate", "up", "down")


@pytest.mark.parametrize("model_type, prefix, extra", [
    ("llama", "model.", lambda p: {}),
    ("mistral", "", lambda p: {}),
    ("qwen2", "model.", lambda p: {p + f"self_attn.{x}_proj.bias": (HIDDEN,) for x in "qkv"}),
    ("gemma3_text", "model.", lambda p: {p + "self_attn.q_norm.weight": (HEAD_DIM,),
                                         p + "self_attn.k_norm.weight": (HEAD_DIM,)}),
])
def test_llama_family(model_type, prefix, extra):
    shapes = llama_shapes(prefix, n_layers=3, extra=extra)
    arch = resolve_architecture(list(shapes), {**CONFIG, "model_type": model_type}, shapes)
    assert (arch.name, arch.n_layers, arch.model_type) == ("llama", 3, model_type)
    for layer in range(3):
        assert layer_roles(arch, layer) == list(ROLES)
    assert all(e is None for _, _, e in arch.parts)
    assert {plan.descriptor for plan in arch.plans.values()} == {"plain"}
    assert arch.plans[f"{prefix}layers.1.mlp.down_proj.weight"].parts == (("down", 1, None),)
    assert set(arch.skipped) == {n for n in shapes if "_proj.weight" not in n}
    assert len(arch.plans) == 3 * 7


@pytest.mark.parametrize("text, vision", [
    ("model.language_model.", "model.vision_tower.vision_model.encoder.layers.0."),
    ("language_model.model.", "vision_tower.vision_model.encoder.layers.0."),
])
def test_gemma3_multimodal_skips_vision_tower(text, vision):
    shapes = llama_shapes(text, extra=lambda p: {p + "self_attn.q_norm.weight": (HEAD_DIM,)})
    vision_names = {vision + f"self_attn.{x}_proj.weight": (8, 8) for x in "qkv"}
    vision_names[vision + "mlp.fc1.weight"] = (32, 8)
    shapes.update(vision_names, **{"multi_modal_projector.mm_input_projection_weight": (8, HIDDEN)})
    config = {"model_type": "gemma3", "text_config": {**CONFIG, "num_hidden_layers": 2}}
    arch = resolve_architecture(list(shapes), config, shapes)
    assert (arch.name, arch.n_layers) == ("llama", 2)
    assert layer_roles(arch, 0) == layer_roles(arch, 1) == list(ROLES)
    assert set(vision_names) <= set(arch.skipped)
    assert f"{text}layers.0.self_attn.q_norm.weight" in arch.skipped


def phi3_checkpoint(q, k, v, gate, up):
    shapes, tensors = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}, {}
    for i in range(2):
        p = f"model.layers.{i}."
        tensors.update({p + "self_attn.qkv_proj.weight": torch.cat([q, k, v]),
                        p + "self_attn.o_proj.weight": rand(HIDDEN, q.shape[0]),
                        p + "mlp.gate_up_proj.weight": torch.cat([gate, up]),
                        p + "mlp.down_proj.weight": rand(HIDDEN, INTER)})
        shapes[p + "input_layernorm.weight"] = (HIDDEN,)
    shapes.update({name: tuple(t.shape) for name, t in tensors.items()})
    return shapes, tensors


def test_phi3_fused_split_is_bit_exact_and_views():
    q, k, v = rand(HEADS * HEAD_DIM, HIDDEN), rand(KV_HEADS * HEAD_DIM, HIDDEN), rand(8, HIDDEN)
    gate, up = rand(INTER, HIDDEN), rand(INTER, HIDDEN)
    shapes, tensors = phi3_checkpoint(q, k, v, gate, up)
    arch = resolve_architecture(list(shapes), {**CONFIG, "model_type": "phi3"}, shapes)
    assert (arch.name, arch.n_layers) == ("phi3", 2)
    assert layer_roles(arch, 1) == list(ROLES)
    assert set(arch.skipped) == {"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                                 "model.layers.1.input_layernorm.weight"}
    qkv_name, gu_name = "model.layers.1.self_attn.qkv_proj.weight", "model.layers.1.mlp.gate_up_proj.weight"
    qkv_plan, gu_plan = arch.plans[qkv_name], arch.plans[gu_name]
    assert qkv_plan.descriptor == "qkv:q=16,k=8,v=8"
    assert qkv_plan.parts == (("q", 1, None), ("k", 1, None), ("v", 1, None))
    assert gu_plan.descriptor == "gate_up:gate=24,up=24"
    parts = by_role(qkv_plan.split(tensors[qkv_name])) | by_role(gu_plan.split(tensors[gu_name]))
    for role, original in zip(["q", "k", "v", "gate", "up"], [q, k, v, gate, up]):
        assert torch.equal(parts[role, None], original)
    assert same_storage(parts["k", None], tensors[qkv_name])
    # numpy arrays (e.g. from a GGUF reader) split the same way.
    as_numpy = qkv_plan.split(tensors[qkv_name].numpy())
    assert np.array_equal(as_numpy[2][3], v.numpy())


def test_phi3_uses_head_dim_from_config():
    q, k, v = rand(32, HIDDEN), rand(16, HIDDEN), rand(16, HIDDEN)
    shapes, tensors = phi3_checkpoint(q, k, v, rand(INTER, HIDDEN), rand(INTER, HIDDEN))
    config = {**CONFIG, "head_dim": 8, "model_type": "phi3"}
    plan = resolve_architecture(list(shapes), config, shapes).plans["model.layers.0.self_attn.qkv_proj.weight"]
    assert plan.descriptor == "qkv:q=32,k=16,v=16"
    parts = by_role(plan.split(tensors["model.layers.0.self_attn.qkv_proj.weight"]))
    assert torch.equal(parts["q", None], q) and torch.equal(parts["v", None], v)


@pytest.mark.parametrize("prefix", ["", "transformer."])
@pytest.mark.parametrize("config", [{}, {"model_type": "gpt2", "n_embd": HIDDEN, "n_head": HEADS}])
def test_gpt2_conv1d_transpose_and_thirds(prefix, config):
    q, k, v, o = (rand(HIDDEN, HIDDEN) for _ in range(4))
    fc, proj = rand(4 * HIDDEN, HIDDEN), rand(HIDDEN, 4 * HIDDEN)  # (out, in) as nn.Linear
    # Conv1D keeps (in, out) and c_attn's output splits into q, k, v columns.
    tensors = {"attn.c_attn.weight": torch.cat([q.T, k.T, v.T], dim=1), "attn.c_proj.weight": o.T,
               "mlp.c_fc.weight": fc.T, "mlp.c_proj.weight": proj.T}
    shapes = {f"{prefix}wte.weight": (VOCAB, HIDDEN), f"{prefix}wpe.weight": (32, HIDDEN),
              f"{prefix}ln_f.weight": (HIDDEN,)}
    for i in range(2):
        shapes.update({f"{prefix}h.{i}.{s}": tuple(t.shape) for s, t in tensors.items()})
        shapes.update({f"{prefix}h.{i}.ln_1.weight": (HIDDEN,), f"{prefix}h.{i}.attn.bias": (1, 1, 32, 32),
                       f"{prefix}h.{i}.attn.c_attn.bias": (3 * HIDDEN,)})
    arch = resolve_architecture(list(shapes), config, shapes)
    assert (arch.name, arch.n_layers) == ("gpt2", 2)
    assert layer_roles(arch, 0) == ["q", "k", "v", "o", "up", "down"]
    assert f"{prefix}h.1.attn.bias" in arch.skipped and f"{prefix}wpe.weight" in arch.skipped
    assert all(plan.transpose for plan in arch.plans.values())
    assert arch.plans[f"{prefix}h.0.attn.c_attn.weight"].descriptor == "T|qkv:q=16,k=16,v=16"
    got = {}
    for suffix, tensor in tensors.items():
        got |= by_role(arch.plans[f"{prefix}h.0.{suffix}"].split(tensor))
    for role, original in zip(["q", "k", "v", "o", "up", "down"], [q, k, v, o, fc, proj]):
        assert torch.equal(got[role, None], original)
    assert same_storage(got["v", None], tensors["attn.c_attn.weight"])


def test_gpt_neox_per_head_interleave():
    q, k, v = (rand(HEADS * HEAD_DIM, HIDDEN) for _ in range(3))
    # NeoX views the fused output as (heads, 3 * head_dim): q, k, v per head.
    fused = torch.stack([m.view(HEADS, HEAD_DIM, HIDDEN) for m in (q, k, v)], dim=1).reshape(-1, HIDDEN)
    shapes = {"gpt_neox.embed_in.weight": (VOCAB, HIDDEN), "embed_out.weight": (VOCAB, HIDDEN),
              "gpt_neox.final_layer_norm.weight": (HIDDEN,)}
    for i in range(3):
        p = f"gpt_neox.layers.{i}."
        shapes.update({p + "attention.query_key_value.weight": tuple(fused.shape),
                       p + "attention.query_key_value.bias": (3 * HIDDEN,),
                       p + "attention.bias": (1, 1, 32, 32), p + "attention.rotary_emb.inv_freq": (2,),
                       p + "attention.dense.weight": (HIDDEN, HIDDEN),
                       p + "mlp.dense_h_to_4h.weight": (4 * HIDDEN, HIDDEN),
                       p + "mlp.dense_4h_to_h.weight": (HIDDEN, 4 * HIDDEN)})
    config = {"model_type": "gpt_neox", "num_attention_heads": HEADS, "hidden_size": HIDDEN}
    arch = resolve_architecture(list(shapes), config, shapes)
    assert (arch.name, arch.n_layers) == ("gpt_neox", 3)
    assert layer_roles(arch, 2) == ["q", "k", "v", "o", "up", "down"]
    assert "gpt_neox.layers.0.attention.rotary_emb.inv_freq" in arch.skipped
    plan = arch.plans["gpt_neox.layers.2.attention.query_key_value.weight"]
    assert plan.descriptor == "qkv_interleaved:heads=4,head_dim=4"
    parts = by_role(plan.split(fused))
    assert all(torch.equal(parts[r, None], m) for r, m in zip("qkv", (q, k, v)))
    assert not torch.equal(fused[:HIDDEN], q)  # a plain thirds split would be wrong


@pytest.mark.parametrize("prefix", ["bert.", "roberta.", ""])
def test_bert_encoders_anchor_output_dense(prefix):
    shapes = {f"{prefix}embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
              f"{prefix}embeddings.LayerNorm.weight": (HIDDEN,),
              f"{prefix}pooler.dense.weight": (HIDDEN, HIDDEN),
              "cls.predictions.transform.dense.weight": (HIDDEN, HIDDEN)}
    for i in range(2):
        p = f"{prefix}encoder.layer.{i}."
        shapes.update({p + f"attention.self.{x}.weight": (HIDDEN, HIDDEN) for x in ("query", "key", "value")})
        shapes.update({p + "attention.output.dense.weight": (HIDDEN, HIDDEN),
                       p + "attention.output.LayerNorm.weight": (HIDDEN,),
                       p + "intermediate.dense.weight": (INTER, HIDDEN),
                       p + "output.dense.weight": (HIDDEN, INTER), p + "output.LayerNorm.weight": (HIDDEN,)})
    arch = resolve_architecture(list(shapes), {"model_type": "bert"}, shapes)
    assert (arch.name, arch.n_layers) == ("bert", 2)
    assert layer_roles(arch, 1) == ["q", "k", "v", "o", "up", "down"]
    p = f"{prefix}encoder.layer.1."
    assert arch.plans[p + "attention.output.dense.weight"].parts == (("o", 1, None),)
    assert arch.plans[p + "output.dense.weight"].parts == (("down", 1, None),)
    assert {f"{prefix}pooler.dense.weight", "cls.predictions.transform.dense.weight"} <= set(arch.skipped)
    assert len(arch.plans) == 12


def gguf_config(arch="llama", **values):
    return {"general.architecture": arch, **{f"{arch}.{key}": value for key, value in values.items()}}


def test_gguf_llama_names_and_metadata_config():
    shapes = {"token_embd.weight": (VOCAB, HIDDEN), "output_norm.weight": (HIDDEN,),
              "output.weight": (VOCAB, HIDDEN), "rope_freqs.weight": (2,)}
    for i in range(2):
        p = f"blk.{i}."
        shapes.update({p + "attn_norm.weight": (HIDDEN,), p + "ffn_norm.weight": (HIDDEN,),
                       p + "attn_q.weight": (HIDDEN, HIDDEN), p + "attn_k.weight": (8, HIDDEN),
                       p + "attn_v.weight": (8, HIDDEN), p + "attn_output.weight": (HIDDEN, HIDDEN),
                       p + "ffn_gate.weight": (INTER, HIDDEN), p + "ffn_up.weight": (INTER, HIDDEN),
                       p + "ffn_down.weight": (HIDDEN, INTER)})
    config = gguf_config(embedding_length=HIDDEN, feed_forward_length=INTER, block_count=2)
    arch = resolve_architecture(list(shapes), config, shapes)
    assert (arch.name, arch.n_layers, arch.model_type) == ("gguf", 2, "llama")
    assert layer_roles(arch, 0) == layer_roles(arch, 1) == list(ROLES)
    assert arch.plans["blk.1.ffn_up.weight"].parts == (("up", 1, None),)
    assert set(arch.skipped) == {n for n in shapes if "norm" in n or not n.startswith("blk")}


def test_gguf_fused_qkv_and_fused_ffn_up():
    q, k, v = rand(HIDDEN, HIDDEN), rand(8, HIDDEN), rand(8, HIDDEN)
    gate, up = rand(INTER, HIDDEN), rand(INTER, HIDDEN)
    tensors = {"blk.0.attn_qkv.weight": torch.cat([q, k, v]), "blk.0.ffn_up.weight": torch.cat([gate, up])}
    shapes = {**{n: tuple(t.shape) for n, t in tensors.items()},
              "blk.0.attn_output.weight": (HIDDEN, HIDDEN), "blk.0.ffn_down.weight": (HIDDEN, INTER)}
    config = gguf_config("phi3", **{"attention.head_count": HEADS, "attention.head_count_kv": KV_HEADS,
                                    "embedding_length": HIDDEN, "feed_forward_length": INTER})
    arch = resolve_architecture(list(shapes), config, shapes)
    assert (arch.name, arch.n_layers) == ("gguf", 1)
    assert layer_roles(arch, 0) == list(ROLES)
    got = {}
    for name, tensor in tensors.items():
        got |= by_role(arch.plans[name].split(tensor))
    for role, original in zip(["q", "k", "v", "gate", "up"], [q, k, v, gate, up]):
        assert torch.equal(got[role, None], original)
    assert arch.plans["blk.0.ffn_up.weight"].descriptor == "gate_up:gate=24,up=24"


def test_gguf_moe_stacks_and_shared_expert():
    n_exp = 4
    gate_exps = rand(n_exp, INTER, HIDDEN)
    shapes = {"token_embd.weight": (VOCAB, HIDDEN)}
    for i in range(2):
        p = f"blk.{i}."
        shapes.update({p + "attn_q.weight": (HIDDEN, HIDDEN), p + "ffn_gate_inp.weight": (n_exp, HIDDEN),
                       p + "ffn_gate_exps.weight": tuple(gate_exps.shape),
                       p + "ffn_up_exps.weight": (n_exp, INTER, HIDDEN),
                       p + "ffn_down_exps.weight": (n_exp, HIDDEN, INTER),
                       p + "ffn_gate_shexp.weight": (32, HIDDEN), p + "ffn_up_shexp.weight": (32, HIDDEN),
                       p + "ffn_down_shexp.weight": (HIDDEN, 32)})
    arch = resolve_architecture(list(shapes), gguf_config("qwen2moe", embedding_length=HIDDEN), shapes)
    assert (arch.name, arch.n_layers) == ("gguf", 2)
    for role in ("gate", "up", "down"):
        assert experts_of(arch, role, 1) == [0, 1, 2, 3, 4]  # 4 routed + the shared one
    assert arch.plans["blk.1.ffn_down_shexp.weight"].parts == (("down", 1, 4),)
    assert "blk.0.ffn_gate_inp.weight" in arch.skipped
    # Older GGUF files name each expert matrix on its own.
    assert get_naming_scheme("gguf").match("blk.3.ffn_up.7.weight") == ("ffn_up.{expert}.weight", 3, 7)
    plan = arch.plans["blk.0.ffn_gate_exps.weight"]
    assert plan.descriptor == "experts=4|plain"
    split = plan.split(gate_exps)
    assert [(r, lay, e) for r, lay, e, _ in split] == [("gate", 0, e) for e in range(n_exp)]
    assert all(torch.equal(m, gate_exps[e]) and same_storage(m, gate_exps) for _, _, e, m in split)


def test_mixtral_experts_and_router_skipped():
    n_exp = 4
    shapes = llama_shapes(n_layers=2)
    for name in [n for n in shapes if ".mlp." in n]:
        del shapes[name]
    for i in range(2):
        p = f"model.layers.{i}.block_sparse_moe."
        shapes[p + "gate.weight"] = (n_exp, HIDDEN)
        for e in range(n_exp):
            shapes.update({p + f"experts.{e}.w1.weight": (INTER, HIDDEN),
                           p + f"experts.{e}.w2.weight": (HIDDEN, INTER),
                           p + f"experts.{e}.w3.weight": (INTER, HIDDEN)})
    arch = resolve_architecture(list(shapes), {**CONFIG, "model_type": "mixtral"}, shapes)
    assert (arch.name, arch.n_layers) == ("mixtral", 2)
    assert layer_roles(arch, 1) == list(ROLES)
    assert experts_of(arch, "up", 1) == [0, 1, 2, 3] and experts_of(arch, "q", 1) == [None]
    p = "model.layers.1.block_sparse_moe.experts.2."
    assert [arch.plans[p + f"{w}.weight"].parts for w in ("w1", "w2", "w3")] == [
        (("gate", 1, 2),), (("down", 1, 2),), (("up", 1, 2),)]
    assert "model.layers.0.block_sparse_moe.gate.weight" in arch.skipped


def test_qwen2_moe_shared_expert_and_dense_layer():
    n_exp = 3
    shapes = llama_shapes(n_layers=2)  # layer 0 keeps its dense MLP (mlp_only_layers)
    for name in [n for n in shapes if n.startswith("model.layers.1.mlp.")]:
        del shapes[name]
    p = "model.layers.1.mlp."
    shapes.update({p + "gate.weight": (n_exp, HIDDEN), p + "shared_expert_gate.weight": (1, HIDDEN)})
    for proj, shape in (("gate", (INTER, HIDDEN)), ("up", (INTER, HIDDEN)), ("down", (HIDDEN, INTER))):
        shapes[p + f"shared_expert.{proj}_proj.weight"] = shape
        shapes.update({p + f"experts.{e}.{proj}_proj.weight": shape for e in range(n_exp)})
    arch = resolve_architecture(list(shapes), {**CONFIG, "model_type": "qwen2_moe"}, shapes)
    assert (arch.name, arch.n_layers) == ("qwen2_moe", 2)
    assert layer_roles(arch, 0) == layer_roles(arch, 1) == list(ROLES)
    assert experts_of(arch, "gate", 0) == [None]
    assert experts_of(arch, "down", 1) == [0, 1, 2, 3]
    assert arch.plans[p + "shared_expert.up_proj.weight"].parts == (("up", 1, 3),)
    assert {p + "gate.weight", p + "shared_expert_gate.weight"} <= set(arch.skipped)


def stacked_experts(n_exp=4, inter=INTER, transposed=False):
    """transformers-5 expert parameters: (E, 2I, H) gate rows first, (E, H, I)."""
    gates, ups, downs = rand(n_exp, inter, HIDDEN), rand(n_exp, inter, HIDDEN), rand(n_exp, HIDDEN, inter)
    gate_up = torch.cat([gates, ups], dim=1)
    if transposed:  # Qwen3-VL-MoE and Llama 4 store (E, in, out)
        gate_up, down = gate_up.transpose(1, 2).contiguous(), downs.transpose(1, 2).contiguous()
    else:
        down = downs
    return gates, ups, downs, gate_up, down


def stacked_shapes(gate_up, down, prefix="mlp.experts.", router="mlp.gate.weight"):
    shapes = llama_shapes(n_layers=2)
    for name in [n for n in shapes if ".mlp." in n]:
        del shapes[name]
    for i in range(2):
        shapes.update({f"model.layers.{i}.{router}": (gate_up.shape[0], HIDDEN),
                       f"model.layers.{i}.{prefix}gate_up_proj": tuple(gate_up.shape),
                       f"model.layers.{i}.{prefix}down_proj": tuple(down.shape)})
    return shapes


@pytest.mark.parametrize("transposed", [False, True])
def test_stacked_experts_split_per_expert_with_orientation_from_shapes(transposed):
    gates, ups, downs, gate_up, down = stacked_experts(transposed=transposed)
    shapes = stacked_shapes(gate_up, down)
    arch = resolve_architecture(list(shapes), {**CONFIG, "model_type": "qwen3_moe"}, shapes)
    assert (arch.name, arch.n_layers) == ("qwen2_moe", 2)
    assert layer_roles(arch, 1) == list(ROLES) and experts_of(arch, "gate", 1) == [0, 1, 2, 3]
    gu_plan = arch.plans["model.layers.1.mlp.experts.gate_up_proj"]
    tag = "T|" if transposed else ""
    assert gu_plan.descriptor == f"experts=4|{tag}gate_up:gate=24,up=24"
    got = by_role(gu_plan.split(gate_up)) | by_role(arch.plans["model.layers.1.mlp.experts.down_proj"].split(down))
    for e in range(4):
        assert torch.equal(got["gate", e], gates[e]) and torch.equal(got["up", e], ups[e])
        assert torch.equal(got["down", e], downs[e])
    assert same_storage(got["up", 3], gate_up)


@pytest.mark.parametrize("config, expected", [
    ({"model_type": "mixtral"}, "mixtral"),
    ({"model_type": "qwen3_moe"}, "qwen2_moe"),
    ({"model_type": "gpt_oss"}, "gpt_oss"),
    ({}, "mixtral"),  # no model_type: the earlier registered scheme wins
])
def test_ties_are_broken_by_model_type_then_registration_order(config, expected):
    _, _, _, gate_up, down = stacked_experts()
    # Each family's own router name: the chosen scheme must account for it.
    shapes = stacked_shapes(gate_up, down, router="mlp.router.weight" if expected == "gpt_oss"
                            else "mlp.gate.weight")
    assert resolve_architecture(list(shapes), config, shapes).name == expected


def test_gpt_oss_interleaved_gate_up():
    gates, ups, downs = rand(2, INTER, HIDDEN), rand(2, INTER, HIDDEN), rand(2, HIDDEN, INTER)
    interleaved = torch.stack([gates, ups], dim=2).reshape(2, 2 * INTER, HIDDEN)  # rows g0 u0 g1 u1 ...
    gate_up, down = interleaved.transpose(1, 2).contiguous(), downs.transpose(1, 2).contiguous()
    shapes = stacked_shapes(gate_up, down, router="mlp.router.weight")
    arch = resolve_architecture(list(shapes), {**CONFIG, "model_type": "gpt_oss"}, shapes)
    plan = arch.plans["model.layers.0.mlp.experts.gate_up_proj"]
    assert plan.descriptor == "experts=2|T|gate_up_interleaved:gate=24,up=24"
    got = by_role(plan.split(gate_up)) | by_role(arch.plans["model.layers.0.mlp.experts.down_proj"].split(down))
    for e in range(2):
        assert torch.equal(got["gate", e], gates[e]) and torch.equal(got["up", e], ups[e])
        assert torch.equal(got["down", e], downs[e])


def test_llama4_transposed_stacks_without_hidden_size_in_config():
    gates, ups, _, gate_up, down = stacked_experts(n_exp=2, transposed=True)
    shapes = stacked_shapes(gate_up, down, prefix="feed_forward.experts.",
                            router="feed_forward.router.weight")
    shapes.update({"model.layers.1.feed_forward.shared_expert.gate_proj.weight": (INTER, HIDDEN),
                   "model.layers.1.feed_forward.router.weight": (2, HIDDEN)})
    arch = resolve_architecture(list(shapes), {"model_type": "llama4_text"}, shapes)
    assert (arch.name, arch.n_layers) == ("llama4", 2)
    assert experts_of(arch, "gate", 1) == [0, 1, 2]
    assert "model.layers.1.feed_forward.router.weight" in arch.skipped
    got = by_role(arch.plans["model.layers.0.feed_forward.experts.gate_up_proj"].split(gate_up))
    assert torch.equal(got["gate", 1], gates[1]) and torch.equal(got["up", 0], ups[0])


def test_layers_past_num_hidden_layers_are_skipped():
    shapes = llama_shapes(n_layers=3)  # layer 2 plays DeepSeek-V3's MTP block
    arch = resolve_architecture(list(shapes), {**CONFIG, "num_hidden_layers": 2}, shapes)
    assert arch.n_layers == 2
    assert "model.layers.2.self_attn.q_proj.weight" in arch.skipped


def stagenet_shapes(n_layers=12):
    # A made-up architecture that no built-in scheme knows.
    shapes = {"backbone.embed.weight": (VOCAB, HIDDEN)}
    for i in range(n_layers):
        shapes.update({f"backbone.stages.{i}.attn.Wqkv.weight": (3 * HIDDEN, HIDDEN),
                       f"backbone.stages.{i}.attn.out_proj.weight": (HIDDEN, HIDDEN),
                       f"backbone.stages.{i}.norm_1.weight": (HIDDEN,)})
    return shapes


STAGENET = {"name": "stagenet", "layer_pattern": r"^backbone\.stages\.(?P<layer>\d+)\.",
       "modules": {"attn.Wqkv.weight": "qkv", "attn.out_proj.weight": "o"}}


def test_unknown_architecture_lists_names_and_shows_registration_code():
    shapes = stagenet_shapes()
    with pytest.raises(UnknownArchitectureError) as info:
        resolve_architecture(list(shapes), {"model_type": "stagenet"}, shapes)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    layered = [n for n in shapes if ".stages." in n]
    assert all(name in message for name in layered[:10])
    assert layered[10] not in message  # at most ten samples
    assert "register_naming_scheme(NamingScheme(" in message and "scheme=" in message
    assert r'layer_pattern=r"^backbone\.stages\.(?P<layer>\d+)\."' in message
    assert '"attn.Wqkv.weight": "<role>",' in message
    assert '"norm_1.weight": "<role>"' not in message  # 1-D tensors are no keys
    # Following the hint for one call works without registering anything.
    arch = resolve_architecture(list(shapes), {"num_attention_heads": HEADS}, shapes,
                                scheme=NamingScheme(**STAGENET))
    assert (arch.name, arch.n_layers) == ("stagenet", 12)
    assert layer_roles(arch, 11) == ["q", "k", "v", "o"]
    assert "stagenet" not in list_naming_schemes()


def test_forcing_a_scheme_by_name():
    shapes = llama_shapes()
    with pytest.raises(UnknownArchitectureError, match="Naming scheme 'gpt2' maps"):
        resolve_architecture(list(shapes), CONFIG, shapes, scheme="gpt2")
    with pytest.raises(UnknownArchitectureError, match="No naming scheme named 'nope'"):
        resolve_architecture(list(shapes), CONFIG, shapes, scheme="nope")
    assert resolve_architecture(list(shapes), CONFIG, shapes, scheme="qwen2_moe").name == "qwen2_moe"


def test_custom_scheme_registration_does_not_leak():
    shapes = stagenet_shapes(n_layers=2)
    config = {"num_attention_heads": HEADS}
    with naming_scheme_context(NamingScheme(**STAGENET)) as scheme:
        assert list_naming_schemes()[-1] == "stagenet" and get_naming_scheme("stagenet") is scheme
        arch = resolve_architecture(list(shapes), config, shapes)
        assert (arch.name, arch.scheme) == ("stagenet", scheme)
        with pytest.raises(ValueError, match="already registered"):
            register_naming_scheme(NamingScheme(**STAGENET))
    assert "stagenet" not in list_naming_schemes()
    with pytest.raises(UnknownArchitectureError):
        resolve_architecture(list(shapes), config, shapes)

    register_naming_scheme(NamingScheme(**STAGENET))
    try:
        assert resolve_architecture(list(shapes), config, shapes).name == "stagenet"
    finally:
        assert unregister_naming_scheme("stagenet").name == "stagenet"
    with pytest.raises(ValueError, match="No naming scheme named 'stagenet'"):
        unregister_naming_scheme("stagenet")


def test_shadowing_a_builtin_scheme_is_restored():
    builtin, order = get_naming_scheme("llama"), list_naming_schemes()
    custom = NamingScheme(name="llama", layer_pattern=STAGENET["layer_pattern"], modules=STAGENET["modules"])
    with naming_scheme_context(custom):
        assert get_naming_scheme("llama") is custom
    assert get_naming_scheme("llama") is builtin and list_naming_schemes() == order


@pytest.mark.parametrize("kwargs, match", [
    ({"modules": {"attn.w.weight": "attn"}}, "neither a role"),
    ({"layer_pattern": r"^blocks\.\d+\."}, "named group"),
    ({"transposed": ("mlp.w.weight",)}, "not a key of modules"),
    ({"name": ""}, "non-empty"),
])
def test_naming_scheme_validates_its_declaration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NamingScheme(**{**STAGENET, **kwargs})


def test_expert_placeholder_and_pickling():
    scheme = NamingScheme(name="moe", layer_pattern=r"^l\.(?P<layer>\d+)\.",
                          modules={"e.{expert}.w_in.weight": "gate_up", "attn.weight": "q"},
                          model_types="moe")
    assert scheme.model_types == ("moe",)
    assert scheme.match("l.3.e.12.w_in.weight") == ("e.{expert}.w_in.weight", 3, 12)
    assert scheme.match("l.3.attn.weight") == ("attn.weight", 3, None)
    assert scheme.match("l.3.e.x.w_in.weight") is None and scheme.match("m.3.attn.weight") is None
    shapes = {"l.0.e.0.w_in.weight": (8, 4), "l.0.e.1.w_in.weight": (8, 4)}
    arch = pickle.loads(pickle.dumps(resolve_architecture(list(shapes), {}, shapes, scheme=scheme)))
    assert arch.parts == (("gate", 0, 0), ("up", 0, 0), ("gate", 0, 1), ("up", 0, 1))
    tensor = rand(8, 4)
    assert torch.equal(arch.plans["l.0.e.1.w_in.weight"].split(tensor)[1][3], tensor[4:])
    assert arch.scheme.match("l.5.attn.weight") == ("attn.weight", 5, None)


def phi3_shapes(rows=32, gate_up_rows=2 * INTER):
    return {"model.layers.0.self_attn.qkv_proj.weight": (rows, HIDDEN),
            "model.layers.0.mlp.gate_up_proj.weight": (gate_up_rows, HIDDEN)}


@pytest.mark.parametrize("shapes, config, needles", [
    (phi3_shapes(), {"num_attention_heads": 5, "num_key_value_heads": 2},
     ["qkv_proj.weight", "(32, 16)", "num_attention_heads=5", "config.json"]),
    (phi3_shapes(), {"num_attention_heads": 6, "num_key_value_heads": 1, "hidden_size": HIDDEN},
     ["head_dim=None", "hidden_size=16", "num_key_value_heads=1"]),
    (phi3_shapes(), {}, ["no head count", "num_attention_heads / n_head"]),
    (phi3_shapes(gate_up_rows=47), CONFIG, ["gate_up_proj.weight", "(47, 16)", "equal parts"]),
    ({"gpt_neox.layers.0.attention.query_key_value.weight": (48, HIDDEN)},
     {"num_attention_heads": 5}, ["query_key_value", "num_attention_heads=5"]),
    ({"h.0.attn.c_attn.weight": (HIDDEN, 3 * HIDDEN + 1)}, {}, ["c_attn", "(16, 49)", "equal parts"]),
    ({"model.layers.0.block_sparse_moe.experts.0.w1.weight": (2, INTER, HIDDEN)}, {},
     ["3-D stack", "expert index 0"]),
    ({"model.layers.0.self_attn.q_proj.weight": (HIDDEN,)}, {}, ["q_proj", "(16,)", "2-D matrix"]),
])
def test_config_errors_name_the_tensor_and_the_fix(shapes, config, needles):
    with pytest.raises(ConfigError) as info:
        resolve_architecture(list(shapes), config, shapes)
    assert isinstance(info.value, ValueError)
    for needle in needles:
        assert needle in str(info.value)


def test_missing_shape_and_split_of_a_wrong_shape():
    with pytest.raises(ConfigError, match="No shape given for tensor 'model.layers.0.mlp.up_proj.weight'"):
        resolve_architecture(["model.layers.0.mlp.up_proj.weight"], {}, {})
    plan = TensorPlan(name="w", descriptor="plain", parts=(("up", 0, None),), shape=(4, 2))
    assert torch.equal(plan.split(torch.ones(4, 2))[0][3], torch.ones(4, 2))
    with pytest.raises(ConfigError, match=r"'w' has shape \(2, 4\) but its split plan was made for \(4, 2\)"):
        plan.split(torch.ones(2, 4))


def test_equal_thirds_refuse_a_multi_query_c_attn_without_config():
    # StarCoder's c_attn (q of 6144 rows, one 128-row key and value head)
    # under GPT-2's names and no config.json: equal thirds would cut it
    # silently wrong, so the split refuses; GPT-2's own shapes still split.
    starcoder, gpt2 = {}, {}
    for i in range(2):
        starcoder.update({f"transformer.h.{i}.attn.c_attn.weight": (6400, 6144),
                          f"transformer.h.{i}.attn.c_proj.weight": (6144, 6144)})
        gpt2.update({f"transformer.h.{i}.attn.c_attn.weight": (768, 2304),
                     f"transformer.h.{i}.attn.c_proj.weight": (768, 768)})
    with pytest.raises(ConfigError, match="not three times the input width 6400"):
        resolve_architecture(list(starcoder), {}, starcoder)
    arch = resolve_architecture(list(gpt2), {}, gpt2)
    assert arch.plans["transformer.h.0.attn.c_attn.weight"].descriptor == "T|qkv:q=768,k=768,v=768"
