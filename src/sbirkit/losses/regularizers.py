"""Feature-space regularisers of a shared sketch/photo feature extractor F: a domain term that
shrinks the sketch-photo gap (L_D) and a category term (L_C), as in Bhunia et al., "Adaptive
Fine-Grained Sketch-Based Image Retrieval" (ECCV 2022), in forms that do not reward collapsing F.

:func:`domain_terms`: a discriminator D learns sketch-vs-photo on *detached* features (its loss
``disc`` reaches D only), and F is trained towards D's confusion (Tzeng et al., "Simultaneous deep
transfer across domains and tasks", ICCV 2015): the cross-entropy between D's output on F's
features and the uniform target 1/2, minus its minimum ln 2 (``confusion`` >= 0, = 0 when D cannot
tell). Its gradient on a logit z is ``(sigmoid(z) - 1/2) / n``: bounded, and zero exactly where
the modalities are confused, so F stops being pushed once they are. The first implementation
instead reversed D's gradient into F (Ganin & Lempitsky, ICML 2015): F then *ascends* an unbounded
BCE, whose maximum is not confusion but D confidently wrong, so F flips the modalities past each
other, D re-learns, and the chase repeats with ever larger feature moves; measured, it widened the
gap on a fixed feature set and collapsed the trained model's features (docs/adaptive_fg.md,
tests/losses/test_regularizers.py). It is not offered.

:class:`CosineClassifier`: cross-entropy over ``s * cos(f, w_c)`` (L2-normalised features
and class weights, scale ``s`` learned from ``scale``), so the term depends on the features'
directions only and cannot be lowered by growing or shrinking them (Wang et al., "CosFace", CVPR
2018, without the margin).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of sigmoid(logits) against 1/2, minus ln 2: 0 at logit 0, >= 0 everywhere,
    gradient ``(sigmoid(z) - 1/2) / n``."""
    half = torch.full_like(logits, 0.5)
    return F.binary_cross_entropy_with_logits(logits, half) - math.log(2.0)


def domain_discriminator(in_dim: int, hidden: int = 128) -> nn.Module:
    """D: a two-layer MLP from a feature to one logit (sketch = 1, photo = 0)."""
    return nn.Sequential(nn.Linear(int(in_dim), int(hidden)), nn.ReLU(), nn.Linear(int(hidden), 1))


def domain_terms(discriminator: nn.Module, f_sketch: torch.Tensor, f_photo: torch.Tensor) -> dict[str, torch.Tensor]:
    """L_D on F's features of sketches and photos (module docstring): ``{"disc": D's loss,
    "confusion": F's loss, "accuracy": D's accuracy}``. The two never mix: ``disc`` reaches D only
    (detached features) and ``confusion`` reaches F only (D's weights detached)."""
    feats = torch.cat([f_sketch, f_photo])
    target = torch.cat([torch.ones(len(f_sketch)), torch.zeros(len(f_photo))]).to(feats)
    logits = discriminator(feats.detach()).squeeze(1)
    frozen = {n: p.detach() for n, p in discriminator.named_parameters()}
    to_f = functional_call(discriminator, frozen, (feats,)).squeeze(1)
    return {"disc": F.binary_cross_entropy_with_logits(logits, target), "confusion": confusion_loss(to_f),
            "accuracy": ((logits.detach() > 0).to(target) == target).to(target).mean()}


class CosineClassifier(nn.Module):
    """Logits ``scale * cos(f, w_c)`` over the classes; ``learn_scale``: the scale is a parameter
    (kept positive through its logarithm), else fixed. L_C = cross-entropy over these logits."""

    def __init__(self, in_dim: int, num_classes: int, scale: float = 10.0, learn_scale: bool = True):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale: expected > 0, got {scale}")
        self.weight = nn.Parameter(torch.randn(int(num_classes), int(in_dim)) / math.sqrt(in_dim))
        log_scale = torch.tensor(math.log(float(scale)))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T
