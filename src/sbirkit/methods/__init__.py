"""Training methods, registered by name: ``create_method(name, config)`` and ``list_methods()``.

Methods from outside the package plug in without touching it, in either of two ways:

* ``method.name: "my_package.my_module:MyMethod"``: the class is imported from that module (it
  must subclass :class:`Method`), and the run records that name, so ``load_run`` finds it again;
* an installed distribution that declares an entry point in the group ``sbirkit.methods``
  (``my_method = "my_package.my_module:MyMethod"``): it is then listed and created by its name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, UnknownNameError
from ..registry import Registry
from .base import Method, SamplerSpec

METHODS: Registry[type[Method]] = Registry("method")
ENTRY_POINT_GROUP = "sbirkit.methods"
_entry_points_loaded = False


def register_method(name: str, help: str | None = None):
    """Decorator: register a :class:`Method` subclass (built with ``cls.from_config(config)``)."""
    return METHODS.register(name, help)


def _import_method(spec: str) -> type[Method]:
    """``"package.module:Class"`` -> the class, checked to be a :class:`Method` subclass."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"method.name: {spec!r}: could not import module {module_name!r} ({exc})") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConfigError(f"method.name: {spec!r}: expected a sbirkit.methods.Method subclass named {attr!r} "
                          f"in module {module_name!r}")
    return cls


def method_class(name: str) -> type[Method]:
    """The class behind a method name: registered, from an entry point, or ``module:Class``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"method.name: expected a registered method name or module:Class, got {name!r}")
    if ":" in name:
        return _import_method(name)
    _load_builtin_methods()
    if name not in METHODS:
        _load_entry_points()
    try:
        return METHODS.get(name)
    except UnknownNameError:
        raise UnknownNameError(f"method.name: unknown method {name!r}; known: {', '.join(METHODS.names())}, "
                               "or module:Class") from None


def create_method(name: str, config: Mapping[str, Any]) -> Method:
    """The method ``name`` built from a resolved run config (its ``model`` and ``method`` sections)."""
    return method_class(name).from_config(config)


def list_methods() -> list[str]:
    _load_builtin_methods()
    _load_entry_points()
    return METHODS.names()


def _load_builtin_methods() -> None:
    from . import adaptive_fg, baseline, classifier, crossx_dfl, fusion, zscmr  # noqa: F401  (registers on import)


def _load_entry_points() -> None:
    """Register the methods installed distributions declare in the ``sbirkit.methods`` group."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in METHODS:
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001  (a broken plug-in must not break sbirkit)
            import warnings

            warnings.warn(f"entry point {ENTRY_POINT_GROUP}:{ep.name} ({ep.value}) failed to load: {exc}",
                          stacklevel=2)
            continue
        if isinstance(cls, type) and issubclass(cls, Method):
            METHODS.register(ep.name)(cls)


__all__ = ["METHODS", "Method", "SamplerSpec", "create_method", "list_methods", "method_class",
           "register_method"]
