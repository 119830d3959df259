"""DeepSeek-V2/V3 GGUF files (llama.cpp ``deepseek2``) sign as their checkpoint.

A tiny ``deepseek_v3`` (query latent, q_b_proj) and ``deepseek_v2`` (no
query latent, q_proj) checkpoint is converted as llama.cpp's
``convert_hf_to_gguf.py`` DeepseekV2Model does, in both of its kv_b layouts:

* older converters: ``attn_kv_b`` = kv_b_proj as is, per head [k_nope; v]
  rows; key_length = qk_nope + qk_rope, value_length = v_head_dim;
* since MLA absorption: kv_b_proj split per head,
  ``kv_b.view(n_head, nope + v, rank).split([nope, v], dim=1)`` and
  ``k_b.transpose(1, 2)``: ``attn_k_b`` (n_head, kv_lora_rank, nope) and
  ``attn_v_b`` (n_head, v_head_dim, kv_lora_rank) in PyTorch order;
  head_count_kv = 1, key_length = kv_lora_rank + rope, value_length =
  kv_lora_rank, and the per-head widths in key_length_mla / value_length_mla.
"""

import numpy as np
import pytest

from sklearn_specsig import compute_signature

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")

from _checkpoint_factories import write_converted_gguf
from _decoder_references import DEEPSEEK
from _transformers_factories import write_tiny_checkpoint

RTOL = 1e-5


def _sign(path):
    return compute_signature(path, cache=None, progress=False)


def _convert(folder, path, c, absorbed):
    """DeepseekV2Model's tensors and metadata, float32."""
    from safetensors.torch import load_file

    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.DEEPSEEK2, c.num_hidden_layers)
    state = {k: v.float().numpy() for k, v in load_file(folder / "model.safetensors").items()}
    n_head, nope, v_dim = c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim
    tensors = {}
    for layer in range(c.num_hidden_layers):  # experts merged into 3-D stacks
        p = f"model.layers.{layer}.mlp.experts."
        for proj in ("gate_proj", "up_proj", "down_proj"):
            keys = [p + f"{e}.{proj}.weight" for e in range(c.n_routed_experts)]
            if keys[0] in state:
                state[p + f"{proj}.weight"] = np.stack([state.pop(k) for k in keys])
    for name, array in state.items():
        if name.endswith("e_score_correction_bias"):  # the converter's rename
            name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        if absorbed and name.endswith("kv_b_proj.weight"):
            kv_b = array.reshape(n_head, nope + v_dim, array.shape[-1])
            k_b, v_b = kv_b[:, :nope], kv_b[:, nope:]
            for part, data in (("k_b_proj", k_b.transpose(0, 2, 1)), ("v_b_proj", v_b)):
                tensors[table.get_name(name.replace("kv_b_proj", part), (".weight",))] = data
            continue
        new = table.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is not None:
            tensors[new] = array
    rope = c.qk_rope_head_dim
    meta = {"block_count": c.num_hidden_layers, "embedding_length": c.hidden_size,
            "feed_forward_length": c.intermediate_size, "head_count": n_head,
            "head_count_kv": 1 if absorbed else c.num_key_value_heads,
            "leading_dense_block_count": c.first_k_dense_replace}
    if c.q_lora_rank is not None:
        meta["q_lora_rank"] = c.q_lora_rank
    meta["kv_lora_rank"] = c.kv_lora_rank
    if absorbed:  # the newer converter: kv_b split per head, the latent as the key
        meta.update(key_length=c.kv_lora_rank + rope, value_length=c.kv_lora_rank,
                    key_length_mla=nope + rope, value_length_mla=v_dim)
    else:
        meta.update(key_length=nope + rope, value_length=v_dim)
    meta.update(rope_dimension_count=rope, expert_count=c.n_routed_experts,
                expert_used_count=c.num_experts_per_tok,
                expert_feed_forward_length=c.moe_intermediate_size,
                expert_shared_count=c.n_shared_experts)
    return write_converted_gguf(path, "deepseek2", tensors, meta), set(tensors)


@pytest.mark.parametrize("absorbed", [False, True], ids=["attn_kv_b", "attn_k_b_v_b"])
@pytest.mark.parametrize("model_type, overrides", [
    ("deepseek_v3", DEEPSEEK),
    ("deepseek_v2", {**DEEPSEEK, "q_lora_rank": None}),
])
def test_deepseek2_gguf_signs_as_the_checkpoint(model_type, overrides, absorbed, tmp_path):
    model = write_tiny_checkpoint(model_type, tmp_path / "hf", **overrides)
    c = model.config
    path, names = _convert(tmp_path / "hf", tmp_path / "m.gguf", c, absorbed)
    q = "attn_q_b" if c.q_lora_rank is not None else "attn_q"
    kv = ("attn_k_b", "attn_v_b") if absorbed else ("attn_kv_b",)
    moe = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_inp",
           "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp")
    assert {f"blk.0.{n}.weight" for n in (q, *kv, "attn_kv_a_mqa", "attn_output")} <= names
    assert {f"blk.1.{n}.weight" for n in moe} <= names
    # V3's router bias (e_score_correction_bias), 1-D: nothing to sign.
    assert ("blk.1.exp_probs_b.bias" in names) == (model_type == "deepseek_v3")
    assert ("blk.0.attn_q_a.weight" in names) == (c.q_lora_rank is not None)
    hf, gg = _sign(tmp_path / "hf"), _sign(path)
    assert gg.n_layers == hf.n_layers == c.num_hidden_layers
    assert gg.missing_layers() == {} and gg.undefined_matrices() == {}
    assert hf.missing_layers() == {} and hf.undefined_matrices() == {}
    assert not np.isnan(gg.values).any()
    np.testing.assert_allclose(gg.values, hf.values, rtol=RTOL)
    # Not vacuous: k and v are different matrices.
    assert not np.allclose(gg.values[1], gg.values[2], rtol=RTOL)


def test_per_head_alphas_would_differ(tmp_path):
    """attn_k_b read as a stack of experts (per-head alphas averaged) would
    not give the k of the checkpoint: the head stack is one matrix."""
    model = write_tiny_checkpoint("deepseek_v3", tmp_path / "hf", **DEEPSEEK)
    from sklearn_specsig.architectures import resolve_architecture
    c = model.config
    path, names = _convert(tmp_path / "hf", tmp_path / "m.gguf", c, True)
    reader = gguf.GGUFReader(path)
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
    assert shapes["blk.0.attn_k_b.weight"] == (c.num_attention_heads, c.kv_lora_rank,
                                                c.qk_nope_head_dim)
    assert shapes["blk.0.attn_v_b.weight"] == (c.num_attention_heads, c.v_head_dim,
                                                c.kv_lora_rank)
    arch = resolve_architecture(list(shapes), {"model_type": "deepseek_v2"}, shapes)
    plan = arch.plans["blk.0.attn_k_b.weight"]
    assert plan.parts == (("k", 0, None),)


def test_perturb_refuses_a_per_head_stack(tmp_path):
    # The signature's k of attn_k_b is assembled from every head: perturb
    # cannot edit it in place and says so instead of writing a wrong copy.
    from sklearn_specsig.errors import CheckpointFormatError
    from sklearn_specsig.perturb import prune_magnitude

    model = write_tiny_checkpoint("deepseek_v3", tmp_path / "hf", **DEEPSEEK)
    path, _ = _convert(tmp_path / "hf", tmp_path / "m.gguf", model.config, True)
    with pytest.raises(CheckpointFormatError, match="per-head stack"):
        prune_magnitude(path, tmp_path / "pruned", sparsity=0.5)
