"""Training methods, registered by name: ``create_method(name, config)`` and ``list_methods()``.

The registry is :mod:`sbirkit.methods.registry` (a leaf: method modules import
``register_method`` from there); this package face re-exports it and imports the built-in
methods, so the registry holds them. Plug-in methods (``method.name: "module:Class"``, or an
entry point in the group ``sbirkit.methods``): see :mod:`sbirkit.methods.registry`.
"""

from __future__ import annotations

# isort: off
from .base import Method, SamplerSpec
from .registry import ENTRY_POINT_GROUP, METHODS, create_method, list_methods, method_class, register_method

# the built-in methods register themselves on import, after the names above exist (a method module
# that still imports register_method from this face finds it)
from . import adaptive_fg, baseline, classifier, crossx_dfl, fusion, zscmr  # noqa: F401
# isort: on

__all__ = ["ENTRY_POINT_GROUP", "METHODS", "Method", "SamplerSpec", "create_method", "list_methods", "method_class",
           "register_method"]
