"""Built-in naming schemes of encoders and encoder-decoders (a table of plain data).

The same kind of entries as ``_schemes.BUILTIN_SCHEMES`` (keyword arguments
of :class:`~sklearn_specsig.architectures.NamingScheme`), registered after
them: BERT-like encoders whose blocks name their matrices differently
(MPNet, DeBERTa, DistilBERT, ModernBERT), and T5, whose encoder and decoder
blocks share one depth axis (``stacks``).  Each entry says, from the
modelling code of ``transformers``, which stored matrix plays which role.
"""

ENCODER_SCHEMES = (
    {
        "name": "mpnet",
        # mpnet.encoder.layer.N (MPNetForMaskedLM) or encoder.layer.N (bare).
        # The relative-position table (encoder.relative_attention_bias) sits
        # outside the blocks, once per encoder.
        "layer_pattern": r"^(?:\w+\.)?encoder\.layer\.(?P<layer>\d+)\.",
        "modules": {
            "attention.attn.q.weight": "q",
            "attention.attn.k.weight": "k",
            "attention.attn.v.weight": "v",
            "attention.attn.o.weight": "o",
            "intermediate.dense.weight": "up",
            "output.dense.weight": "down",
        },
        "model_types": ("mpnet",),
        "skip": (),
    },
    {
        "name": "deberta",
        "layer_pattern": r"^(?:\w+\.)?encoder\.layer\.(?P<layer>\d+)\.",
        "modules": {
            # DeBERTa-v2/v3: separate projections.
            "attention.self.query_proj.weight": "q",
            "attention.self.key_proj.weight": "k",
            "attention.self.value_proj.weight": "v",
            # DeBERTa (v1): ``transpose_for_scores(in_proj(x)).chunk(3, -1)``
            # cuts each head's rows into q, k, v: (heads, 3, head_dim) rows.
            "attention.self.in_proj.weight": "qkv_interleaved",
            "attention.output.dense.weight": "o",
            "intermediate.dense.weight": "up",
            "output.dense.weight": "down",
        },
        "model_types": ("deberta", "deberta-v2"),
        # Projections of the relative-position embeddings (not of the hidden
        # state) when share_att_key is false (c2p: pos_key_proj / pos_proj,
        # p2c: pos_query_proj / pos_q_proj), and v1's talking-head mixers
        # (heads, heads).
        "skip": (
            r"attention\.self\.pos_(?:key_|query_|q_)?proj\.weight",
            r"attention\.self\.head_(?:logits|weights)_proj\.weight",
        ),
    },
    {
        "name": "distilbert",
        "layer_pattern": r"^(?:\w+\.)?transformer\.layer\.(?P<layer>\d+)\.",
        "modules": {
            "attention.q_lin.weight": "q",
            "attention.k_lin.weight": "k",
            "attention.v_lin.weight": "v",
            "attention.out_lin.weight": "o",
            "ffn.lin1.weight": "up",
            "ffn.lin2.weight": "down",
        },
        "model_types": ("distilbert",),
        "skip": (),
    },
    {
        "name": "modernbert",
        # model.layers.N (ModernBertForMaskedLM) or layers.N (bare).
        "layer_pattern": r"^(?:model\.)?layers\.(?P<layer>\d+)\.",
        "modules": {
            # ``qkv.view(..., 3, heads, head_dim)``: [q; k; v] thirds (MHA).
            "attn.Wqkv.weight": "qkv_equal",
            "attn.Wo.weight": "o",
            # ``input, gate = Wi(x).chunk(2)``, then ``Wo(act(input) * gate)``:
            # the first half is the activated branch, the role Llama calls
            # gate_proj (``act(gate_proj(x)) * up_proj(x)``), the second the
            # linear one, Llama's up_proj.  Roles follow the function, not
            # ModernBERT's variable names: Wi is [gate; up].
            "mlp.Wi.weight": "gate_up",
            "mlp.Wo.weight": "down",
        },
        "model_types": ("modernbert",),
        "skip": (),
    },
    {
        "name": "t5",
        # One depth axis: the encoder's blocks, then the decoder's (``stacks``).
        # T5Model / T5ForConditionalGeneration save ``encoder.block.N`` and
        # ``decoder.block.N``; T5EncoderModel the encoder only.
        "layer_pattern": r"^(?P<stack>encoder|decoder)\.block\.(?P<layer>\d+)\.",
        "modules": {
            **{f"layer.0.SelfAttention.{r}.weight": r for r in "qkvo"},
            # The feed-forward is layer.1 of an encoder block and layer.2 of
            # a decoder block (after the cross-attention).  T5 v1.0: ``wo(act(
            # wi(x)))``; T5 v1.1, mT5, Flan-T5: ``wo(act(wi_0(x)) * wi_1(x))``,
            # wi_0 the activated branch (Llama's gate_proj), wi_1 the linear one.
            **{f"layer.{i}.DenseReluDense.{name}.weight": role
               for i in (1, 2)
               for name, role in (("wi", "up"), ("wi_0", "gate"), ("wi_1", "up"),
                                  ("wo", "down"))},
        },
        "stacks": ("encoder", "decoder"),
        "model_types": ("t5", "mt5", "umt5"),
        "skip": (
            # (buckets, heads): a learned bias added to attention scores.
            r"layer\.0\.SelfAttention\.relative_attention_bias\.weight",
            # A decoder block's cross-attention: its keys and values read the
            # encoder's output, not the block's own stream.  A signature cell
            # holds one attention per block, so the decoder's cells hold its
            # self-attention, like the encoder's and a decoder-only model's.
            r"layer\.1\.EncDecAttention\.[qkvo]\.weight",
        ),
    },
    {
        "name": "t5_gguf",
        # llama.cpp's names for the same blocks (convert_hf_to_gguf's T5Model,
        # gguf-py's tensor map): the roles and decisions of the t5 scheme.
        "layer_pattern": r"^(?P<stack>enc|dec)\.blk\.(?P<layer>\d+)\.",
        "modules": {
            "attn_q.weight": "q",
            "attn_k.weight": "k",
            "attn_v.weight": "v",
            "attn_o.weight": "o",
            "ffn_gate.weight": "gate",  # wi_0
            "ffn_up.weight": "up",  # wi or wi_1
            "ffn_down.weight": "down",
        },
        "stacks": ("enc", "dec"),
        "model_types": ("t5", "t5encoder"),
        "skip": (
            r"attn_rel_b\.weight",
            r"cross_attn_[qkvo]\.weight",
            r"cross_attn_rel_b\.weight",
        ),
    },
)
