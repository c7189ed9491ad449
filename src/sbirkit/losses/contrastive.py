"""Siamese contrastive loss over the (sketch, photo) pairs of a batch.

Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR
2006, Eq. 4: ``L = (1 - Y) 1/2 D^2 + Y 1/2 max(0, m - D)^2`` with ``Y = 0`` for a similar pair,
``D`` the distance; used for SBIR (sketch branch vs photo/edge-map branch) by Qi et al.,
"Sketch-based image retrieval via Siamese convolutional neural network", ICIP 2016.

Every (sketch i, photo j) pair of the batch is used: matches (the own photo and, at class level,
every same-class photo) are pulled together, non-matches pushed beyond ``margin``. The two
halves are averaged separately so the B positives are not drowned by ~B² negatives:
``loss = pos + neg``, ``pos = mean over matches of 1/2 D^2``,
``neg = mean over non-matches of 1/2 max(0, m - D)^2``.
"""

from __future__ import annotations

import torch

from .base import MetricLoss, zero_loss
from .distances import Distance


class ContrastiveLoss(MetricLoss):
    """Hadsell et al. (2006) contrastive loss on cross-modal pairs; see the module docstring."""

    def __init__(self, distance: Distance | str = "euclidean", margin: float = 1.0, level: str = "class",
                 same_class_negatives: bool = False):
        super().__init__(distance, margin, level, same_class_negatives)

    def forward(self, sketch: torch.Tensor, photo: torch.Tensor, labels: torch.Tensor,
                instances: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``sketch``/``photo``: (B, D) embeddings of pairs; returns ``pos``, ``neg``, ``loss``."""
        d = self.distance.pairwise(sketch, photo)
        pos_mask, neg_mask = self.masks(labels, instances)
        z = zero_loss(sketch, photo)
        pos = 0.5 * d[pos_mask].pow(2).mean() if pos_mask.any() else z
        neg = 0.5 * torch.relu(self.margin - d[neg_mask]).pow(2).mean() if neg_mask.any() else z
        return {"pos": pos, "neg": neg, "loss": pos + neg}
