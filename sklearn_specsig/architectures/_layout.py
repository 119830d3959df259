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
    "gate_up": ("gate", "up"),
    "gate_up_interleaved": ("gate", "up"),
    "up_or_gate_up": ("gate", "up"),
}

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
