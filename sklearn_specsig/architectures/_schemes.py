"""The built-in naming schemes (a table of plain data).

Each entry of :data:`BUILTIN_SCHEMES` is the keyword arguments of one
:class:`sklearn_specsig.architectures.NamingScheme`; the order is the
registration order, which breaks ties between schemes that map the same
number of tensors when ``config["model_type"]`` does not decide.  Only the
tensors listed in ``modules`` count.  Outside the blocks (embeddings,
``lm_head``, vision towers) and 1-D tensors (norms, biases) are skipped
simply by not being listed; a block weight of two or more dimensions that
has no role (a router) must match the entry's ``skip`` patterns, or the
checkpoint is refused (``architectures/_accounting.py``).

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
        # Cohere's per-head query/key LayerNorms (use_qk_norm) are stored
        # (heads, head_dim): norms, not projections.
        "skip": (r"self_attn\.[qk]_norm\.weight",),
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
        # Phi-3 blocks hold nothing else of two or more dimensions.
        "skip": (),
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
        # The causal-mask buffers (1, 1, n_positions, n_positions) and the
        # scalar fill value that older checkpoints persist; no weights.
        "skip": (r"attn\.bias", r"attn\.masked_bias"),
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
        # The causal-mask buffers that Pythia-era checkpoints persist.
        "skip": (r"attention\.bias", r"attention\.masked_bias"),
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
        # The learned relative-position table (position_embedding_type
        # "relative_key" / "relative_key_query"): an embedding, no projection.
        "skip": (r"attention\.self\.distance_embedding\.weight",),
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
            # DeepSeek-V2/V3 (deepseek2): multi-head latent attention, as in
            # the deepseek_v2 scheme below.  q is attn_q_b (or attn_q without
            # a query latent); k, v are attn_kv_b's per-head [k_nope; v] rows
            # (older converters) or llama.cpp's per-head split of it.
            "attn_q_b.weight": "q",
            "attn_kv_b.weight": "kv_mla",
            "attn_k_b.weight": "k_mla_heads",
            "attn_v_b.weight": "v_mla_heads",
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
        "skip": (
            # The MoE router (E, hidden) and the shared expert's sigmoid gate.
            r"ffn_gate_inp\.weight", r"ffn_gate_inp_shexp\.weight",
            # GPT-OSS's per-expert biases, (E, out): biases, stacked.
            r"ffn_(?:gate|up|down)_exps\.bias",
            # Command R+'s per-head query/key norms, (head_dim, heads).
            r"attn_[qk]_norm\.weight",
            # DeepSeek's latent down-projections (see the deepseek_v2 scheme).
            r"attn_q_a\.weight", r"attn_kv_a_mqa\.weight",
        ),
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
        # The router (E, hidden), as the hub's checkpoints name it and as
        # transformers >= 5 saves Mixtral / MiniMax and PhiMoE.
        "skip": (r"block_sparse_moe\.gate\.weight", r"mlp\.gate\.weight", r"mlp\.router\.weight"),
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
        # The router (E, hidden) and Qwen's sigmoid gate of the shared expert
        # (1, hidden) pick experts; they transform no hidden state.
        "skip": (r"mlp\.gate\.weight", r"mlp\.shared_expert_gate\.weight"),
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
        # The router (E, hidden).
        "skip": (r"feed_forward\.router\.weight",),
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
        # The router (E, hidden) and the experts' biases, stacked (E, out).
        # The hub's MXFP4 files (``*_blocks``, ``*_scales``) stay unaccounted:
        # their experts are packed integers that this scheme cannot sign.
        "skip": (r"mlp\.router\.weight", r"mlp\.experts\.(?:gate_up_proj|down_proj)_bias"),
    },
    {
        "name": "bloom",
        "layer_pattern": r"^(?:transformer\.)?h\.(?P<layer>\d+)\.",
        "modules": {
            # modeling_bloom ``_reshape``: fused rows are (heads, 3, head_dim).
            # GGUF files of Bloom and Falcon are already [q; k; v] (gguf scheme).
            "self_attention.query_key_value.weight": "qkv_interleaved",
            "self_attention.dense.weight": "o",
            "mlp.dense_h_to_4h.weight": "up",
            "mlp.dense_4h_to_h.weight": "down",
        },
        "model_types": ("bloom",),
        "skip": (),
    },
    {
        "name": "falcon",
        "layer_pattern": r"^(?:transformer\.)?h\.(?P<layer>\d+)\.",
        "modules": {
            # The same names as Bloom; the config picks one of three fused
            # layouts (``qkv_falcon`` in _layout.py).
            "self_attention.query_key_value.weight": "qkv_falcon",
            "self_attention.dense.weight": "o",
            "mlp.dense_h_to_4h.weight": "up",
            "mlp.dense_4h_to_h.weight": "down",
        },
        # RefinedWeb / RefinedWebModel: Falcon's remote-code configs.
        "model_types": ("falcon", "RefinedWeb", "RefinedWebModel"),
        "skip": (),
    },
    {
        "name": "gpt_bigcode",
        # GPT-2's names, but nn.Linear (out, in) and a fused attention whose
        # layout depends on multi_query (``qkv_multi_query`` in _layout.py).
        "layer_pattern": r"^(?:transformer\.)?h\.(?P<layer>\d+)\.",
        "modules": {
            "attn.c_attn.weight": "qkv_multi_query",
            "attn.c_proj.weight": "o",
            "mlp.c_fc.weight": "up",
            "mlp.c_proj.weight": "down",
        },
        "model_types": ("gpt_bigcode",),
        "skip": (),
    },
    {
        "name": "phi",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {
            **{f"self_attn.{r}_proj.weight": r for r in "qkv"},
            "self_attn.dense.weight": "o",
            "mlp.fc1.weight": "up",
            "mlp.fc2.weight": "down",
        },
        "model_types": ("phi",),
        "skip": (),
    },
    {
        "name": "starcoder2",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {**_LLAMA_ATTENTION, "mlp.c_fc.weight": "up", "mlp.c_proj.weight": "down"},
        "model_types": ("starcoder2",),
        "skip": (),
    },
    {
        "name": "opt",
        # facebook/opt-* files were saved from OPTModel: no ``model.`` prefix.
        "layer_pattern": r"^(?:model\.)?decoder\.layers\.(?P<layer>\d+)\.",
        "modules": {
            **{f"self_attn.{r}_proj.weight": r for r in "qkv"},
            "self_attn.out_proj.weight": "o",
            "fc1.weight": "up",
            "fc2.weight": "down",
        },
        "model_types": ("opt",),
        "skip": (),
    },
    {
        "name": "gptj",
        "layer_pattern": r"^(?:transformer\.)?h\.(?P<layer>\d+)\.",
        "modules": {
            **{f"attn.{r}_proj.weight": r for r in "qkv"},
            "attn.out_proj.weight": "o",
            "mlp.fc_in.weight": "up",
            "mlp.fc_out.weight": "down",
        },
        "model_types": ("gptj",),
        # The causal mask (1, 1, n_positions, n_positions), saved per block by
        # older transformers (EleutherAI/gpt-j-6b), and its scalar companion.
        "skip": (r"attn\.bias", r"attn\.masked_bias"),
    },
    {
        "name": "mpt",
        "layer_pattern": r"^(?:transformer\.)?blocks\.(?P<layer>\d+)\.",
        "modules": {
            # [q; k; v], key-value heads from attn_config (``qkv_mpt``).
            "attn.Wqkv.weight": "qkv_mpt",
            # llm-foundry with fused_qkv=False, and its GLU feed-forward
            # (ffn_type "mptglu"); transformers' MptForCausalLM has neither.
            "attn.Wq.weight": "q",
            "attn.Wk.weight": "k",
            "attn.Wv.weight": "v",
            "attn.out_proj.weight": "o",
            "ffn.gate_proj.weight": "gate",
            "ffn.up_proj.weight": "up",
            "ffn.down_proj.weight": "down",
        },
        "model_types": ("mpt",),
        "skip": (),
    },
    {
        "name": "granitemoe",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {
            **_LLAMA_ATTENTION,
            # As saved (hub and save_pretrained): expert stacks (E, 2 * I,
            # hidden), [gate; up] (``.chunk(2)``, gate first), and (E, hidden, I).
            "block_sparse_moe.input_linear.weight": "gate_up",
            "block_sparse_moe.output_linear.weight": "down",
            # The same stacks under transformers >= 5's in-memory names.
            "block_sparse_moe.experts.gate_up_proj": "gate_up",
            "block_sparse_moe.experts.down_proj": "down",
            # GraniteMoeShared's always-on expert, [gate; up] as well.
            "shared_mlp.input_linear.weight": "gate_up",
            "shared_mlp.output_linear.weight": "down",
        },
        "shared": ("shared_mlp.input_linear.weight", "shared_mlp.output_linear.weight"),
        "model_types": ("granitemoe", "granitemoeshared"),
        # The router (E, hidden) picks experts; it transforms no hidden state.
        "skip": (r"block_sparse_moe\.router\.(?:layer\.)?weight",),
    },
    {
        "name": "dbrx",
        "layer_pattern": r"^(?:transformer\.)?blocks\.(?P<layer>\d+)\.",
        "modules": {
            # [q; k; v] with attn_config.kv_n_heads key-value heads.
            "norm_attn_norm.attn.Wqkv.weight": "qkv",
            "norm_attn_norm.attn.out_proj.weight": "o",
            # Each (E * ffn_hidden_size, d_model), experts along rows
            # (modeling_dbrx: ``w1.view(-1, ffn_hidden_size, hidden)[e]``);
            # the model computes ``x @ w1.T``, ``x @ v1.T`` and ``h @ w2``, so
            # w1 is gate, v1 up, and w2's blocks are down stored (in, out).
            "ffn.experts.mlp.w1": "gate_experts",
            "ffn.experts.mlp.v1": "up_experts",
            "ffn.experts.mlp.w2": "down_experts",
        },
        "model_types": ("dbrx",),
        # The router (E, d_model) picks experts; it transforms no hidden state.
        "skip": (r"ffn\.router\.layer\.weight",),
    },
    {
        # Multi-head latent attention (DeepSeek-V2, V2-Lite, V3, R1).  The
        # per-head q, k and v are the up-projections out of the latents:
        #   q = q_proj (no query latent, q_lora_rank null: V2-Lite), else
        #       q_b_proj (q_lora_rank -> heads * (nope + rope)); q_a_proj,
        #       the shared down-projection into the query latent, is skipped,
        #       as kv_a_proj_with_mqa (hidden -> kv latent + the one shared
        #       rope key) is: both compress, neither makes a head's q, k or v;
        #   k, v = kv_b_proj, per head [k_nope; v] rows (``kv_mla``).
        # The end-to-end hidden -> k map has rank <= kv_lora_rank, below half
        # of min(out, in), so its PL_Alpha_Hill would be undefined (x_min = 0);
        # kv_b_proj alone is (heads * dim, kv_lora_rank), full rank, N =
        # kv_lora_rank, and its alpha is defined.  Layers below
        # first_k_dense_replace are dense; the others have routed experts
        # (one 2-D tensor each on the hub, 3-D stacks in transformers) and
        # shared experts, numbered after the routed ones.  Trailing
        # multi-token-prediction blocks (index >= num_hidden_layers) are not
        # part of the signature.  GGUF files (deepseek2) sign under the
        # gguf scheme (attn_q_b, attn_kv_b or attn_k_b / attn_v_b).
        "name": "deepseek_v2",
        "layer_pattern": _DECODER_LAYERS,
        "modules": {
            "self_attn.q_proj.weight": "q",
            "self_attn.q_b_proj.weight": "q",
            "self_attn.kv_b_proj.weight": "kv_mla",
            "self_attn.o_proj.weight": "o",
            **_LLAMA_MLP,
            "mlp.experts.{expert}.gate_proj.weight": "gate",
            "mlp.experts.{expert}.up_proj.weight": "up",
            "mlp.experts.{expert}.down_proj.weight": "down",
            **_STACKED_EXPERTS,
            "mlp.shared_experts.gate_proj.weight": "gate",
            "mlp.shared_experts.up_proj.weight": "up",
            "mlp.shared_experts.down_proj.weight": "down",
        },
        "shared": tuple(f"mlp.shared_experts.{proj}_proj.weight" for proj in ("gate", "up", "down")),
        "model_types": ("deepseek_v2", "deepseek_v3"),
        # The latent down-projections (see above) and the router (E, hidden).
        "skip": (r"self_attn\.q_a_proj\.weight", r"self_attn\.kv_a_proj_with_mqa\.weight",
                 r"mlp\.gate\.weight"),
    },
)
