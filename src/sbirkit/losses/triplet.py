"""Cross-modal triplet loss: an anchor of one modality, its positive and a mined negative of the other.

Per anchor ``a`` (sketch i), positive ``p`` and negative ``n`` (photos):
``L = max(0, d(a, p) - d(a, n) + margin)`` (Schroff et al., FaceNet, CVPR 2015, Eq. 1), the
form used for SBIR by Yu et al., "Sketch Me That Shoe", CVPR 2016, Eq. 1 (Triplet-SN) and
Sangkloy et al., "The Sketchy Database", SIGGRAPH 2016. The loss is the mean over anchors
that have at least one negative in the batch. Which positive and negative is the injected
miner's choice (:mod:`sbirkit.losses.miners`: ``random``, ``hard``, ``batch_hard``,
``semi_hard``, ``all``).

:func:`bidirectional_triplet_loss` adds the photo-anchored loss to the sketch-anchored one (the
L_3lt term of ZSCMR, Chaudhuri et al., CVPRW 2020).

:func:`fine_grained_triplet_loss` is the instance-level form adaptive fine-grained SBIR (Bhunia et
al., ECCV 2022; :mod:`sbirkit.methods.adaptive_fg`) meta-learns through: every other photo is a
negative (no miner), the margin may be a tensor with a gradient (the meta-learned margin), and the
hinge may be the smooth :func:`smooth_hinge`, so that margin gets a meta-gradient everywhere.
:class:`CrossModalTripletLoss` with the ``all`` miner averages the same triplets but takes a float
margin and the exact-difference distance, so it is kept apart (the numbers of adaptive runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import MetricLoss, zero_loss
from .distances import Distance, squared_distances
from .miners import MINING, GivenNegatives, Miner, create_miner

__all__ = ["MINING", "CrossModalTripletLoss", "bidirectional_triplet_loss", "fine_grained_triplet_loss", "smooth_hinge"]


class CrossModalTripletLoss(MetricLoss):
    """Triplet loss with anchors of one modality and positives/negatives of the other."""

    def __init__(self, distance: Distance | str = "cosine", margin: float = 0.2, mining: str | Miner = "random",
                 level: str = "class", same_class_negatives: bool = False):
        super().__init__(distance, margin, level, same_class_negatives)
        self.miner = create_miner(mining)

    @property
    def mining(self) -> str:
        """The name of the miner in use (a method with a mining schedule swaps ``miner`` per step)."""
        return self.miner.name

    def forward(self, sketch: torch.Tensor, photo: torch.Tensor, labels: torch.Tensor,
                instances: torch.Tensor | None = None, generator: torch.Generator | None = None,
                distances: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``sketch`` (the anchors) / ``photo`` (the candidates): (B, D) embeddings of pairs;
        returns ``triplet``, ``loss``, ``active`` (the fraction of non-zero hinges). ``distances``:
        the anchors × candidates matrix when the caller has it already."""
        d = self.distance.pairwise(sketch, photo) if distances is None else distances
        pos, neg = self.masks(labels, instances)
        valid = neg.any(dim=1)
        if not valid.any():
            z = zero_loss(sketch, photo)
            return {"triplet": z, "loss": z, "active": z.detach()}
        rows = valid.nonzero()[:, 0]
        d, pos, neg = d[valid], pos[valid], neg[valid]
        d_own = d.gather(1, rows[:, None]).squeeze(1)  # d(anchor i, candidate i)
        d_ap, d_an = self.miner(d, d_own, pos, neg, rows, generator)
        hinge = torch.relu(d_ap - d_an + self.margin)
        loss = hinge.mean()
        return {"triplet": loss, "loss": loss, "active": (hinge > 0).float().mean().detach()}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mining={self.mining!r}"


def bidirectional_triplet_loss(sketch: torch.Tensor, photo: torch.Tensor, labels: torch.Tensor, margin: float,
                               distance: Distance | str = "squared_euclidean",
                               negatives: tuple[torch.Tensor, torch.Tensor] | None = None,
                               generator: torch.Generator | None = None,
                               mining: str | Miner = "random") -> dict[str, torch.Tensor]:
    """Class-level L_3lt over (sketch i, photo i) pairs: the sketch-anchored triplet loss (negative:
    an other-class photo) plus the photo-anchored one (negative: an other-class sketch).

    ``mining`` picks the negatives (see :mod:`sbirkit.losses.miners`), unless ``negatives = (photo
    index per sketch anchor, sketch index per photo anchor)`` is given. Each side is averaged over
    the anchors that have an other-class item; ``triplet`` is their sum.
    """
    miners = (GivenNegatives(negatives[0]), GivenNegatives(negatives[1])) if negatives is not None else \
        (create_miner(mining),) * 2
    losses = [CrossModalTripletLoss(distance, margin, miner, level="class") for miner in miners]
    d = losses[0].distance.pairwise(sketch, photo)  # one matrix: the photo anchors read its transpose
    terms = {"sketch_anchor": losses[0](sketch, photo, labels, generator=generator, distances=d)["triplet"],
             "photo_anchor": losses[1](photo, sketch, labels, generator=generator, distances=d.T)["triplet"]}
    terms["triplet"] = terms["sketch_anchor"] + terms["photo_anchor"]
    return terms


def smooth_hinge(x: torch.Tensor, tau: float) -> torch.Tensor:
    """``softplus(tau * x) / tau``: the hinge ``max(0, x)`` as ``tau -> inf``, with a gradient
    everywhere (so a margin inside ``x`` gets a meta-gradient)."""
    return F.softplus(tau * x) / tau


def fine_grained_triplet_loss(anchors: torch.Tensor, photos: torch.Tensor, photo_ids: torch.Tensor,
                              margin: float | torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """Fine-grained triplet loss: anchor i's positive is ``photos[i]``; every photo with another
    id (``photo_ids``) is one of its negatives. Mean over (anchor, negative) triplets of the hinge
    ``max(0, margin + beta+ - beta-)`` (``tau=None``) or its smooth form (:func:`smooth_hinge`), beta
    the squared Euclidean distance (:func:`~sbirkit.losses.distances.squared_distances`)."""
    n = len(anchors)
    d = squared_distances(anchors, photos)
    pos = d[torch.arange(n, device=d.device), torch.arange(n, device=d.device)]
    valid = (photo_ids[None, :] != photo_ids[:n, None]).to(d.dtype)
    x = margin + pos[:, None] - d
    terms = F.relu(x) if tau is None else smooth_hinge(x, tau)
    return (terms * valid).sum() / valid.sum().clamp(min=1.0)
