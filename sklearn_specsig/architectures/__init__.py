"""Map checkpoint tensor names to module roles, layers and experts.

Rooms: ``_registry`` (:class:`NamingScheme`, the registry and
:func:`resolve_architecture`, which turns tensor names, shapes and a config
into an :class:`Architecture` of :class:`TensorPlan`), ``_plans`` (those
two, built from the matched tensors), ``_accounting`` (every block weight of
two or more dimensions is mapped or skipped on purpose, never silently left
out), ``_schemes`` and ``_schemes_encoders`` (the built-in table, plain
data; encoders and T5 in the second), ``_refusals`` (architectures refused
by name, with the reason: state-space models), ``_layout`` (fused
layouts: how one stored tensor is cut into ``(out, in)`` matrices; config
values under any of their spellings) and ``_messages``.  How to add a
scheme: ``docs/design.md``.
"""

from ..signature import ROLES
from ._layout import CONFIG_ALIASES, SPLIT_RULES, config_keys, config_value, cut_matrix
from ._plans import Architecture, TensorPlan
from ._registry import (
    NamingScheme,
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
