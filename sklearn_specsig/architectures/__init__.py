"""Map checkpoint tensor names to module roles, layers and experts.

Three rooms: ``_registry`` (:class:`NamingScheme`, the registry and
:func:`resolve_architecture`, which turns tensor names, shapes and a config
into an :class:`Architecture` of :class:`TensorPlan`), ``_schemes`` (the
built-in table, plain data) and ``_layout`` (fused layouts: how one stored
tensor is cut into ``(out, in)`` matrices; config values under any of their
spellings).  How to add a scheme: ``docs/design.md``.
"""

from ..signature import ROLES
from ._layout import CONFIG_ALIASES, SPLIT_RULES, config_keys, config_value, cut_matrix
from ._registry import (
    Architecture,
    NamingScheme,
    TensorPlan,
    get_naming_scheme,
    list_naming_schemes,
    naming_scheme_context,
    register_naming_scheme,
    resolve_architecture,
    schemes_in_force,
    unregister_naming_scheme,
)

__all__ = [
    "CONFIG_ALIASES",
    "ROLES",
    "SPLIT_RULES",
    "Architecture",
    "NamingScheme",
    "TensorPlan",
    "config_keys",
    "config_value",
    "cut_matrix",
    "get_naming_scheme",
    "list_naming_schemes",
    "naming_scheme_context",
    "register_naming_scheme",
    "resolve_architecture",
    "schemes_in_force",
    "unregister_naming_scheme",
]
