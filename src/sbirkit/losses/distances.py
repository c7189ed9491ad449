"""Distances between embeddings, injected into losses (the pytorch-metric-learning pattern).

A loss never hard-codes its metric: it calls ``distance.pairwise`` (all pairs, N×M) or
``distance.paired`` (row i with row i), so the same triplet or contrastive loss runs with
cosine or Euclidean geometry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Registry

DISTANCES: Registry = Registry("distance")
_SQRT_EPS = 1e-12  # keeps the gradient of sqrt finite when two embeddings coincide


class Distance:
    """Base class: smaller means more similar."""

    name = "distance"

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@DISTANCES.register("cosine")
class CosineDistance(Distance):
    """``1 - cos(x, y)``, in [0, 2]; inputs need not be normalised."""

    name = "cosine"

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1.0 - (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1)


class EuclideanDistance(Distance):
    """``||x - y||_2`` (or its square with ``squared=True``), computed from exact differences."""

    def __init__(self, squared: bool = False):
        self.squared = bool(squared)
        self.name = "squared_euclidean" if self.squared else "euclidean"

    def _finish(self, sq: torch.Tensor) -> torch.Tensor:
        return sq if self.squared else sq.clamp_min(_SQRT_EPS).sqrt()

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._finish((x[:, None, :] - y[None, :, :]).pow(2).sum(-1))

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._finish((x - y).pow(2).sum(-1))

    def __repr__(self) -> str:
        return f"EuclideanDistance(squared={self.squared})"


DISTANCES.register("euclidean", "L2 distance")(lambda: EuclideanDistance())
DISTANCES.register("squared_euclidean", "squared L2 distance")(lambda: EuclideanDistance(squared=True))


def create_distance(name: str | Distance) -> Distance:
    """A registered distance by name (``cosine``, ``euclidean``, ``squared_euclidean``); a
    ``Distance`` passes through."""
    if isinstance(name, Distance):
        return name
    if name not in DISTANCES:
        raise ValueError(f"distance: expected one of {', '.join(DISTANCES.names())}, got {name!r}")
    return DISTANCES.get(name)()


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` for rows of ``a`` and ``b`` from the Gram matrix (``|a|^2 + |b|^2 - 2 a.b``,
    clamped at 0): one matrix product, which the adaptive inner loop differentiates twice through.
    Exact for any rows up to rounding (not only unit ones), but not bit-equal to
    ``EuclideanDistance(squared=True)``, which sums exact differences."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T).clamp(min=0.0)
