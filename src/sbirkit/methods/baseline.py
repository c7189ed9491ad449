"""Supervised SBIR baselines: Siamese contrastive, cross-modal triplet, fine-grained Triplet-SN.

* ``siamese``: contrastive loss on (sketch, photo) pairs (Qi et al., ICIP 2016; loss of
  Hadsell et al., CVPR 2006), category level.
* ``triplet``: cross-modal triplet loss, category level: positive = a photo of the sketch's
  class, negatives = photos of other classes, mined in the batch (Sangkloy et al., 2016).
* ``triplet_sn``: fine-grained Triplet-SN (Yu et al., "Sketch Me That Shoe", CVPR 2016, Eq. 1):
  positive = the photo the sketch was drawn from, negative = another photo of the same category;
  shared or separate branches via ``model.shared``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..losses import ContrastiveLoss, CrossModalTripletLoss, MiningSchedule
from .base import Method, SamplerSpec
from .registry import register_method

if TYPE_CHECKING:
    from ..engine.context import StepContext


class PairLossMethod(Method):
    """Encode both sides of each pair, then apply ``self.loss`` to the two embedding batches."""

    loss: torch.nn.Module
    mining_schedule: MiningSchedule | None = None  # triplet methods: the miner of each step

    def training_step(self, batch: Mapping[str, Any], ctx: StepContext | None = None) -> dict[str, torch.Tensor]:
        if self.mining_schedule is not None and ctx is not None:
            self.loss.miner = self.mining_schedule.at(ctx.global_step)
        sketch = self.embed_side(batch, "sketch").float()
        photo = self.embed_side(batch, "photo").float()
        labels, instances = batch["label"], batch.get("instance")
        if ctx is not None:  # under torchrun the loss mines the whole global batch (identity otherwise)
            sketch, photo, labels = ctx.gather(sketch), ctx.gather(photo), ctx.gather(labels)
            instances = ctx.gather(instances) if instances is not None else None
        return self.loss(sketch, photo, labels, instances)

    def sampler_spec(self) -> SamplerSpec:
        return SamplerSpec(kind="pairs", mode=self.mode, classes_per_batch=self.options.classes_per_batch)


@register_method("siamese")
class Siamese(PairLossMethod):
    """Siamese network with a contrastive loss over in-batch pairs (category level)."""

    name = "siamese"
    mode = "class"

    @dataclass
    class Options:
        distance: str = "euclidean"
        margin: float = 1.0
        classes_per_batch: int | None = None

    def __init__(self, encoder, options=None):
        super().__init__(encoder, options)
        o = self.options
        self.loss = ContrastiveLoss(o.distance, o.margin, level="class")


@register_method("triplet")
class Triplet(PairLossMethod):
    """Cross-modal triplet loss, category level, with random/batch-hard/semi-hard negatives."""

    name = "triplet"
    mode = "class"

    @dataclass
    class Options:
        distance: str = "cosine"
        margin: float = 0.2
        mining: str = "random"
        mining_schedule: dict | None = None  # later switches, {first_step: miner} (losses.MiningSchedule)
        classes_per_batch: int | None = None

    def __init__(self, encoder, options=None):
        super().__init__(encoder, options)
        o = self.options
        self.mining_schedule = MiningSchedule.from_options(o.mining, o.mining_schedule)
        self.loss = CrossModalTripletLoss(o.distance, o.margin, self.mining_schedule.at(0), level="class")


@register_method("triplet_sn")
class TripletSN(PairLossMethod):
    """Fine-grained Triplet-SN: own photo positive, another same-category photo negative."""

    name = "triplet_sn"
    mode = "instance"

    @dataclass
    class Options:
        distance: str = "squared_euclidean"
        margin: float = 0.2
        mining: str = "random"
        mining_schedule: dict | None = None  # later switches, {first_step: miner} (losses.MiningSchedule)
        same_class_negatives: bool = True
        classes_per_batch: int | None = None

    def __init__(self, encoder, options=None):
        super().__init__(encoder, options)
        o = self.options
        self.mining_schedule = MiningSchedule.from_options(o.mining, o.mining_schedule)
        self.loss = CrossModalTripletLoss(o.distance, o.margin, self.mining_schedule.at(0), level="instance",
                                          same_class_negatives=o.same_class_negatives)
