"""Training methods, registered by name: ``create_method(name, config)`` and ``list_methods()``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import Registry
from .base import Method, SamplerSpec

METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str, help: str | None = None):
    """Decorator: register a :class:`Method` subclass (built with ``cls.from_config(config)``)."""
    return METHODS.register(name, help)


def create_method(name: str, config: Mapping[str, Any]) -> Method:
    """The method ``name`` built from a resolved run config (its ``model`` and ``method`` sections)."""
    _load_builtin_methods()
    return METHODS.get(name).from_config(config)


def list_methods() -> list[str]:
    _load_builtin_methods()
    return METHODS.names()


def _load_builtin_methods() -> None:
    from . import baseline, zscmr  # noqa: F401  (registers on import)


__all__ = ["METHODS", "Method", "SamplerSpec", "create_method", "list_methods", "register_method"]
