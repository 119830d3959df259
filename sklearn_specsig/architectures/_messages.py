"""The message of UnknownArchitectureError: what was found, and a scheme to start from."""

import re

from ._layout import SPLIT_RULES


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
