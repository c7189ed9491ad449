"""Triplet miners: which (anchor, positive, negative) distances a triplet loss uses.

A miner is an object injected into :class:`~sbirkit.losses.triplet.CrossModalTripletLoss` (the
pytorch-metric-learning pattern), shared by every method that trains with triplets (the
baselines and ZSCMR). It sees one batch: ``d`` (anchors × candidates of the other modality),
``d_own`` (each anchor's distance to its own pair, the diagonal), the positive and negative masks
and the anchors' row numbers in the batch, and returns ``(d_ap, d_an)``: one value per anchor, or
one per triplet for :class:`AllNegatives`. Only anchors with at least one negative reach a miner.

Names (``create_miner``): ``random``, ``hard``, ``batch_hard``, ``semi_hard``, ``all``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..registry import Registry

MINERS: Registry = Registry("triplet miner")


class Miner:
    """Base class; see the module docstring."""

    name = "miner"

    def __call__(self, d: Tensor, d_own: Tensor, pos: Tensor, neg: Tensor, rows: Tensor,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _hardest_negative(d: Tensor, neg: Tensor) -> Tensor:
    return d.masked_fill(~neg, torch.finfo(d.dtype).max).amin(dim=1)


@MINERS.register("random")
class RandomNegative(Miner):
    """Positive = the own pair; one negative drawn uniformly among the anchor's negatives
    (torch's global RNG, or ``generator``)."""

    name = "random"

    def __call__(self, d, d_own, pos, neg, rows, generator=None):
        j = torch.multinomial(neg.float(), 1, generator=generator)
        return d_own, d.gather(1, j).squeeze(1)


@MINERS.register("hard")
class HardestNegative(Miner):
    """Positive = the own pair; negative = the closest one (the hardest negative, ZSCMR's setting)."""

    name = "hard"

    def __call__(self, d, d_own, pos, neg, rows, generator=None):
        return d_own, _hardest_negative(d, neg)


@MINERS.register("batch_hard")
class BatchHard(Miner):
    """Hardest positive (farthest among the anchor's positives) and hardest negative (closest) in
    the batch (Hermans et al., "In Defense of the Triplet Loss", 2017, Eq. 5)."""

    name = "batch_hard"

    def __call__(self, d, d_own, pos, neg, rows, generator=None):
        return d.masked_fill(~pos, -torch.finfo(d.dtype).max).amax(dim=1), _hardest_negative(d, neg)


@MINERS.register("semi_hard")
class SemiHard(Miner):
    """Positive = the own pair; negative = the closest one *farther* than the positive (FaceNet,
    Schroff et al. 2015, Sec. 3.2, Eq. 4); when every negative is closer, the farthest negative
    (the TensorFlow ``triplet_semihard_loss`` convention)."""

    name = "semi_hard"

    def __call__(self, d, d_own, pos, neg, rows, generator=None):
        inf = torch.finfo(d.dtype).max
        farther = neg & (d > d_own[:, None])
        closest_farther = d.masked_fill(~farther, inf).amin(dim=1)
        farthest = d.masked_fill(~neg, -inf).amax(dim=1)
        return d_own, torch.where(farther.any(dim=1), closest_farther, farthest)


@MINERS.register("all")
class AllNegatives(Miner):
    """Positive = the own pair, every negative of the batch: one value per triplet (the "batch all"
    loss of Hermans et al., 2017, Eq. 6, zeros included in the mean)."""

    name = "all"
    per_triplet = True

    def __call__(self, d, d_own, pos, neg, rows, generator=None):
        return d_own[:, None].expand_as(d)[neg], d[neg]


class GivenNegatives(Miner):
    """Negatives chosen by the caller: ``index[r]`` is the candidate used for batch row ``r``
    (hand-checked tests, or a method that mines elsewhere). Each must be a negative of its anchor."""

    name = "given"

    def __init__(self, index: Tensor):
        self.index = torch.as_tensor(index, dtype=torch.long)

    def __call__(self, d, d_own, pos, neg, rows, generator=None):
        j = self.index.to(d.device)[rows]
        if not bool(neg.gather(1, j[:, None]).all()):
            raise ValueError("negatives: expected items of another class than the anchor")
        return d_own, d.gather(1, j[:, None]).squeeze(1)


MINING = tuple(MINERS.names())


def create_miner(miner: str | Miner) -> Miner:
    """A miner by name (see :data:`MINING`); a :class:`Miner` passes through."""
    if isinstance(miner, Miner):
        return miner
    if miner not in MINERS:
        raise ValueError(f"mining: expected one of {', '.join(MINING)}, got {miner!r}")
    return MINERS.get(miner)()


def _step(key: Any) -> Any:
    """A schedule key as a step number: a saved config.yaml gives integer keys back as text."""
    return int(key) if isinstance(key, str) and key.strip().isdigit() else key


class MiningSchedule:
    """Which miner a training step uses: a name (the same at every step) or ``{first_step: name}``,
    e.g. ``{0: all, 300: hard}``: every violating negative for steps 0-299, then the hardest one
    (easy negatives first, hard ones once the embedding has some structure). It must start at
    step 0; each miner holds from its step until the next one's. :meth:`from_options` builds one
    from a method's ``mining`` (step 0) and ``mining_schedule`` (the later switches).
    """

    @classmethod
    def from_options(cls, mining: str, later: Mapping[Any, str] | None) -> MiningSchedule:
        if later is not None and not isinstance(later, Mapping):
            raise ValueError(f"mining_schedule: expected {{first_step: miner}}, got {later!r}")
        later = {_step(k): v for k, v in (later or {}).items()}
        if 0 in later:
            raise ValueError("mining_schedule: expected {first_step: miner} with steps > 0 (step 0 is "
                             f"method.mining), got {later!r}")
        return cls({0: mining, **later})

    def __init__(self, spec: str | Mapping[Any, str]):
        if isinstance(spec, (str, Miner)):
            spec = {0: spec}
        if not isinstance(spec, Mapping) or not spec:
            raise ValueError(f"mining: expected a miner name or a {{first_step: name}} mapping, got {spec!r}")
        stages = []
        for step, name in spec.items():
            step = _step(step)
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"mining: expected integer first steps >= 0 as keys, got {step!r}")
            stages.append((step, create_miner(name)))
        stages.sort(key=lambda x: x[0])
        if stages[0][0] != 0:
            raise ValueError(f"mining: the schedule must start at step 0 (first key {stages[0][0]})")
        self.stages = stages

    def at(self, step: int) -> Miner:
        """The miner of training step ``step``."""
        miner = self.stages[0][1]
        for start, m in self.stages:
            if start > step:
                break
            miner = m
        return miner

    def __repr__(self) -> str:
        if len(self.stages) == 1:
            return repr(self.stages[0][1].name)
        return "{" + ", ".join(f"{k}: {m.name}" for k, m in self.stages) + "}"
