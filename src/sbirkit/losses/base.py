"""What every metric loss shares: an injected distance and margin, and who counts as a match.

Cross-modal losses compare sketch ``i`` with photo ``j`` of the same batch; photo ``i`` is
always sketch ``i``'s positive. Other photos are positives or negatives by ``level``:
``"class"`` (category-level SBIR: same class = positive) or ``"instance"`` (fine-grained: same
instance = positive, and, with ``same_class_negatives``, only other photos *of the same class*
are negatives, as in Yu et al., CVPR 2016). Losses return a dict of named terms plus ``"loss"``.
"""

from __future__ import annotations

import torch
from torch import nn

from .distances import Distance, create_distance

LEVELS = ("class", "instance")


def match_masks(
    labels: torch.Tensor,
    instances: torch.Tensor | None = None,
    level: str = "class",
    same_class_negatives: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) boolean B×B masks over (sketch i, photo j) pairs of one batch.

    Pairs that are neither (fine-grained: a different instance of another class when
    ``same_class_negatives``) are excluded from both.
    """
    same_class = labels[:, None] == labels[None, :]
    if level == "class":
        return same_class, ~same_class
    if level != "instance":
        raise ValueError(f"level: expected one of {LEVELS}, got {level!r}")
    if instances is None:
        raise ValueError("instances: expected instance ids for level='instance', got None")
    if (instances < 0).any():
        raise ValueError("instances: expected every pair to have an instance id (>= 0) for level='instance'")
    same = instances[:, None] == instances[None, :]
    neg = ~same & same_class if same_class_negatives else ~same
    return same, neg


class MetricLoss(nn.Module):
    """Base of the cross-modal losses: holds ``distance``, ``margin`` and the match ``level``."""

    def __init__(self, distance: Distance | str = "cosine", margin: float = 0.2, level: str = "class",
                 same_class_negatives: bool = False):
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"level: expected one of {LEVELS}, got {level!r}")
        self.distance = create_distance(distance)
        self.margin = float(margin)
        self.level = level
        self.same_class_negatives = bool(same_class_negatives)

    def masks(self, labels: torch.Tensor, instances: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return match_masks(labels, instances, self.level, self.same_class_negatives)

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}, margin={self.margin}, level={self.level!r}"


def zero_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph (so ``backward`` works when a batch has nothing to learn from)."""
    return sum(t.sum() * 0.0 for t in tensors)
