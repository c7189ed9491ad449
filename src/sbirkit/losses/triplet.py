"""Cross-modal triplet loss: a sketch anchor, its positive photo, a mined negative photo.

Per anchor ``a`` (sketch i), positive ``p`` and negative ``n`` (photos):
``L = max(0, d(a, p) - d(a, n) + margin)`` (Schroff et al., FaceNet, CVPR 2015, Eq. 1), the
form used for SBIR by Yu et al., "Sketch Me That Shoe", CVPR 2016, Eq. 1 (Triplet-SN) and
Sangkloy et al., "The Sketchy Database", SIGGRAPH 2016. The loss is the mean over anchors
that have at least one negative in the batch.

Negative mining (``mining``):

* ``"random"``: one negative drawn uniformly from the anchor's negatives (torch's global RNG,
  or ``generator``), positive = photo i.
* ``"batch_hard"``: hardest positive (largest distance among the anchor's positives) and
  hardest negative (smallest distance) in the batch (Hermans et al., "In Defense of the Triplet
  Loss", 2017, Eq. 5).
* ``"all"``: positive = photo i, every negative in the batch; the mean over all these
  triplets, zeros included (the "batch all" loss of Hermans et al., 2017, Eq. 6).
* ``"semi_hard"``: positive = photo i; negative = the closest one *farther* than the positive,
  ``d(a,p) < d(a,n)`` (FaceNet Sec. 3.2, Eq. 4); when every negative is closer than the
  positive, the farthest negative is used (the TensorFlow ``triplet_semihard_loss`` convention).
"""

from __future__ import annotations

import torch

from .base import MetricLoss, zero_loss
from .distances import Distance

MINING = ("random", "batch_hard", "semi_hard", "all")


class CrossModalTripletLoss(MetricLoss):
    """Triplet loss with sketch anchors and photo positives/negatives; see the module docstring."""

    def __init__(self, distance: Distance | str = "cosine", margin: float = 0.2, mining: str = "random",
                 level: str = "class", same_class_negatives: bool = False):
        super().__init__(distance, margin, level, same_class_negatives)
        if mining not in MINING:
            raise ValueError(f"mining: expected one of {MINING}, got {mining!r}")
        self.mining = mining

    def forward(self, sketch: torch.Tensor, photo: torch.Tensor, labels: torch.Tensor,
                instances: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``sketch``/``photo``: (B, D) embeddings of pairs; returns ``triplet``, ``loss``, ``active``."""
        d = self.distance.pairwise(sketch, photo)
        pos, neg = self.masks(labels, instances)
        valid = neg.any(dim=1)
        if not valid.any():
            z = zero_loss(sketch, photo)
            return {"triplet": z, "loss": z, "active": z.detach()}
        d, pos, neg = d[valid], pos[valid], neg[valid]
        d_own = d.gather(1, valid.nonzero()[:, :1]).squeeze(1)  # d(sketch i, photo i)
        inf = torch.finfo(d.dtype).max
        if self.mining == "random":
            j = torch.multinomial(neg.float(), 1, generator=generator)
            d_ap, d_an = d_own, d.gather(1, j).squeeze(1)
        elif self.mining == "all":
            per_triplet = torch.relu(d_own[:, None] - d + self.margin)[neg]
            loss = per_triplet.mean()
            return {"triplet": loss, "loss": loss, "active": (per_triplet > 0).float().mean().detach()}
        elif self.mining == "batch_hard":
            d_ap = d.masked_fill(~pos, -inf).amax(dim=1)
            d_an = d.masked_fill(~neg, inf).amin(dim=1)
        else:  # semi_hard
            d_ap = d_own
            farther = neg & (d > d_ap[:, None])
            closest_farther = d.masked_fill(~farther, inf).amin(dim=1)
            farthest = d.masked_fill(~neg, -inf).amax(dim=1)
            d_an = torch.where(farther.any(dim=1), closest_farther, farthest)
        per_anchor = torch.relu(d_ap - d_an + self.margin)
        loss = per_anchor.mean()
        return {"triplet": loss, "loss": loss, "active": (per_anchor > 0).float().mean().detach()}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mining={self.mining!r}"
