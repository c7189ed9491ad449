"""A small BatchNorm CNN for 32-px classifiers: the paper-like teachers of data-free SBIR.

Data-free synthesis is known to work where the teacher is a BatchNorm CNN at low resolution
(DeepInversion, CMI, Fast-Datafree on CIFAR-10): its BatchNorm layers store the statistics of the
training images, which an estimator can match. This is the smallest such network that classifies
CIFAR-10-size photos and Quick, Draw! sketches usefully on one CPU core: three stages of two
(3x3 conv, BatchNorm, ReLU) and a 2x2 max-pool, 16-32-64 channels (a VGG-style stack).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Backbone
from .registry import register_backbone


class SmallCNN(Backbone):
    """Stages of two (3x3 conv -> BatchNorm -> ReLU) and a 2x2 max-pool; the map is 1/8 of the input side."""

    input_stats = None  # raw [0, 1] images; the first BatchNorm normalises
    weights_hint = "small_cnn has no published weights; train one (classifier-cifar9-photo) or pass weights=PATH"

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), in_chans: int = 3):
        super().__init__()
        self.stages = nn.ModuleList()
        prev = in_chans
        for width in widths:
            self.stages.append(nn.Sequential(
                nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.MaxPool2d(2)))
            prev = width
        self.num_features = self.feature_channels = prev
        self.widths = tuple(widths)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_stages(x, 0, len(self.stages))

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_modules(self, index: int) -> list[nn.Module]:
        return [self.stages[index]]

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x


@register_backbone("small_cnn")
def small_cnn(in_chans: int = 3) -> SmallCNN:
    """6-conv BatchNorm CNN (16-32-64 channels, 64-d features) for 32-px classifiers (data-free teachers)."""
    return SmallCNN((16, 32, 64), in_chans=in_chans)
