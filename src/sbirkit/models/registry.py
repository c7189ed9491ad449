"""The backbone registry, in a module that imports no model file (so model files can register
themselves without an import cycle through the factory in :mod:`.backbones`)."""

from __future__ import annotations

from ..registry import Registry

BACKBONES: Registry = Registry("backbone")
FAMILIES = ("timm/", "tv/")


def register_backbone(name: str, help: str | None = None):
    """Decorator: register ``factory(in_chans=3, **options) -> Backbone`` under ``name``."""
    return BACKBONES.register(name, help)
