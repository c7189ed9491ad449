"""The meta-learned margin: mu in (0, 1) of a task's triplet loss, predicted from its support set."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MarginNet(nn.Module):
    """mu in (0, 1) from the support set: an MLP on [mean sketch, mean photo, |difference|] of the
    L2-normalised support features, then a sigmoid; it starts near ``init`` for every task."""

    def __init__(self, in_dim: int, hidden: int = 64, init: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.net[2].weight.mul_(0.1)
            self.net[2].bias.fill_(math.log(init / (1.0 - init)))

    def forward(self, sketch_features: torch.Tensor, photo_features: torch.Tensor) -> torch.Tensor:
        s = F.normalize(sketch_features, dim=1).mean(0)
        p = F.normalize(photo_features, dim=1).mean(0)
        return torch.sigmoid(self.net(torch.cat([s, p, (s - p).abs()]))).squeeze(0)

