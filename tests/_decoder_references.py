"""Reference matrices of fused decoders, written from the modelling code.

Each function takes a float64 ``state_dict`` (name -> numpy array) and a
layer index and returns ``{role: [matrices]}``, cutting the fused tensors
exactly as ``transformers/models/<arch>/modeling_<arch>.py`` cuts their
outputs (the line it mirrors is quoted).  They know nothing of the library's
naming schemes, so the table test in ``test_architectures_transformers.py``
checks the schemes against them; ``test_fused_layouts_transformers.py``
checks them in turn against the q / k / v the attention's forward forms.
"""

from types import SimpleNamespace


def rows(w, sizes):
    """Contiguous row blocks of ``w`` of the given sizes."""
    out, start = [], 0
    for size in sizes:
        out.append(w[start:start + size])
        start += size
    assert start == w.shape[0], (start, w.shape)
    return out


def phi3(sd, layer, heads=4, kv_heads=2, head_dim=16):
    """Phi-3: ``qkv[..., :query_pos]``, then kv_heads * head_dim for k and v;
    ``gate, up = gate_up_proj(x).chunk(2, dim=-1)``."""
    p = f"model.layers.{layer}."
    q, k, v = rows(sd[p + "self_attn.qkv_proj.weight"],
                   [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim])
    gate, up = rows(sd[p + "mlp.gate_up_proj.weight"], [sd[p + "mlp.down_proj.weight"].shape[1]] * 2)
    return {"q": [q], "k": [k], "v": [v], "o": [sd[p + "self_attn.o_proj.weight"]],
            "gate": [gate], "up": [up], "down": [sd[p + "mlp.down_proj.weight"]]}


def _dense_block(sd, p, attention="self_attention"):
    return {"o": [sd[p + f"{attention}.dense.weight"]],
            "up": [sd[p + "mlp.dense_h_to_4h.weight"]],
            "down": [sd[p + "mlp.dense_4h_to_h.weight"]]}


def bloom(sd, layer, heads=4):
    """Bloom ``_reshape``: ``fused_qkv.view(b, s, num_heads, 3, head_dim)``,
    then ``[..., 0, :]`` / ``[..., 1, :]`` / ``[..., 2, :]``."""
    p = f"transformer.h.{layer}."
    w = sd[p + "self_attention.query_key_value.weight"]
    per_head = w.reshape(heads, 3, -1, w.shape[1])
    q, k, v = (per_head[:, i].reshape(-1, w.shape[1]) for i in range(3))
    return {"q": [q], "k": [k], "v": [v], **_dense_block(sd, p)}


def falcon_qkv(w, config):
    """q, k, v of Falcon's ``query_key_value`` as FalconAttention.forward forms them."""
    heads, cols = config.num_attention_heads, w.shape[1]
    head_dim = config.hidden_size // heads
    if config.new_decoder_architecture:
        # grouped = fused_qkv.view(..., num_kv_heads, -1, head_dim)
        # query = grouped[..., :-2, :].flatten(-3, -2); key, value = [..., -2, :], [..., -1, :]
        grouped = w.reshape(config.num_kv_heads, -1, head_dim, cols)
        return (grouped[:, :-2].reshape(-1, cols), grouped[:, -2].reshape(-1, cols),
                grouped[:, -1].reshape(-1, cols))
    per_head = w.reshape(-1, head_dim, cols)
    if config.multi_query:
        # fused_qkv.split([num_heads, 1, 1], dim=-2)
        return (per_head[:heads].reshape(-1, cols), per_head[heads], per_head[heads + 1])
    # fused_qkv.unflatten(-2, (num_heads, 3)).unbind(-2)
    per_head = per_head.reshape(heads, 3, head_dim, cols)
    return tuple(per_head[:, i].reshape(-1, cols) for i in range(3))


def falcon(config):
    """The reference function of a Falcon model of ``config``."""
    def expected(sd, layer):
        p = f"transformer.h.{layer}."
        q, k, v = falcon_qkv(sd[p + "self_attention.query_key_value.weight"], config)
        return {"q": [q], "k": [k], "v": [v], **_dense_block(sd, p)}
    return expected


#: The tiny Falcon of the table test: new decoder architecture (40B / 180B), GQA.
FALCON_NEW = {"new_decoder_architecture": True, "num_kv_heads": 2}
falcon_new = falcon(SimpleNamespace(num_attention_heads=4, hidden_size=64, multi_query=True,
                                    **FALCON_NEW))


def dbrx(sd, layer, heads=4, kv_heads=2, head_dim=16, ffn_hidden=32):
    """DBRX: ``Wqkv(x).split([hidden, kv * head_dim, kv * head_dim])``; experts
    ``w1.view(-1, ffn_hidden, hidden)[e]`` with ``x @ w1.T`` (gate),
    ``x @ v1.T`` (up) and ``h @ w2`` (so down is ``w2[e].T``)."""
    p = f"transformer.blocks.{layer}."
    q, k, v = rows(sd[p + "norm_attn_norm.attn.Wqkv.weight"],
                   [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim])

    def experts(name):
        w = sd[p + "ffn.experts.mlp." + name]
        return list(w.reshape(-1, ffn_hidden, w.shape[1]))

    return {"q": [q], "k": [k], "v": [v], "o": [sd[p + "norm_attn_norm.attn.out_proj.weight"]],
            "gate": experts("w1"), "up": experts("v1"), "down": [w.T for w in experts("w2")]}


def dbrx_overrides():
    """A tiny DBRX config: its attention and FFN settings are sub-configs.

    ``rope_theta`` is set on the attention config because DbrxAttention reads
    it there (transformers 5.25's DbrxAttentionConfig does not define it).
    """
    from transformers.models.dbrx.configuration_dbrx import (
        DbrxAttentionConfig,
        DbrxFFNConfig,
    )

    return {
        "n_layers": 3,
        "attn_config": DbrxAttentionConfig(kv_n_heads=2, rope_theta=10000.0),
        "ffn_config": DbrxFFNConfig(hidden_size=64, ffn_hidden_size=32, moe_num_experts=4,
                                 moe_top_k=2),
    }


def deepseek(sd, layer, heads=4, nope=16, v_dim=16, first_dense=1):
    """DeepSeek-V2/V3 (modeling_deepseek_v3): q is ``q_proj`` or ``q_b_proj``;
    ``kv_b_proj(kv).view(..., -1, nope + v_dim)`` then ``split([nope, v_dim])``
    gives k and v per head; layers from ``first_k_dense_replace`` on have
    stacked routed experts (``gate, up = linear(x, gate_up_proj[e]).chunk(2)``)
    and ``shared_experts``, an MLP."""
    p = f"model.layers.{layer}."
    q = sd.get(p + "self_attn.q_proj.weight")
    q = sd[p + "self_attn.q_b_proj.weight"] if q is None else q
    kv = sd[p + "self_attn.kv_b_proj.weight"]
    per_head = kv.reshape(heads, nope + v_dim, kv.shape[1])
    cells = {"q": [q], "k": [per_head[:, :nope].reshape(-1, kv.shape[1])],
             "v": [per_head[:, nope:].reshape(-1, kv.shape[1])],
             "o": [sd[p + "self_attn.o_proj.weight"]]}
    if layer < first_dense:
        return {**cells, **{role: [sd[p + f"mlp.{role}_proj.weight"]] for role in ("gate", "up", "down")}}
    stack, down = sd[p + "mlp.experts.gate_up_proj"], sd[p + "mlp.experts.down_proj"]
    half = stack.shape[1] // 2
    cells["gate"] = [w[:half] for w in stack] + [sd[p + "mlp.shared_experts.gate_proj.weight"]]
    cells["up"] = [w[half:] for w in stack] + [sd[p + "mlp.shared_experts.up_proj.weight"]]
    cells["down"] = list(down) + [sd[p + "mlp.shared_experts.down_proj.weight"]]
    return cells


#: As the published DeepSeek configs: every head has its own k and v
#: (num_key_value_heads = heads), and the rotary embedding (head_dim wide)
#: meets the qk_rope_head_dim part.
#: qk_nope_head_dim = 16 keeps the query width (heads * 24) off the hidden
#: size, as in every published MLA model: a q_b_proj of (hidden, q_lora_rank)
#: would be read (in, out) by the shape rule (same spectrum, other orientation).
DEEPSEEK = {"num_key_value_heads": 4, "head_dim": 8, "qk_nope_head_dim": 16}
