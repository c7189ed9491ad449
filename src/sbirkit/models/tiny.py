"""Tiny registered test networks: fast enough for CI and the demo, trained from scratch."""

from __future__ import annotations

import torch
from torch import nn

from .base import Backbone
from .registry import register_backbone


class TinyCNN(Backbone):
    """A stack of stride-2 3x3 conv -> BatchNorm -> ReLU layers; the map is 1/16 of the input side.

    With the default widths a 64-px batch of 32 runs in a few milliseconds on a CPU.
    """

    input_stats = None
    weights_hint = "tiny test networks have no published weights; pass weights=PATH to a state dict you saved"

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 64), in_chans: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_chans
        for width in widths:
            layers += [
                nn.Conv2d(prev, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.num_features = self.feature_channels = prev
        self.widths = tuple(widths)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @property
    def num_stages(self) -> int:  # one stage per conv -> BatchNorm -> ReLU layer
        return len(self.widths)

    def stage_modules(self, index: int) -> list[nn.Module]:
        return list(self.features[3 * index:3 * index + 3])

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.features[3 * start:3 * stop](x)


@register_backbone("tiny_cnn")
def tiny_cnn(in_chans: int = 3) -> TinyCNN:
    """4-layer CNN (8-16-32-64 channels, 64-d features): the default for tests and the demo."""
    return TinyCNN((8, 16, 32, 64), in_chans=in_chans)


@register_backbone("tiny_cnn_wide")
def tiny_cnn_wide(in_chans: int = 3) -> TinyCNN:
    """4-layer CNN (16-32-64-128 channels, 128-d features), twice as wide as tiny_cnn."""
    return TinyCNN((16, 32, 64, 128), in_chans=in_chans)
