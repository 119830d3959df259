"""The built-in naming schemes (a table of plain data).

Each entry of :data:`BUILTIN_SCHEMES` is the keyword arguments of one
:class:`sklearn_specsig.architectures.NamingScheme`; the order is the
registration order, which breaks ties between schemes that map the same
number of tensors when ``config["model_type"]`` does not decide.  Only the
tensors listed in ``modules`` count: embeddings, ``lm_head``, norms, biases,
routers and vision towers are skipped simply by not being listed.

Names follow the checkpoints as saved by ``transformers`` (``save_pretrained``)
and by llama.cpp's converter (GGUF).
"""

# Attention and dense MLP of the Llama family, reused by every decoder whose
# blocks are laid out like LlamaDecoderLayer.
_LLAMA_ATTENTION = {
    "self_attn.q_proj.weight": "q",
    "self_attn.k_proj.weight": "k",
    "self_attn.v_proj.weight": "v",
    "self_attn.o_proj.weight": "o",
}
_LLAMA_MLP = {
    "mlp.gate_proj.weight": "gate",
    "mlp.up_proj.weight": "up",
    "mlp.down_proj.weight": "down",
}
# Decoder blocks live under ``model.layers`` in causal-LM checkpoints, under
# ``layers`` when the bare model was saved, and under the language model of a
# multimodal wrapper (Gemma 3, Llava, Llama 4) whose vision tower uses other
# prefixes and is therefore never matched.
_DECODER_LAYERS = (
    r"^(?:model\.|model\.language_model\.|language_model\.model\.|language_model\.)?"
    r"layers\.(?P<layer>\d+)\."
)
# transformers >= 5 stores all routed experts of a layer in two 3-D
# parameters, (E, 2 * I, hidden) and (E, hidden, I), gate rows first.
_STACKED_EXPERTS = {
    "mlp.experts.gate_up_proj": "gate_up",
    "mlp.experts.down_proj": "down",
}

BUILTIN_SCHEMES = (
    {
        "name": "llama",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {**_LLAMA_ATTENTION, **_LLAMA_MLP},
        "model_types": (
            "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3",
            "gemma3_text", "olmo", "olmo2", "granite", "cohere", "smollm3",
        ),
    },
    {
        "name": "phi3",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {
            "self_attn.qkv_proj.weight": "qkv",
            "self_attn.o_proj.weight": "o",
            "mlp.gate_up_proj.weight": "gate_up",
            "mlp.down_proj.weight": "down",
        },
        "model_types": ("phi3",),
    },
    {
        "name": "gpt2",
        "layer_pattern": r"^(?:transformer\.)?h\.(?P<layer>\d+)\.",
        "modules": {
            "attn.c_attn.weight": "qkv_equal",
            "attn.c_proj.weight": "o",
            "mlp.c_fc.weight": "up",
            "mlp.c_proj.weight": "down",
        },
        # Conv1D stores (in, out).
        "transposed": True,
        "model_types": ("gpt2",),
    },
    {
        "name": "gpt_neox",
        "layer_pattern": r"^(?:gpt_neox\.)?layers\.(?P<layer>\d+)\.",
        "modules": {
            "attention.query_key_value.weight": "qkv_interleaved",
            "attention.dense.weight": "o",
            "mlp.dense_h_to_4h.weight": "up",
            "mlp.dense_4h_to_h.weight": "down",
        },
        "model_types": ("gpt_neox",),
    },
    {
        "name": "bert",
        # One optional model prefix (bert., roberta., electra.); the suffixes
        # below are matched whole, so ``output.dense`` (down) never swallows
        # ``attention.output.dense`` (o).
        "layer_pattern": r"^(?:\w+\.)?encoder\.layer\.(?P<layer>\d+)\.",
        "modules": {
            "attention.self.query.weight": "q",
            "attention.self.key.weight": "k",
            "attention.self.value.weight": "v",
            "attention.output.dense.weight": "o",
            "intermediate.dense.weight": "up",
            "output.dense.weight": "down",
        },
        "model_types": ("bert", "roberta", "xlm-roberta", "electra"),
    },
    {
        "name": "gguf",
        "layer_pattern": r"^blk\.(?P<layer>\d+)\.",
        "modules": {
            "attn_q.weight": "q",
            "attn_k.weight": "k",
            "attn_v.weight": "v",
            # llama.cpp's converter writes every fused QKV as [q; k; v] rows,
            # NeoX and Bloom included (it undoes their per-head interleave).
            "attn_qkv.weight": "qkv",
            "attn_output.weight": "o",
            "ffn_gate.weight": "gate",
            # Phi-3 and ChatGLM keep [gate; up] fused in ffn_up.
            "ffn_up.weight": "up_or_gate_up",
            "ffn_down.weight": "down",
            # Older files keep one 2-D tensor per expert.
            "ffn_gate.{expert}.weight": "gate",
            "ffn_up.{expert}.weight": "up",
            "ffn_down.{expert}.weight": "down",
            "ffn_gate_exps.weight": "gate",
            "ffn_up_exps.weight": "up",
            "ffn_down_exps.weight": "down",
            "ffn_gate_shexp.weight": "gate",
            "ffn_up_shexp.weight": "up",
            "ffn_down_shexp.weight": "down",
        },
        "shared": ("ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight"),
    },
    {
        "name": "mixtral",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {
            **_LLAMA_ATTENTION,
            "block_sparse_moe.experts.{expert}.w1.weight": "gate",
            "block_sparse_moe.experts.{expert}.w2.weight": "down",
            "block_sparse_moe.experts.{expert}.w3.weight": "up",
            **_STACKED_EXPERTS,
        },
        "model_types": ("mixtral", "phimoe", "minimax"),
    },
    {
        "name": "qwen2_moe",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {
            **_LLAMA_ATTENTION,
            # Dense layers (``mlp_only_layers``, DeepSeek's first layers).
            **_LLAMA_MLP,
            "mlp.experts.{expert}.gate_proj.weight": "gate",
            "mlp.experts.{expert}.up_proj.weight": "up",
            "mlp.experts.{expert}.down_proj.weight": "down",
            "mlp.shared_expert.gate_proj.weight": "gate",
            "mlp.shared_expert.up_proj.weight": "up",
            "mlp.shared_expert.down_proj.weight": "down",
            "mlp.shared_experts.gate_proj.weight": "gate",
            "mlp.shared_experts.up_proj.weight": "up",
            "mlp.shared_experts.down_proj.weight": "down",
            **_STACKED_EXPERTS,
        },
        "shared": tuple(
            f"mlp.shared_{kind}.{proj}_proj.weight"
            for kind in ("expert", "experts")
            for proj in ("gate", "up", "down")
        ),
        "model_types": ("qwen2_moe", "qwen3_moe", "olmoe", "deepseek", "qwen3_vl_moe"),
    },
    {
        "name": "llama4",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {
            **_LLAMA_ATTENTION,
            "feed_forward.gate_proj.weight": "gate",
            "feed_forward.up_proj.weight": "up",
            "feed_forward.down_proj.weight": "down",
            "feed_forward.experts.gate_up_proj": "gate_up",
            "feed_forward.experts.down_proj": "down",
            "feed_forward.shared_expert.gate_proj.weight": "gate",
            "feed_forward.shared_expert.up_proj.weight": "up",
            "feed_forward.shared_expert.down_proj.weight": "down",
        },
        # Llama 4 stores its expert stacks (E, in, out).
        "transposed": ("feed_forward.experts.gate_up_proj", "feed_forward.experts.down_proj"),
        "shared": tuple(
            f"feed_forward.shared_expert.{proj}_proj.weight" for proj in ("gate", "up", "down")
        ),
        "model_types": ("llama4", "llama4_text"),
    },
    {
        "name": "gpt_oss",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {
            **_LLAMA_ATTENTION,
            # gate and up alternate row by row: gate_up[..., ::2], [..., 1::2].
            "mlp.experts.gate_up_proj": "gate_up_interleaved",
            "mlp.experts.down_proj": "down",
        },
        "transposed": ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"),
        "model_types": ("gpt_oss",),
    },
)
