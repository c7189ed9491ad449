"""Feature-space regularisers of a shared sketch/photo feature extractor F: a domain term that
shrinks the sketch-photo gap (L_D) and a category term (L_C), as in Bhunia et al., "Adaptive
Fine-Grained Sketch-Based Image Retrieval" (ECCV 2022), in forms that cannot collapse F.

:func:`domain_terms` (``mode="confusion"``, the default): a discriminator D learns
sketch-vs-photo on *detached* features (its loss ``disc`` reaches D only), and F is trained
towards D's confusion: the cross-entropy between D's output on F's features and the uniform target
0.5, minus its minimum ln 2 (``confusion`` >= 0, = 0 when D cannot tell). Its gradient on a logit z
is ``(sigmoid(z) - 1/2) / n``: bounded, and zero exactly where the modalities are confused, so F
stops being pushed once they are. ``mode="reversal"`` is the gradient-reversal form (Ganin &
Lempitsky, ICML 2015): one BCE whose gradient D descends and F ascends. F can raise an unbounded
BCE without limit, most cheaply by mapping every input of each modality to one point far on the
"wrong" side of D; D then re-learns and the chase repeats (docs/adaptive_fg.md). It is kept to
reproduce the paper's configuration.

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

DOMAIN_MODES = ("confusion", "reversal")


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient times ``-scale`` backward (Ganin & Lempitsky, ICML 2015)."""
    return _ReverseGradient.apply(x, float(scale))


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of sigmoid(logits) against 1/2, minus ln 2: 0 at logit 0, >= 0 everywhere,
    gradient ``(sigmoid(z) - 1/2) / n``."""
    half = torch.full_like(logits, 0.5)
    return F.binary_cross_entropy_with_logits(logits, half) - math.log(2.0)


def domain_discriminator(in_dim: int, hidden: int = 128) -> nn.Module:
    """D: a two-layer MLP from a feature to one logit (sketch = 1, photo = 0)."""
    return nn.Sequential(nn.Linear(int(in_dim), int(hidden)), nn.ReLU(), nn.Linear(int(hidden), 1))


def domain_terms(discriminator: nn.Module, f_sketch: torch.Tensor, f_photo: torch.Tensor, mode: str = "confusion",
                 reversal_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """L_D on F's features of sketches and photos (module docstring): ``{"disc": D's loss,
    "confusion": F's loss, "accuracy": D's accuracy}``. With ``confusion`` the two never mix: ``disc``
    reaches D only (detached features) and ``confusion`` reaches F only (D's weights detached). With
    ``reversal``, ``disc`` is the one reversed BCE (D descends it, F ascends it) and there is no
    ``confusion``."""
    if mode not in DOMAIN_MODES:
        raise ValueError(f"mode: expected one of {', '.join(DOMAIN_MODES)}, got {mode!r}")
    feats = torch.cat([f_sketch, f_photo])
    target = torch.cat([torch.ones(len(f_sketch)), torch.zeros(len(f_photo))]).to(feats)
    if mode == "reversal":
        logits = discriminator(reverse_gradient(feats, reversal_scale)).squeeze(1)
        out = {"disc": F.binary_cross_entropy_with_logits(logits, target)}
    else:
        logits = discriminator(feats.detach()).squeeze(1)
        frozen = {n: p.detach() for n, p in discriminator.named_parameters()}
        to_f = functional_call(discriminator, frozen, (feats,)).squeeze(1)
        out = {"disc": F.binary_cross_entropy_with_logits(logits, target), "confusion": confusion_loss(to_f)}
    out["accuracy"] = ((logits.detach() > 0).to(target) == target).to(target).mean()
    return out


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
