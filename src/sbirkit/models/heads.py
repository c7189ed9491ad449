"""Heads on top of a backbone: global pooling, spatial attention and the embedding projection.

The attention block follows the spatial attention of "Deep Spatial-Semantic Attention for
Fine-Grained Sketch-Based Image Retrieval" (Song et al., ICCV 2017, Sec. 3.2): a map over the
feature grid re-weights the features with a residual connection, ``f * (1 + a)``, then pools.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOL_MODES = ("avg", "max", "gem", "grid")


def pooled_width(channels: int, mode: str = "avg", grid: int = 2) -> int:
    """The size of a pooled vector: ``channels``, or ``channels * grid**2`` for ``mode="grid"``."""
    return int(channels) * (int(grid) ** 2 if mode == "grid" else 1)


def global_pool(fmap: torch.Tensor, mode: str = "avg", p: float | torch.Tensor = 3.0, grid: int = 2) -> torch.Tensor:
    """Pool a ``(B, C, H, W)`` map to ``(B, C)``: average, max, or GeM (generalised mean); or, with
    ``mode="grid"``, to ``(B, C * grid**2)``: the average over each cell of a ``grid x grid`` partition
    of the map (adaptive pooling, so any H, W >= 1 works), channel-major, which keeps the layout.

    GeM is ``mean(x.clamp(min=eps) ** p) ** (1 / p)`` (Radenovic et al., TPAMI 2018); p=1 is the
    average and p -> inf approaches the max.
    """
    if fmap.ndim != 4:
        raise ValueError(f"global_pool: fmap: expected a (B, C, H, W) map, got shape {tuple(fmap.shape)}")
    if mode == "grid":
        return F.adaptive_avg_pool2d(fmap, int(grid)).flatten(1)
    if mode == "avg":
        return fmap.mean(dim=(2, 3))
    if mode == "max":
        return fmap.amax(dim=(2, 3))
    if mode == "gem":
        return fmap.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
    raise ValueError(f"global_pool: mode: expected one of {POOL_MODES}, got {mode!r}")


class GlobalPool(nn.Module):
    """Module form of :func:`global_pool`; with ``mode="gem"`` the exponent ``p`` is learned,
    with ``mode="grid"`` the output is ``grid**2`` times wider (:func:`pooled_width`)."""

    def __init__(self, mode: str = "avg", p: float = 3.0, grid: int = 2):
        super().__init__()
        if mode not in POOL_MODES:
            raise ValueError(f"GlobalPool: mode: expected one of {POOL_MODES}, got {mode!r}")
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"GlobalPool: grid: expected an integer >= 1, got {grid!r}")
        self.mode = mode
        self.grid = int(grid)
        self.p = nn.Parameter(torch.tensor(float(p))) if mode == "gem" else None

    def width(self, channels: int) -> int:
        return pooled_width(channels, self.mode, self.grid)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return global_pool(fmap, self.mode, self.p if self.p is not None else 3.0, self.grid)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + (f", grid={self.grid}" if self.mode == "grid" else "")


class SpatialAttention(nn.Module):
    """Spatial attention over a backbone map, then pooling (Song et al., ICCV 2017).

    A 1x1 conv (optionally 1x1 conv -> ReLU -> 1x1 conv with ``hidden`` channels) scores each grid
    cell. ``mode="softmax"`` normalises the scores over the H*W cells (the map sums to 1 per image);
    ``mode="sigmoid"`` squashes each score to (0, 1) independently. Features are re-weighted with a
    residual connection, ``f * (1 + a)``, so a flat map keeps the plain pooled feature (up to a
    constant), and pooled to ``(B, C)`` (``(B, C * grid**2)`` with ``pool="grid"``).
    """

    def __init__(self, in_channels: int, hidden: int | None = None, mode: str = "softmax", pool: str = "avg",
                 grid: int = 2):
        super().__init__()
        if mode not in ("softmax", "sigmoid"):
            raise ValueError(f"SpatialAttention: mode: expected 'softmax' or 'sigmoid', got {mode!r}")
        self.in_channels = int(in_channels)
        self.mode = mode
        if hidden:
            self.score = nn.Sequential(
                nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1)
            )
        else:
            self.score = nn.Conv2d(in_channels, 1, 1)
        self.pool = GlobalPool(pool, grid=grid)

    def attention_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """The ``(B, 1, H, W)`` attention map for a ``(B, C, H, W)`` feature map."""
        if fmap.ndim != 4 or fmap.shape[1] != self.in_channels:
            raise ValueError(
                f"SpatialAttention: input: expected a (B, {self.in_channels}, H, W) feature map, "
                f"got shape {tuple(fmap.shape)} (token backbones such as ViTs need attention=False)"
            )
        logits = self.score(fmap)
        if self.mode == "sigmoid":
            return torch.sigmoid(logits)
        b, _, h, w = logits.shape
        return torch.softmax(logits.flatten(1), dim=1).view(b, 1, h, w)

    def forward(self, fmap: torch.Tensor, return_map: bool = False):
        att = self.attention_map(fmap)
        pooled = self.pool(fmap * (1.0 + att))
        return (pooled, att) if return_map else pooled


class EmbeddingHead(nn.Module):
    """Project pooled features to the retrieval embedding: linear, or a 2-layer MLP if ``hidden``.

    With ``normalize=True`` the output is L2-normalised, so dot products are cosine similarities.
    """

    def __init__(self, in_dim: int, dim: int, hidden: int | None = None, dropout: float = 0.0, normalize: bool = True):
        super().__init__()
        self.in_dim = int(in_dim)
        self.dim = int(dim)
        self.normalize = bool(normalize)
        if hidden:
            self.proj = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, dim)
            )
        else:
            self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"EmbeddingHead: features: expected shape (B, {self.in_dim}), got {tuple(features.shape)}")
        z = self.proj(features)
        return F.normalize(z, dim=1) if self.normalize else z
