"""Learning-rate schedules as ``LambdaLR`` multipliers (plain attributes, so they checkpoint)."""

from __future__ import annotations

import math


class WarmupCosine:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total`` steps
    (Loshchilov & Hutter, SGDR, ICLR 2017, Eq. 5 without restarts; warmup as Goyal et al. 2017)."""

    def __init__(self, total: int, warmup: int = 0, min_ratio: float = 0.0, cosine: bool = True):
        self.total, self.warmup = max(1, int(total)), max(0, int(warmup))
        self.min_ratio, self.cosine = float(min_ratio), bool(cosine)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
