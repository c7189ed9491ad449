"""The options of ``crossx_dfl`` (``method:`` section) and their checks; the logged term names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...errors import ConfigError
from .students import STUDENT_INITS

VARIANTS = ("crossx_dfl", "unimodal", "gaussian_prior", "deepinversion", "alternative_data", "classifier_only",
            "averaging")
ESTIMATOR_TERMS = ("onehot", "balance", "activation", "align", "guidance", "adv_kl", "adv_euclid", "bn")
STUDENT_TERMS = ("nce", "proxy_kl", "proxy_euclid", "proxy_cross", "anchor")
LOGGED_TERMS = (*ESTIMATOR_TERMS, "tv", "l2", "guidance_grad")  # est/<term> in metrics.jsonl: the latest round's means
VALIDATION_SEED = 0x5EED


def _default_teacher(modality: str) -> dict:
    return {"preset": f"classifier-synthetic-{modality}"}


@dataclass
class Options:
    """``method.*`` of ``crossx_dfl`` (``docs/data_free.md`` explains each)."""

    variant: str = "crossx_dfl"
    photo_teacher: dict = field(default_factory=lambda: _default_teacher("photo"))
    sketch_teacher: dict = field(default_factory=lambda: _default_teacher("sketch"))
    discriminator: dict | None = field(default_factory=lambda: {"preset": "modality_discriminator-synthetic"})
    class_overlap: float = 1.0  # preset teachers on synthetic data: the shared fraction of the union
    overlap_seed: int = 0
    substitute: dict | None = None  # alternative_data: the data section of the substitute dataset
    classifier_output: str = "logits"  # classifier_only: logits (centred) or probs
    # estimators
    image_size: int = 32
    noise_dim: int = 64
    width: int = 16
    sketch_channels: int = 1
    sketch_estimator: str = "conv"  # conv | strokes (Bezier strokes through a differentiable rasteriser)
    stroke_count: int = 8
    stroke_curve: str = "cubic"  # quadratic | cubic
    stroke_widths: list = field(default_factory=lambda: [1.0, 3.0])  # least, most (pixels)
    estimator_batch: int = 64
    estimator_every: int = 10
    estimator_steps: int = 5
    meta_init: bool = True
    inner_lr: float = 0.01
    estimator_lr: float = 0.01
    pool_size: int = 2048
    pool_filter: str = "none"  # none | agree: only pairs both teachers give the same shared class
    # estimator objective weights (0 switches a term off)
    w_onehot: float = 1.0
    w_balance: float = 5.0
    w_activation: float = 0.1
    w_align: float = 1.0
    w_guidance: float = 1.0
    w_adv_kl: float = 0.5
    w_adv_euclid: float = 0.5
    w_bn: float = 0.0
    bn_sides: list = field(default_factory=lambda: ["photo", "sketch"])  # whose BatchNorm statistics w_bn matches
    bn_first_multiplier: float = 1.0  # DeepInversion weighs each teacher's first BatchNorm layer more (10)
    w_tv: float = 0.0  # DeepInversion's image priors: total variation, and the centred image's
    w_l2: float = 0.0  # mean square, on the bn_sides' generated images
    guidance_warmup: int = 0  # estimator steps before modality guidance joins the objective
    # students
    temperature: float = 0.1
    queue_size: int = 1024
    mask_same_class: bool = False
    w_nce: float = 1.0
    w_proxy_kl: float = 1.0
    w_proxy_euclid: float = 1.0
    w_proxy_cross: float = 0.0
    w_anchor: float = 0.0  # shared class anchors: both students fitted to their teachers over one anchor set
    anchor_temperature: float = 0.1
    proxy_scale: float = 5.0
    euclid_temperature: float = 1.0
    augment: bool = True
    student_init: str = "none"  # none | teachers: each student's backbone starts as its teacher's
    validation_size: int = 256
    # real images read for diagnosis only, never for training: {photos: DIR, sketches: DIR} or
    # {data: <data section>, split: NAME} (diagnostics.load_reference)
    reference: dict | None = None


def check_options(o: Options) -> None:
    """One-line :class:`ConfigError` for the first value out of range (the variant's own needs are
    checked by its class: :mod:`~sbirkit.methods.crossx_dfl.variants`)."""
    if o.variant not in VARIANTS:
        raise ConfigError(f"method.variant: expected one of {', '.join(VARIANTS)}, got {o.variant!r}")
    for key in ("estimator_batch", "estimator_every", "pool_size", "queue_size", "noise_dim", "width",
                "validation_size"):
        value = getattr(o, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"method.{key}: expected a positive integer, got {value!r}")
    if isinstance(o.estimator_steps, bool) or not isinstance(o.estimator_steps, int) or o.estimator_steps < 0:
        raise ConfigError(f"method.estimator_steps: expected an integer >= 0, got {o.estimator_steps!r}")
    for key in [f"w_{t}" for t in ESTIMATOR_TERMS + STUDENT_TERMS] + ["w_tv", "w_l2"]:
        value = getattr(o, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
            raise ConfigError(f"method.{key}: expected a number >= 0 (0 switches the term off), got {value!r}")
    for key in ("temperature", "inner_lr", "estimator_lr", "proxy_scale", "euclid_temperature", "anchor_temperature",
                "bn_first_multiplier"):
        value = getattr(o, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"method.{key}: expected a number > 0, got {value!r}")
    if o.pool_filter not in ("none", "agree"):
        raise ConfigError(f"method.pool_filter: expected 'none' or 'agree', got {o.pool_filter!r}")
    if o.student_init not in STUDENT_INITS:
        raise ConfigError(f"method.student_init: expected one of {', '.join(STUDENT_INITS)}, got {o.student_init!r}")
    if not isinstance(o.bn_sides, (list, tuple)) or not set(o.bn_sides) <= {"photo", "sketch"}:
        raise ConfigError(f"method.bn_sides: expected a list of photo and/or sketch, got {o.bn_sides!r}")
    if isinstance(o.guidance_warmup, bool) or not isinstance(o.guidance_warmup, int) or o.guidance_warmup < 0:
        raise ConfigError(f"method.guidance_warmup: expected an integer >= 0 (estimator steps), got "
                          f"{o.guidance_warmup!r}")
    if o.sketch_channels not in (1, 3):
        raise ConfigError(f"method.sketch_channels: expected 1 or 3, got {o.sketch_channels!r}")
    if not (isinstance(o.class_overlap, (int, float)) and 0.0 < o.class_overlap <= 1.0):
        raise ConfigError(f"method.class_overlap: expected a fraction in (0, 1], got {o.class_overlap!r}")
