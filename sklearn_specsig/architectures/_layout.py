"""Fused layouts and config lookups: how a mapped tensor is cut into matrices.

``SPLIT_RULES`` names the fused layouts (``[q; k; v]`` rows, GPT-NeoX's
per-head interleaving, ``[gate; up]`` ...); :func:`split_layout` works out,
from a tensor's shape and the config, where each role's rows sit, and
:func:`cut_matrix` cuts them.  ``CONFIG_ALIASES`` reads one value (the
number of heads, the hidden size) whatever the family calls it.
"""


from ..errors import ConfigError
from ..signature import ROLES

# Fused tensors: rule name -> the roles it holds, in row order.
SPLIT_RULES = {
    "qkv": ("q", "k", "v"),
    "qkv_equal": ("q", "k", "v"),
    "qkv_interleaved": ("q", "k", "v"),
    "qkv_grouped": ("q", "k", "v"),
    "qkv_falcon": ("q", "k", "v"),
    "qkv_multi_query": ("q", "k", "v"),
    "qkv_mpt": ("q", "k", "v"),
    "kv_mla": ("k", "v"),
    # llama.cpp's split of kv_b (DeepseekV2Model.modify_tensors): 3-D per-head
    # stacks that make one matrix, not experts.  attn_k_b is (heads,
    # kv_lora_rank, qk_nope) (each head's k rows transposed), attn_v_b
    # (heads, v_head_dim, kv_lora_rank).
    "k_mla_heads": ("k",),
    "v_mla_heads": ("v",),
    "gate_up": ("gate", "up"),
    "gate_up_interleaved": ("gate", "up"),
    "up_or_gate_up": ("gate", "up"),
    "gate_experts": ("gate",),
    "up_experts": ("up",),
    "down_experts": ("down",),
}

#: Rules whose 3-D tensor is one matrix cut per head, not a stack of experts.
HEAD_STACK_RULES = frozenset({"k_mla_heads", "v_mla_heads"})

# Config keys that mean the same thing across families: the config.json
# spellings, then the GGUF metadata key (looked up under the value of
# ``general.architecture``, e.g. ``llama.attention.head_count``).
CONFIG_ALIASES = {
    "num_heads": (("num_attention_heads", "n_head", "num_heads", "n_heads"), "attention.head_count"),
    "num_kv_heads": (
        ("num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num",
         "kv_n_heads"),
        "attention.head_count_kv",
    ),
    "head_dim": (("head_dim",), "attention.key_length"),
    "hidden_size": (("hidden_size", "n_embd", "n_embed", "d_model"), "embedding_length"),
    "intermediate_size": (("intermediate_size", "n_inner", "ffn_dim"), "feed_forward_length"),
    "num_layers": (("num_hidden_layers", "n_layer", "num_layers", "n_layers"), "block_count"),
    "num_experts": (
        ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"), "expert_count"),
    # Multi-head latent attention (DeepSeek-V2/V3): per-head widths of the
    # key's position-free part and of the value.  GGUF names neither.
    "qk_nope_head_dim": (("qk_nope_head_dim",), None),
    "v_head_dim": (("v_head_dim",), None),
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
        language model's values in ``text_config``, searched second; DBRX
        keeps its key-value heads in ``attn_config`` and its experts in
        ``ffn_config``, searched last.
    """
    hf_keys, gguf_suffix = CONFIG_ALIASES[what]
    keys = hf_keys
    if config.get("general.architecture") and gguf_suffix:
        keys = hf_keys + (f"{config['general.architecture']}.{gguf_suffix}",)
    scopes = (config, *(sub for sub in map(config.get, ("text_config", "attn_config", "ffn_config"))
                        if isinstance(sub, dict)))
    for scope in scopes:
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
    if rule in HEAD_STACK_RULES:
        flip = int(rule == "k_mla_heads")
        if len(shape) != 3:
            raise ConfigError(
                f"Tensor {name!r} has shape {shape}: rule {rule!r} expects a 3-D per-head "
                "stack as llama.cpp's converter writes attn_k_b / attn_v_b.")
        heads, rank = shape[0], shape[-2] if flip else shape[-1]
        return "head_stack", (flip,), SPLIT_RULES[rule], f"{rule}:heads={heads},rank={rank}"
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
        # Equal thirds are [q; k; v] of full multi-head attention: each reads
        # and writes the hidden size.  Any other width is grouped or
        # multi-query attention (StarCoder's c_attn under GPT-2's names), which
        # equal thirds would cut silently wrong.
        in_dim = shape[-1] if shape[-2] == rows else shape[-2]
        if rule == "qkv_equal" and rows != 3 * in_dim:
            fail(f"{rows} rows are not three times the input width {in_dim}, as "
                 "[q; k; v] of multi-head attention are",
                 "This looks like grouped or multi-query attention: give the "
                 "checkpoint its config.json (with model_type) so that the "
                 "architecture's own scheme splits it.")
        size = rows // len(roles)
        sizes = ",".join(f"{role}={size}" for role in roles)
        if rule == "gate_up_interleaved":
            return "stride", (2,), roles, f"{rule}:{sizes}"
        return "rows", (size,) * len(roles), roles, f"{rule.replace('_equal', '')}:{sizes}"
    if rule.endswith("_experts"):
        # E expert matrices concatenated along rows in one 2-D tensor (DBRX's
        # ``w1`` / ``v1`` / ``w2``, each (E * ffn_hidden_size, hidden)).
        experts = config_value(config, "num_experts", layer)
        if not experts or rows % experts:
            fail(f"the config's expert count ({config_keys('num_experts')}: {experts}) does "
                 f"not divide the {rows} rows", "Fix the expert count in config.json.")
        # A block of a role that writes the hidden size is stored (in, out)
        # when its rows are not the hidden size (DBRX computes ``x @ w2``).
        block, other = rows // experts, shape[-1] + shape[-2] - rows
        flip = int(stored_transposed(block, other, False, roles[0], hidden))
        return ("experts", (experts, flip), roles,
                f"{rule}:experts={experts},rows={block}" + (",T" if flip else ""))
    heads = config_value(config, "num_heads", layer)
    if heads is None or heads <= 0:
        fail(f"the config has no head count ({config_keys('num_heads')})",
             "Add num_attention_heads to config.json or pass config={...}.")
    if rule == "qkv_interleaved":
        if rows % (3 * heads):
            fail(f"{rows} rows are not 3 * num_attention_heads={heads} heads",
                 "Fix num_attention_heads in config.json.")
        return "heads", (heads, 3), roles, f"{rule}:heads={heads},head_dim={rows // (3 * heads)}"
    if rule == "kv_mla":
        # DeepSeek's kv_b_proj: per head [k_nope; v] rows (modeling_deepseek_v3,
        # ``kv_b_proj(kv).view(..., nope + v_head_dim).split([nope, v_head_dim])``).
        nope, v_dim = (config_value(config, key, layer) for key in ("qk_nope_head_dim", "v_head_dim"))
        if nope is None or v_dim is None or rows != heads * (nope + v_dim):
            fail(f"{rows} rows are not num_attention_heads={heads} * (qk_nope_head_dim={nope} "
                 f"+ v_head_dim={v_dim})", "Fix these values in config.json.")
        return "groups", (heads, nope, v_dim), roles, f"{rule}:heads={heads},k={nope},v={v_dim}"
    forced_kv = None
    if rule == "qkv_multi_query":
        # GPT-BigCode (modeling_gpt_bigcode, GPTBigCodeAttention): with
        # multi_query (its default) [q; k; v] with one key-value head, whatever
        # num_key_value_heads says; without it the rows interleave per head.
        if not config.get("multi_query", True):
            return split_layout(name, shape, rows, "qkv_interleaved", layer, config, hidden)
        rule, forced_kv = "qkv", 1
    if rule == "qkv_mpt":
        # MPT (llm-foundry's attention classes) always stores [q; k; v]; the
        # attn_config's attn_type says how many key-value heads: one, kv_n_heads,
        # or every head, whatever a stray kv_n_heads says then.
        attn_type = (config.get("attn_config") or {}).get("attn_type", "multihead_attention")
        if attn_type not in ("multihead_attention", "multiquery_attention",
                             "grouped_query_attention"):
            fail(f"attn_config.attn_type {attn_type!r} is not one MPT knows",
                 "Fix attn_config.attn_type in config.json.")
        rule = "qkv"
        forced_kv = {"multihead_attention": heads, "multiquery_attention": 1}.get(attn_type)
    if rule == "qkv_falcon":
        # Falcon's config picks the layout (modeling_falcon, FalconAttention):
        # the new decoder (40B, 180B) groups each key-value head's queries with
        # its key and value; the old one (7B) is multi-query [q; k; v] with a
        # single key-value head whatever num_kv_heads says, or, without
        # multi_query, interleaved per head like Bloom.
        if config.get("new_decoder_architecture") or config.get("model_type") == "RefinedWeb":
            # The model reads num_kv_heads (n_head_kv in RefinedWeb configs),
            # whatever a derived num_key_value_heads says.
            rule, forced_kv = "qkv_grouped", config.get("num_kv_heads") or config.get("n_head_kv")
        elif config.get("multi_query", True):
            rule, forced_kv = "qkv", 1
        else:
            return split_layout(name, shape, rows, "qkv_interleaved", layer, config, hidden)
    kv_heads = forced_kv or config_value(config, "num_kv_heads", layer) or heads
    head_dim = config_value(config, "head_dim", layer)
    expected = head_dim or (hidden // heads if hidden else None)
    settings = (f"num_attention_heads={heads}, num_key_value_heads={kv_heads}, "
                f"head_dim={head_dim}, hidden_size={hidden}")
    if (rows % (heads + 2 * kv_heads) or expected not in (None, rows // (heads + 2 * kv_heads))
            or heads % kv_heads):
        fail(f"{rows} rows are not (heads + 2 * kv_heads) * head_dim with {settings}",
             "Fix num_attention_heads / num_key_value_heads / head_dim in config.json.")
    dim = rows // (heads + 2 * kv_heads)
    q, kv = heads * dim, kv_heads * dim
    if rule == "qkv_grouped":
        # (kv_heads, heads // kv_heads + 2, head_dim) rows: each group's
        # queries, then its key, then its value.
        return "groups", (kv_heads, q // kv_heads, dim, dim), roles, f"{rule}:q={q},k={kv},v={kv}"
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
    if layout == "groups":
        groups, *sizes = args
        rows, cols = matrix.shape
        grouped = matrix.reshape(groups, rows // groups, cols)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [grouped[:, a:a + size].reshape(groups * size, cols) for a, size in zip(starts, sizes)]
    if layout == "experts":
        experts, flip = args
        rows, cols = matrix.shape
        stack = matrix.reshape(experts, rows // experts, cols)
        return [stack[e].T if flip else stack[e] for e in range(experts)]
    if layout == "head_stack":
        # (heads, a, b) -> (heads * b, a) when flipped, else (heads * a, b).
        (flip,) = args
        stack = matrix.transpose(-1, -2) if flip else matrix
        return [stack.reshape(-1, stack.shape[-1])]
    if layout == "stride":
        (k,) = args
        return [matrix[i::k] for i in range(k)]
    return [matrix]
