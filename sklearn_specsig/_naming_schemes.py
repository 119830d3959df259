"""Built-in naming schemes, fused-split rules and config-key aliases (private).

Each entry of :data:`BUILTIN_SCHEMES` is the keyword arguments of one
:class:`sklearn_specsig.architectures.NamingScheme`; the order is the
registration order, which breaks ties between schemes that map the same
number of tensors when ``config["model_type"]`` does not decide.  Only the
tensors listed in ``modules`` count: embeddings, ``lm_head``, norms, biases,
routers and vision towers are skipped simply by not being listed.

Names follow the checkpoints as saved by ``transformers`` (``save_pretrained``)
and by llama.cpp's converter (GGUF).
"""

import re

from .errors import ConfigError

ROLES = ("q", "k", "v", "o", "gate", "up", "down")

# Fused tensors: rule name -> the roles it holds, in row order.
SPLIT_RULES = {
    "qkv": ("q", "k", "v"),
    "qkv_equal": ("q", "k", "v"),
    "qkv_interleaved": ("q", "k", "v"),
    "gate_up": ("gate", "up"),
    "gate_up_interleaved": ("gate", "up"),
    "up_or_gate_up": ("gate", "up"),
}

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

# Config keys that mean the same thing across families: the config.json
# spellings, then the GGUF metadata key (looked up under the value of
# ``general.architecture``, e.g. ``llama.attention.head_count``).
CONFIG_ALIASES = {
    "num_heads": (("num_attention_heads", "n_head", "num_heads", "n_heads"), "attention.head_count"),
    "num_kv_heads": (
        ("num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num"),
        "attention.head_count_kv",
    ),
    "head_dim": (("head_dim",), "attention.key_length"),
    "hidden_size": (("hidden_size", "n_embd", "n_embed", "d_model"), "embedding_length"),
    "intermediate_size": (("intermediate_size", "n_inner", "ffn_dim"), "feed_forward_length"),
    "num_layers": (("num_hidden_layers", "n_layer", "num_layers", "n_layers"), "block_count"),
}


def config_value(config, what, layer=None):
    """Look up an integer config value under any of its aliases.

    Parameters
    ----------
    config : dict
        ``config.json`` contents, or GGUF metadata.
    what : str
        A key of :data:`CONFIG_ALIASES`.
    layer : int, optional
        Picks the entry of a per-layer list (GGUF ``head_count_kv`` of
        models whose layers differ); without it the first entry is used.

    Returns
    -------
    value : int or None
        ``None`` when no alias is present.  Multimodal configs keep the
        language model's values in ``text_config``, searched second.
    """
    hf_keys, gguf_suffix = CONFIG_ALIASES[what]
    keys = hf_keys
    if config.get("general.architecture"):
        keys = hf_keys + (f"{config['general.architecture']}.{gguf_suffix}",)
    for scope in (config, config.get("text_config") or {}):
        for key in keys:
            value = scope.get(key)
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                value = value[layer if layer is not None and layer < len(value) else 0]
            return int(value)
    return None


def config_keys(what):
    """Return the config.json spellings of ``what``, for error messages."""
    return " / ".join(CONFIG_ALIASES[what][0])


# Roles that write to the residual stream have the hidden size as their
# output dimension; every other role and rule reads it as input.  This is
# what lets shapes decide a tensor's orientation.
_WRITES_HIDDEN = frozenset({"o", "down"})


def stored_transposed(rows, cols, declared, rule, hidden):
    """Whether a stored (rows, cols) matrix is (in, out).

    The shape decides when exactly one dimension is the hidden size;
    otherwise (square matrices, no config) the scheme's declaration does.
    """
    if hidden is None or (rows == hidden) == (cols == hidden):
        return declared
    return not (rows == hidden if rule in _WRITES_HIDDEN else cols == hidden)


def checked_shape(name, shapes):
    """Return the stored shape of a mapped tensor as a tuple of ints."""
    shape = shapes.get(name)
    if shape is None:
        raise ConfigError(f"No shape given for tensor {name!r}; pass shapes={{name: shape}}.")
    shape = tuple(int(dim) for dim in shape)
    if len(shape) not in (2, 3):
        raise ConfigError(
            f"Tensor {name!r} has shape {shape}: expected a 2-D matrix or a 3-D stack of "
            "expert matrices (experts, out, in). Map this name to no role in the naming scheme."
        )
    return shape


def split_layout(name, shape, rows, rule, layer, config, hidden):
    """Return ``(layout, layout_args, roles, descriptor text)`` for one rule.

    ``rows`` is the output dimension once the matrix is in (out, in)
    orientation; ``name`` and ``shape`` only feed the error message.
    """
    if rule in ROLES:
        return "plain", (), (rule,), "plain"
    if rule == "up_or_gate_up":
        intermediate = config_value(config, "intermediate_size", layer)
        if intermediate is None or rows != 2 * intermediate:
            return "plain", (), ("up",), "plain"
        rule = "gate_up"
    roles = SPLIT_RULES[rule]

    def fail(problem, fix):
        raise ConfigError(
            f"Cannot split fused tensor {name!r} (stored shape {shape}, {rows} output rows) "
            f"by rule {rule!r}: {problem}. {fix}"
        )

    if rule in ("qkv_equal", "gate_up", "gate_up_interleaved"):
        if rows % len(roles):
            fail(f"{rows} rows do not divide into {len(roles)} equal parts",
                 "Check that the tensor is mapped to the right rule.")
        size = rows // len(roles)
        sizes = ",".join(f"{role}={size}" for role in roles)
        if rule == "gate_up_interleaved":
            return "stride", (2,), roles, f"{rule}:{sizes}"
        return "rows", (size,) * len(roles), roles, f"{rule.replace('_equal', '')}:{sizes}"
    heads = config_value(config, "num_heads", layer)
    if heads is None or heads <= 0:
        fail(f"the config has no head count ({config_keys('num_heads')})",
             "Add num_attention_heads to config.json or pass config={...}.")
    if rule == "qkv_interleaved":
        if rows % (3 * heads):
            fail(f"{rows} rows are not 3 * num_attention_heads={heads} heads",
                 "Fix num_attention_heads in config.json.")
        return "heads", (heads, 3), roles, f"{rule}:heads={heads},head_dim={rows // (3 * heads)}"
    kv_heads = config_value(config, "num_kv_heads", layer) or heads
    head_dim = config_value(config, "head_dim", layer)
    expected = head_dim or (hidden // heads if hidden else None)
    settings = (f"num_attention_heads={heads}, num_key_value_heads={kv_heads}, "
                f"head_dim={head_dim}, hidden_size={hidden}")
    if rows % (heads + 2 * kv_heads) or expected not in (None, rows // (heads + 2 * kv_heads)):
        fail(f"{rows} rows are not (heads + 2 * kv_heads) * head_dim with {settings}",
             "Fix num_attention_heads / num_key_value_heads / head_dim in config.json.")
    dim = rows // (heads + 2 * kv_heads)
    q, kv = heads * dim, kv_heads * dim
    return "rows", (q, kv, kv), roles, f"qkv:q={q},k={kv},v={kv}"


def cut_matrix(matrix, layout, args):
    """Cut an (out, in) matrix as described by ``TensorPlan.layout``."""
    if layout == "rows":
        starts = [sum(args[:i]) for i in range(len(args))]
        return [matrix[a:a + size] for a, size in zip(starts, args)]
    if layout == "heads":
        heads, k = args
        rows, cols = matrix.shape
        grouped = matrix.reshape(heads, k, rows // (heads * k), cols)
        return [grouped[:, i].reshape(rows // k, cols) for i in range(k)]
    if layout == "stride":
        (k,) = args
        return [matrix[i::k] for i in range(k)]
    return [matrix]


def unknown_architecture_message(names, shapes, model_type, forced, registered):
    """Explain an unmapped checkpoint and show, as code, how to register it."""
    layered = [name for name in names if re.search(r"\.\d+\.", name)]
    sample = (layered or names)[:10]
    who = (f"Naming scheme {getattr(forced, 'name', forced)!r} maps"
           if forced is not None else "No registered naming scheme maps")
    lines = [
        (f"{who} any q/k/v/o/gate/up/down matrix among the {len(names)} tensors "
         f"(model_type={model_type!r}). Sample tensor names:"),
        *(f"    {name}" for name in sample),
        f"Registered schemes: {', '.join(registered)}.",
        "Describe the naming once and register it, e.g.:",
        "",
        "    from sklearn_specsig.architectures import NamingScheme, register_naming_scheme",
        "    register_naming_scheme(NamingScheme(",
        '        name="my_arch",',
        f'        layer_pattern=r"{guess_layer_pattern(sample)}",',
        "        modules={",
        ("            # roles: q, k, v, o, gate, up, down; split rules: "
         + ", ".join(SPLIT_RULES)),
        *(f'            "{suffix}": "<role>",'
          for suffix in guess_suffixes(sample, names, shapes)[:8]),
        "        },",
        "        transposed=False,  # True for (in, out) storage such as GPT-2's Conv1D",
        "    ))",
        "",
        ("or pass it for one call: resolve_architecture(names, config, shapes, "
         "scheme=NamingScheme(...))."),
    ]
    return "\n".join(lines)


def guess_layer_pattern(sample):
    """A layer regex built from the first name that has a ``.N.`` component."""
    for name in sample:
        head = re.match(r"^(.*?\.)\d+\.", name)
        if head:
            return "^" + re.escape(head.group(1)) + r"(?P<layer>\d+)\."
    return r"^model\.layers\.(?P<layer>\d+)\."


def guess_suffixes(sample, names, shapes):
    """Remainders of the first block's 2-D tensors: the keys to fill in."""
    for name in sample:
        head = re.match(r"^(.*?\.\d+\.)", name)
        if head:
            prefix = head.group(1)
            return [n[len(prefix):] for n in names
                    if n.startswith(prefix) and len(shapes.get(n, (0, 0))) == 2]
    return ["self_attn.q_proj.weight", "mlp.down_proj.weight"]
