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


def unaccounted_message(scheme_name, unaccounted, shapes, remainders, shown=8):
    """Explain block weights that a chosen scheme neither maps nor skips.

    ``unaccounted`` are the full tensor names, ``remainders`` their distinct
    names after the layer prefix (what ``modules`` and ``skip`` are matched
    against).
    """
    more = len(unaccounted) - shown
    skip = ", ".join(f'r"{re.escape(rest)}"' for rest in remainders[:shown])
    skip += "," if len(remainders[:shown]) == 1 else ""
    return "\n".join([
        (f"Naming scheme {scheme_name!r} maps this checkpoint but neither maps nor skips "
         f"{len(unaccounted)} block weight(s) of two or more dimensions, so its signature "
         "would silently leave them out:"),
        *(f"    {name}  shape={_shape_text(shapes.get(name))}" for name in unaccounted[:shown]),
        *([f"    ... and {more} more"] if more > 0 else []),
        ("If they are q/k/v/o/gate/up/down matrices, add their names after the layer "
         "prefix to the scheme's modules; if they deliberately have no role (routers, "
         "position tables, buffers), list them in its skip patterns, e.g."),
        f"    NamingScheme(name={scheme_name!r}, ..., skip=({skip}))",
        ("and register it (register_naming_scheme(..., replace=True)) or pass scheme=...; "
         'see docs/design.md, "How to add a naming scheme". If this is a published '
         "architecture, please report it to the sklearn_specsig maintainers."),
    ])


def _shape_text(shape):
    return "unknown (pass shapes=)" if shape is None else str(tuple(int(d) for d in shape))
