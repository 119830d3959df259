"""Every architecture ``transformers`` writes: a complete signature, exact.

One test per architecture: a tiny random checkpoint saved by the
architecture's own model class (``_transformers_factories``), signed, and
checked against the model's own ``state_dict``: every role the architecture
has is finite at every layer, the roles it lacks are NaN by design, and each
cell equals the float64 PL_Alpha_Hill of the matrices that the test itself
takes from the state dict (``expected``: written here from the modelling
code, independently of the library's naming schemes), averaged over experts.
"""

import _decoder_references as decoders2
import numpy as np
import pytest
from _transformers_factories import assert_column, state_dict64, write_tiny_checkpoint

from sklearn_specsig import compute_signature

pytest.importorskip("transformers")


def _llama_like(sd, layer, prefix="model.layers"):
    p = f"{prefix}.{layer}."
    return {
        "q": [sd[p + "self_attn.q_proj.weight"]],
        "k": [sd[p + "self_attn.k_proj.weight"]],
        "v": [sd[p + "self_attn.v_proj.weight"]],
        "o": [sd[p + "self_attn.o_proj.weight"]],
        "gate": [sd[p + "mlp.gate_proj.weight"]],
        "up": [sd[p + "mlp.up_proj.weight"]],
        "down": [sd[p + "mlp.down_proj.weight"]],
    }


def _split_rows(w, sizes):
    out, start = [], 0
    for size in sizes:
        out.append(w[start:start + size])
        start += size
    return out


def _gpt2(sd, layer):
    p = f"transformer.h.{layer}."
    # Conv1D stores (in, out): the matrices are the transposes.
    q, k, v = _split_rows(sd[p + "attn.c_attn.weight"].T, [64, 64, 64])
    return {"q": [q], "k": [k], "v": [v], "o": [sd[p + "attn.c_proj.weight"].T],
            "up": [sd[p + "mlp.c_fc.weight"].T], "down": [sd[p + "mlp.c_proj.weight"].T]}


def _gpt_bigcode(sd, layer):
    p = f"transformer.h.{layer}."
    # Multi-query attention: [q; k; v] rows of 64, 16 and 16 (one head).
    q, k, v = _split_rows(sd[p + "attn.c_attn.weight"], [64, 16, 16])
    return {"q": [q], "k": [k], "v": [v], "o": [sd[p + "attn.c_proj.weight"]],
            "up": [sd[p + "mlp.c_fc.weight"]], "down": [sd[p + "mlp.c_proj.weight"]]}


def _gpt_neox(sd, layer):
    p = f"gpt_neox.layers.{layer}."
    # query_key_value rows are (heads, 3, head_dim): interleaved per head.
    qkv = sd[p + "attention.query_key_value.weight"].reshape(4, 3, 16, 64)
    q, k, v = (qkv[:, i].reshape(64, 64) for i in range(3))
    return {"q": [q], "k": [k], "v": [v], "o": [sd[p + "attention.dense.weight"]],
            "up": [sd[p + "mlp.dense_h_to_4h.weight"]],
            "down": [sd[p + "mlp.dense_4h_to_h.weight"]]}


def _bert(sd, layer, prefix="bert.encoder.layer"):
    p = f"{prefix}.{layer}."
    return {"q": [sd[p + "attention.self.query.weight"]],
            "k": [sd[p + "attention.self.key.weight"]],
            "v": [sd[p + "attention.self.value.weight"]],
            "o": [sd[p + "attention.output.dense.weight"]],
            "up": [sd[p + "intermediate.dense.weight"]],
            "down": [sd[p + "output.dense.weight"]]}


def _moe(sd, layer, attention, experts, gate_up=True):
    """Llama attention and stacked experts (transformers >= 5 layout)."""
    p = f"model.layers.{layer}."
    cells = {role: [sd[p + key]] for role, key in attention.items()}
    stack = sd[p + experts + ".gate_up_proj"] if gate_up else None
    down = sd[p + experts + ".down_proj"]
    n_experts, rows = stack.shape[0], stack.shape[1] // 2
    cells["gate"] = [stack[e, :rows] for e in range(n_experts)]
    cells["up"] = [stack[e, rows:] for e in range(n_experts)]
    cells["down"] = [down[e] for e in range(n_experts)]
    return cells



def _qwen2_moe(sd, layer):
    """Stacked routed experts, then the shared expert as one more expert.

    modeling_qwen2_moe: ``gate, up = linear(x, gate_up_proj[e]).chunk(2)``
    and a dense ``shared_expert`` (its own intermediate size) added to the
    routed output; the scheme's ``shared`` rule numbers it after the routed
    experts, so every cell averages E + 1 matrices.
    """
    cells = _moe(sd, layer, _ATTENTION, "mlp.experts")
    p = f"model.layers.{layer}.mlp.shared_expert."
    for role in ("gate", "up", "down"):
        cells[role].append(sd[p + f"{role}_proj.weight"])
    return cells


def _named(sd, layer, prefix, names):
    """One matrix per role: ``names`` maps a role to its name in the block."""
    return {role: [sd[f"{prefix}.{layer}.{name}.weight"]] for role, name in names.items()}


_BERT_FFN = {"o": "attention.output.dense", "up": "intermediate.dense", "down": "output.dense"}


def _mpnet(sd, layer):
    # modeling_mpnet MPNetSelfAttention: q, k, v, o Linear layers.
    names = {r: f"attention.attn.{r}" for r in "qkvo"}
    return _named(sd, layer, "encoder.layer",
                  {**names, "up": "intermediate.dense", "down": "output.dense"})


def _deberta_v2(sd, layer):
    names = {r: f"attention.self.{n}_proj" for r, n in
             (("q", "query"), ("k", "key"), ("v", "value"))}
    return _named(sd, layer, "encoder.layer", {**names, **_BERT_FFN})


def _deberta(sd, layer):
    # modeling_deberta: transpose_for_scores(in_proj(x)).chunk(3, dim=-1), so
    # in_proj rows are (heads=4, 3, head_dim=16).
    cells = _named(sd, layer, "encoder.layer", _BERT_FFN)
    qkv = sd[f"encoder.layer.{layer}.attention.self.in_proj.weight"].reshape(4, 3, 16, 64)
    for i, role in enumerate("qkv"):
        cells[role] = [qkv[:, i].reshape(64, 64)]
    return cells


def _distilbert(sd, layer):
    names = {r: f"attention.{r}_lin" for r in "qkv"}
    return _named(sd, layer, "transformer.layer", {
        **names, "o": "attention.out_lin", "up": "ffn.lin1", "down": "ffn.lin2"})


def _modernbert(sd, layer):
    p = f"layers.{layer}."
    # qkv.view(..., 3, heads, head_dim): [q; k; v] thirds.
    q, k, v = _split_rows(sd[p + "attn.Wqkv.weight"], [64, 64, 64])
    # input, gate = Wi(x).chunk(2); Wo(act(input) * gate): the activated
    # first half plays Llama's gate_proj, the linear second half its up_proj.
    gate, up = _split_rows(sd[p + "mlp.Wi.weight"], [96, 96])
    return {"q": [q], "k": [k], "v": [v], "o": [sd[p + "attn.Wo.weight"]],
            "gate": [gate], "up": [up], "down": [sd[p + "mlp.Wo.weight"]]}


def _unfused(prefix, names):
    """One stored (out, in) matrix per role: ``names`` is role -> name in the block."""
    def cells(sd, layer):
        return {role: [sd[f"{prefix}.{layer}.{name}"]] for role, name in names.items()}
    return cells


def _mpt(sd, layer):
    p = f"transformer.blocks.{layer}."
    # MptAttention: ``Wqkv(x).chunk(3)``, multi-head only in transformers.
    q, k, v = _split_rows(sd[p + "attn.Wqkv.weight"], [64, 64, 64])
    return {"q": [q], "k": [k], "v": [v], "o": [sd[p + "attn.out_proj.weight"]],
            "up": [sd[p + "ffn.up_proj.weight"]], "down": [sd[p + "ffn.down_proj.weight"]]}

_ATTENTION = {r: f"self_attn.{r}_proj.weight" for r in "qkvo"}

#: model_type -> (config overrides, layer -> {role: [matrices]}).
ARCHITECTURES = {
    "llama": ({}, _llama_like),
    "mistral": ({}, _llama_like),
    "qwen2": ({}, _llama_like),
    "qwen3": ({}, _llama_like),
    "gemma": ({}, _llama_like),
    "gemma2": ({}, _llama_like),
    "gemma3_text": ({}, _llama_like),
    "stablelm": ({}, _llama_like),
    "olmo": ({}, _llama_like),
    "olmo2": ({}, _llama_like),
    "cohere": ({}, _llama_like),
    "granite": ({}, _llama_like),
    "gpt2": ({}, _gpt2),
    "gpt_bigcode": ({"multi_query": True}, _gpt_bigcode),
    "gpt_neox": ({}, _gpt_neox),
    "bert": ({}, _bert),
    "roberta": ({}, lambda sd, i: _bert(sd, i, "roberta.encoder.layer")),
    "xlm-roberta": ({}, lambda sd, i: _bert(sd, i, "roberta.encoder.layer")),
    "electra": ({}, lambda sd, i: _bert(sd, i, "electra.encoder.layer")),
    "mixtral": ({}, lambda sd, i: _moe(sd, i, _ATTENTION, "mlp.experts")),
    "qwen2_moe": ({}, _qwen2_moe),
    "qwen3_moe": ({}, lambda sd, i: _moe(sd, i, _ATTENTION, "mlp.experts")),
    "olmoe": ({}, lambda sd, i: _moe(sd, i, _ATTENTION, "mlp.experts")),
    # -- decoders added (1) --------------------------------------------------
    "phi": ({}, _unfused("model.layers", {
        "q": "self_attn.q_proj.weight", "k": "self_attn.k_proj.weight",
        "v": "self_attn.v_proj.weight", "o": "self_attn.dense.weight",
        "up": "mlp.fc1.weight", "down": "mlp.fc2.weight"})),
    "starcoder2": ({}, _unfused("model.layers", {
        **{r: f"self_attn.{r}_proj.weight" for r in "qkvo"},
        "up": "mlp.c_fc.weight", "down": "mlp.c_proj.weight"})),
    "opt": ({}, _unfused("model.decoder.layers", {
        **{r: f"self_attn.{r}_proj.weight" for r in "qkv"}, "o": "self_attn.out_proj.weight",
        "up": "fc1.weight", "down": "fc2.weight"})),
    "gptj": ({}, _unfused("transformer.h", {
        **{r: f"attn.{r}_proj.weight" for r in "qkv"}, "o": "attn.out_proj.weight",
        "up": "mlp.fc_in.weight", "down": "mlp.fc_out.weight"})),
    # MPT's config spells the depth n_layers, absent from the factory's SMALL.
    "mpt": ({"n_layers": 3}, _mpt),
    "granitemoe": ({}, lambda sd, i: _moe(sd, i, _ATTENTION, "block_sparse_moe.experts")),
    # -- decoders added (2) --------------------------------------------------
    # Phi-3's default pad / eos ids (32000) lie outside the tiny vocabulary.
    "phi3": ({"pad_token_id": 0, "eos_token_id": 0}, decoders2.phi3),
    "bloom": ({}, decoders2.bloom),
    "falcon": (decoders2.FALCON_NEW, decoders2.falcon_new),  # other layouts: test_fused_layouts_*
    "dbrx": (decoders2.dbrx_overrides(), decoders2.dbrx),
    # V3 with a query latent (q_b_proj); V2 without one (q_proj, as V2-Lite).
    "deepseek_v3": (decoders2.DEEPSEEK, decoders2.deepseek),
    "deepseek_v2": ({**decoders2.DEEPSEEK, "q_lora_rank": None}, decoders2.deepseek),
    # -- encoders added ------------------------------------------------------
    "mpnet": ({}, _mpnet),
    # Relative attention with unshared position projections: pos_key_proj and
    # pos_query_proj exist and must be skipped, not mistaken for q / k.
    "deberta-v2": ({"relative_attention": True, "pos_att_type": ["p2c", "c2p"],
                    "share_att_key": False}, _deberta_v2),
    "deberta": ({"relative_attention": True, "pos_att_type": ["p2c", "c2p"],
                 "talking_head": True}, _deberta),
    "distilbert": ({"n_layers": 3}, _distilbert),
    # ModernBERT's default special-token ids (50281..) lie outside the tiny vocabulary.
    "modernbert": ({"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
                    "cls_token_id": 2, "sep_token_id": 1}, _modernbert),
}



@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_complete_signature_equal_to_a_float64_reference(model_type, tmp_path):
    overrides, expected = ARCHITECTURES[model_type]
    model = write_tiny_checkpoint(model_type, tmp_path, **overrides)
    sig = compute_signature(tmp_path, cache=None, progress=False)
    n_layers = model.config.num_hidden_layers
    assert sig.n_layers == n_layers
    assert sig.missing_layers() == {}
    assert sig.undefined_matrices() == {}
    if expected is None:
        assert np.isfinite(sig.values).all()
        return
    sd = state_dict64(model)
    max_err = 0.0
    for layer in range(n_layers):
        cells = expected(sd, layer)
        max_err = max(max_err, assert_column(sig, layer, cells, model_type))
    print(f"{model_type}: roles {sorted(cells)} layers {n_layers} max rel err {max_err:.1e}")
