"""Data-free SBIR: CrossX-DFL (Chaudhuri, Bhunia, Song, Dutta, CVPR 2023) and its baselines.

Sketch and photo encoders (students) are trained from two frozen classifiers (teachers, one per
modality; :mod:`sbirkit.methods.teachers`) without a single training image. The loop, per
trainer step (the engine's generated source: ``train_source`` -> ``ctx.generated()``, manual
optimisation, named optimisers ``estimator`` and ``student``):

1. every ``estimator_every`` steps, an **estimator round**: two estimators (generators) g^p, g^s
   fed the *same* noise ξ (no class input) are optimised for ``estimator_steps`` steps on the
   estimator objective (the poster's "Semantic Consistency Loss", "Class Alignment", "Modality
   Guidance" and "Metric-Agnostic Adversarial Estimation", and optionally DeepInversion's
   BatchNorm statistics; the equations are in :mod:`sbirkit.losses.data_free`), with the students
   in eval mode. With ``meta_init`` (Fast-Datafree, Fang et al., AAAI 2022) each round starts a
   fresh copy of the estimators from a meta-initialisation, adapts it for the few steps, and moves
   the meta-initialisation towards the adapted weights (Reptile: the ``estimator`` optimiser
   steps with gradient θ - θ'); without it the estimators are trained in place (the official
   schedule). The round's pairs (photo, sketch, both teachers' class distributions, a
   pseudo-label) are written, as 8-bit images like real ones, into a **pool** (a ring buffer);
2. a **student step** on a batch drawn from the pool: cross-modal InfoNCE ("Cross-Modal
   Contrastive Learning") with a MoCo-style negative queue that takes every step's embeddings
   whatever the batch size, plus the proxy term (the students' distributions over each teacher's
   class proxies matched to the teacher's, probabilistic and Euclidean).

Everything kept across steps (estimators, students, proxy maps, pool, queue, counters) is a
parameter or a buffer, so it is in ``last.pt``; everything random comes from the batch seed,
``ctx.generator()`` or torch's global RNG, so a run killed at any moment resumes exactly. One
input convention end to end: estimators output RGB (sketches: grey) images in [0, 1] at
``image_size``, which teachers, students and the discriminator read exactly as they read real
images (each normalising them itself). Teacher features come from the same forward pass as the
logits (a hook on the final layer). Model selection uses generated validation batches from held
out noise (``generated/map``, ``generated/agreement``) unless the run names ``eval.data``.

``method.variant`` selects the method or one of the paper's baselines (``docs/data_free.md``
gives each definition): ``crossx_dfl``; ``unimodal`` (data-free distillation per modality, no
cross-modal terms, retrieval in the shared label space); ``gaussian_prior`` (Gaussian images
instead of estimators); ``deepinversion`` (the "meta-data" baseline: pixels optimised to a class
and the teacher's BatchNorm statistics); ``alternative_data`` (a substitute dataset instead of
estimators); and two training-free ones: ``classifier_only`` (the teachers' outputs over the
shared classes) and ``averaging`` (the two teachers' weights averaged into one encoder).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..losses import data_free as L
from . import dfl_diagnostics
from .base import Method
from .dfl_estimators import Estimator, build_estimators, rgb  # noqa: F401  (Estimator re-exported)
from .dfl_students import STUDENT_INITS, init_students_from_teachers
from .registry import register_method
from .teachers import (
    LabelSpace,
    Teacher,
    TeacherNotTrained,
    build_label_space,
    load_class_map,
    load_discriminator,
    load_teacher,
)

VARIANTS = ("crossx_dfl", "unimodal", "gaussian_prior", "deepinversion", "alternative_data", "classifier_only",
            "averaging")
TRAINING_FREE = ("classifier_only", "averaging")
GENERATOR_VARIANTS = ("crossx_dfl", "unimodal")
POOL_VARIANTS = ("crossx_dfl", "unimodal", "gaussian_prior", "deepinversion")
ESTIMATOR_TERMS = ("onehot", "balance", "activation", "align", "guidance", "adv_kl", "adv_euclid", "bn")
STUDENT_TERMS = ("nce", "proxy_kl", "proxy_euclid", "proxy_cross", "anchor")
LOGGED_TERMS = (*ESTIMATOR_TERMS, "tv", "l2", "guidance_grad")  # est/<term> in metrics.jsonl: the latest round's means
VALIDATION_SEED = 0x5EED


# ---- student-side proxies --------------------------------------------------------------------------
class ProxyHeads(nn.Module):
    """The teachers' class proxies in the students' embedding space: ``P^m_k = A^m w^m_k`` for each
    teacher class k a target uses (``w^m_k`` its final-layer weights, a buffer; ``A^m`` learned),
    with the class-map tensors. Built in ``setup`` from the teachers, or from a checkpoint's shapes."""

    def __init__(self):
        super().__init__()
        self.maps = nn.ModuleDict()
        self.built = False

    def build(self, space: LabelSpace, teachers: dict[str, Teacher], embed_dim: int, scale: float,
              anchors: bool = False) -> None:
        """With ``anchors``, also one learned unit vector per shared class that both students share
        (the ``w_anchor`` objective)."""
        if anchors:
            self.anchors = nn.Parameter(F.normalize(torch.randn(len(space.shared), embed_dim), dim=1))
        for m, teacher in teachers.items():
            labels = space.teachers[m]
            weight = teacher.final.weight.detach()[labels.natives.to(teacher.final.weight.device)].float().cpu()
            a = nn.Linear(weight.shape[1], embed_dim, bias=False)
            with torch.no_grad():
                norm = a(weight).norm(dim=1).mean().clamp_min(1e-6)
                a.weight.mul_(float(scale) / norm)
            self.maps[m] = a
            self.register_buffer(f"weight_{m}", weight.clone())
            self.register_buffer(f"member_{m}", labels.member.clone())
            self.register_buffer(f"covered_{m}", labels.covered.clone())
        self.register_buffer("shared", torch.tensor(space.shared, dtype=torch.long))
        self.built = True

    def materialise(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Create the modules and buffers a checkpoint holds (``load_run`` has no teachers)."""
        for m in ("photo", "sketch"):
            w = state.get(f"{prefix}maps.{m}.weight")
            if w is None:
                continue
            if m not in self.maps or self.maps[m].weight.shape != w.shape:
                self.maps[m] = nn.Linear(w.shape[1], w.shape[0], bias=False)
            for name in (f"weight_{m}", f"member_{m}", f"covered_{m}"):
                if f"{prefix}{name}" in state:
                    self.register_buffer(name, torch.zeros_like(state[f"{prefix}{name}"]))
        if f"{prefix}shared" in state:
            self.register_buffer("shared", torch.zeros_like(state[f"{prefix}shared"]))
            self.built = True
        if f"{prefix}anchors" in state:
            self.anchors = nn.Parameter(torch.zeros_like(state[f"{prefix}anchors"]))

    def proxies(self, m: str) -> torch.Tensor:
        return self.maps[m](getattr(self, f"weight_{m}"))

    def covered(self, m: str) -> torch.Tensor:
        return getattr(self, f"covered_{m}")

    def distribution(self, z: torch.Tensor, m: str, kind: str, euclid_temperature: float) -> torch.Tensor:
        """The student's distribution over teacher m's covered targets (``(B, T)``, 0 elsewhere)."""
        logits = L.proxy_logits(z.float(), self.proxies(m).float(), kind, euclid_temperature)
        return L.student_distribution(logits, getattr(self, f"member_{m}"), self.covered(m))


# ---- evaluation encoders of the class-space variants ---------------------------------------------
class ClassSpaceEncoder(nn.Module):
    """Students whose retrieval embedding is their distribution over the shared classes (through
    the proxies): the ``unimodal`` baseline, whose two students share no metric space."""

    def __init__(self, students: nn.Module):
        super().__init__()
        self.students = students
        object.__setattr__(self, "_heads", None)  # the method's ProxyHeads (not registered twice)
        self.config = getattr(students, "config", {})

    def attach(self, heads: ProxyHeads) -> None:
        object.__setattr__(self, "_heads", heads)

    @property
    def embed_dim(self) -> int:
        return int(self._heads.shared.numel()) if self._heads is not None and self._heads.built else 0

    def encode(self, x, modality):
        m = str(getattr(modality, "value", modality))
        z = self.students.encode(x, m)
        q = self._heads.distribution(z, m, "prob", 1.0)[:, self._heads.shared]
        return F.normalize(q / q.sum(1, keepdim=True).clamp_min(1e-12), dim=1)

    def encode_sketch(self, x):
        return self.encode(x, "sketch")

    def encode_photo(self, x):
        return self.encode(x, "photo")

    def forward(self, x, modality):
        return self.encode(x, modality)

    def __getattr__(self, name):  # branch(), branches(), backbone_parameters(), freeze_*: the students'
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("students"), name)


class _TeacherSpaceEncoder(nn.Module):
    """What the training-free baselines' encoders share: ``encode(x, modality)`` does the work;
    there is no backbone BatchNorm of their own to freeze."""

    def encode_sketch(self, x):
        return self.encode(x, "sketch")

    def encode_photo(self, x):
        return self.encode(x, "photo")

    def forward(self, x, modality):
        return self.encode(x, modality)

    def freeze_backbone_norm(self):
        pass


class TeacherEncoder(_TeacherSpaceEncoder):
    """The ``classifier_only`` baseline: each modality embedded by its teacher's output over the
    shared classes (``output: logits``: the class logits, centred; ``probs``: the renormalised
    probabilities), compared by cosine."""

    def __init__(self, photo: Teacher, sketch: Teacher, space: LabelSpace, output: str = "logits"):
        super().__init__()
        if output not in ("logits", "probs"):
            raise ConfigError(f"method.classifier_output: expected 'logits' or 'probs', got {output!r}")
        self.photo_teacher, self.sketch_teacher, self.output = photo, sketch, output
        for m in ("photo", "sketch"):
            labels = space.teachers[m]
            self.register_buffer(f"natives_{m}", labels.natives.clone())
            self.register_buffer(f"member_{m}", labels.member.clone())
            self.register_buffer(f"covered_{m}", labels.covered.clone())
        self.register_buffer("shared", torch.tensor(space.shared, dtype=torch.long))
        self.config = {}

    @property
    def embed_dim(self) -> int:
        return int(self.shared.numel())

    def encode(self, x, modality):
        m = str(getattr(modality, "value", modality))
        teacher = self.photo_teacher if m == "photo" else self.sketch_teacher
        logits, _ = teacher(x)
        natives, member = getattr(self, f"natives_{m}"), getattr(self, f"member_{m}")
        if self.output == "probs":
            v = L.renormalise(L.target_mass(logits, natives, member), getattr(self, f"covered_{m}"))[:, self.shared]
        else:  # a target's logit: log-sum-exp over the teacher classes mapped to it
            sub = logits.float()[:, natives]
            v = torch.logsumexp(sub[:, :, None] + member.clamp_min(1e-30).log()[None], dim=1)[:, self.shared]
            v = v - v.mean(1, keepdim=True)
        return F.normalize(v, dim=1)


class AveragedEncoder(_TeacherSpaceEncoder):
    """The ``averaging`` baseline: one network with the mean of the two teachers' weights embeds
    both modalities by its features (the final layer's input), L2-normalised."""

    def __init__(self, photo: Teacher, sketch: Teacher):
        super().__init__()
        a, b = photo.net.state_dict(), sketch.net.state_dict()
        final = photo._final_name + "."
        if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a if not k.startswith(final)):
            raise ConfigError("method.variant=averaging: expected two teachers of one architecture (same weight "
                              f"names and shapes); got {photo.source} and {sketch.source}")
        net = copy.deepcopy(photo.net)
        avg = {k: ((a[k].float() + b[k].float()) / 2).to(a[k].dtype) if a[k].is_floating_point()
               and a[k].shape == b[k].shape else a[k] for k in a}
        net.load_state_dict(avg)
        self.teacher = Teacher(net, net.get_submodule(photo._final_name), photo.class_names, "photo",
                               f"mean of {photo.source} and {sketch.source}", photo.input_size)
        self.config = {}

    @property
    def embed_dim(self) -> int:
        return self.teacher.feature_dim

    def encode(self, x, modality):
        return F.normalize(self.teacher(x)[1], dim=1)


@contextlib.contextmanager
def _bn_statistics(teacher: Teacher, out: list):
    """Collect ``(batch mean, batch var, running mean, running var)`` of every BatchNorm input."""
    def hook(module, inputs):
        x = inputs[0].float()
        dims = [0, 2, 3] if x.ndim == 4 else [0]
        out.append((x.mean(dims), x.var(dims, unbiased=False), module.running_mean.float(), module.running_var.float()))

    handles = [m.register_forward_pre_hook(hook) for m in teacher.bn_layers()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _frozen(module: nn.Module):
    """``module`` in eval mode with no parameter gradients for the block (students during estimator steps)."""
    params = [p for p in module.parameters() if p.requires_grad]
    was = module.training
    module.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        module.train(was)


def _default_teacher(modality: str) -> dict:
    return {"preset": f"classifier-synthetic-{modality}"}


@register_method("crossx_dfl", "data-free SBIR from a photo and a sketch classifier (CrossX-DFL, CVPR 2023)")
class CrossXDFL(Method):
    """CrossX-DFL and its baselines (see the module docstring)."""

    name = "crossx_dfl"
    manual_optimization = True

    @dataclass
    class Options:
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
        # {data: <data section>, split: NAME} (dfl_diagnostics.load_reference)
        reference: dict | None = None

    # ---- construction -----------------------------------------------------------------------------
    def __init__(self, encoder, options=None, frozen: dict | None = None):
        super().__init__(encoder, options)
        o = self.options
        self._check_options()
        object.__setattr__(self, "_frozen", dict(frozen or {}))  # teachers, discriminator: not in the state dict
        if o.variant in TRAINING_FREE:
            self.anchor = nn.Parameter(torch.zeros(()))  # the engine builds one optimiser; nothing learns
            return
        if o.variant == "unimodal":
            self.encoder = ClassSpaceEncoder(encoder)
        self.heads = ProxyHeads()
        if isinstance(self.encoder, ClassSpaceEncoder):
            self.encoder.attach(self.heads)
        if o.variant in GENERATOR_VARIANTS:
            self.estimators = build_estimators(o)
        d = self.students.embed_dim
        self.register_buffer("queue_photo", torch.zeros(o.queue_size, d))
        self.register_buffer("queue_sketch", torch.zeros(o.queue_size, d))
        self.register_buffer("queue_label", torch.full((o.queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        if o.variant in POOL_VARIANTS:
            s = o.image_size
            self.register_buffer("pool_photo", torch.zeros(o.pool_size, 3, s, s, dtype=torch.uint8))
            self.register_buffer("pool_sketch", torch.zeros(o.pool_size, o.sketch_channels, s, s, dtype=torch.uint8))
            self.register_buffer("pool_label", torch.full((o.pool_size,), -1, dtype=torch.long))
            self.register_buffer("pool_count", torch.zeros((), dtype=torch.long))
            self.register_buffer("pool_prob_photo", torch.zeros(o.pool_size, 0))
            self.register_buffer("pool_prob_sketch", torch.zeros(o.pool_size, 0))
        self.register_buffer("estimator_step_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("round_terms", torch.full((len(LOGGED_TERMS),), float("nan")))
        self.register_buffer("teacher_fingerprint", torch.zeros(2, dtype=torch.long))

    def _check_options(self) -> None:
        o = self.options
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
        if o.variant == "alternative_data" and not isinstance(o.substitute, dict):
            raise ConfigError("method.substitute: variant alternative_data needs the substitute dataset's data "
                              "section, e.g. {name: synthetic, options: {...}}")

    @classmethod
    def from_config(cls, config):
        from ..models import create_encoder

        options = cls.parse_options(config.get("method"))
        encoder = create_encoder(**dict(config.get("model") or {}))
        if options.variant not in TRAINING_FREE:
            return cls(encoder, options)
        # training-free: the teachers are the model (and in the checkpoint). Teachers that must be
        # trained first are trained in setup (so that a dry run trains nothing); until then the
        # method holds the unused students.
        method = cls(encoder, options)
        base = Path(config["run_dir"]).parent if config.get("run_dir") else None
        try:
            method._build_teacher_encoder(base, False, train_missing=False)
        except TeacherNotTrained:
            pass
        return method

    def _build_teacher_encoder(self, base: Path | None, progress: bool, train_missing: bool = True) -> None:
        photo, sketch, space = self._load_teachers(base, progress, train_missing)
        object.__setattr__(self, "_frozen", {"photo": photo, "sketch": sketch})
        if self.options.variant == "classifier_only":
            self.encoder = TeacherEncoder(photo, sketch, space, self.options.classifier_output)
        else:
            self.encoder = AveragedEncoder(photo, sketch)

    # ---- teachers ----------------------------------------------------------------------------------
    @property
    def students(self) -> nn.Module:
        return self.encoder.students if isinstance(self.encoder, ClassSpaceEncoder) else self.encoder

    def _teacher_specs(self) -> tuple[dict, dict]:
        """The two teacher specs; with ``class_overlap`` < 1 and preset teachers on the synthetic
        data, each trained on its part of the union (see :func:`overlap_classes`)."""
        o = self.options
        photo, sketch = dict(o.photo_teacher), dict(o.sketch_teacher)
        if o.class_overlap < 1.0:
            if not (photo.get("preset") and sketch.get("preset")):
                raise ConfigError("method.class_overlap: < 1 trains preset teachers on parts of the class set; "
                                  "both teachers must be preset: ones")
            from ..engine.config import apply_overrides, load_preset

            unions = [_synthetic_classes(dict(apply_overrides(load_preset(spec["preset"]), list(
                spec.get("overrides") or []))["data"].get("options") or {})) for spec in (photo, sketch)]
            if unions[0] != unions[1]:
                raise ConfigError("method.class_overlap: the two teacher presets train on different class sets; "
                                  "expected the same synthetic classes to split")
            union = unions[0]
            p_cls, s_cls = overlap_classes(union, o.class_overlap, o.overlap_seed)
            for spec, classes in ((photo, p_cls), (sketch, s_cls)):
                spec["overrides"] = [*(spec.get("overrides") or []),
                                     f"data.options.classes={list(classes)}", "data.options.num_classes=null"]
        return photo, sketch

    def _load_teachers(self, base_dir: Path | None, progress: bool = True,
                       train_missing: bool = True) -> tuple[Teacher, Teacher, LabelSpace]:
        photo_spec, sketch_spec = self._teacher_specs()
        photo = load_teacher(photo_spec, "photo", "method.photo_teacher", base_dir, progress, train_missing)
        sketch = load_teacher(sketch_spec, "sketch", "method.sketch_teacher", base_dir, progress, train_missing)
        space = build_label_space(photo, sketch, load_class_map(photo_spec.get("class_map"), "method.photo_teacher"),
                                  load_class_map(sketch_spec.get("class_map"), "method.sketch_teacher"))
        return photo, sketch, space

    def setup(self, ctx) -> None:
        """Load (or first train) the teachers and the discriminator, build the label space and the
        proxies. The training data (``ctx.dataset``, the evaluation data of a data-free preset) is
        never read."""
        o = self.options
        base = Path(ctx.run_dir).parent if ctx.run_dir is not None else None
        dry = bool(getattr(ctx, "dry_run", False))
        try:
            if o.variant in TRAINING_FREE:
                if "photo" not in self._frozen:  # from_config found teachers still to train
                    self._build_teacher_encoder(base, ctx.train.progress, train_missing=not dry)
                return
            photo, sketch, space = self.attach_teachers(base, ctx.device, ctx.train.progress, train_missing=not dry)
        except TeacherNotTrained as exc:  # a dry run: report what training would do first
            print(f"# {exc}", file=sys.stderr)
            return
        if o.student_init == "teachers":  # (a resumed run then loads its own weights over these)
            init_students_from_teachers(self.students, {"photo": photo, "sketch": sketch})
        self.heads.build(space, {"photo": photo, "sketch": sketch}, self.students.embed_dim, o.proxy_scale,
                         anchors=o.w_anchor > 0)
        if o.variant in POOL_VARIANTS:
            t = space.num_targets
            self.pool_prob_photo = torch.zeros(o.pool_size, t)
            self.pool_prob_sketch = torch.zeros(o.pool_size, t)
        self.teacher_fingerprint = torch.tensor([photo.fingerprint(), sketch.fingerprint()], dtype=torch.long)
        if o.variant == "alternative_data":
            self._substitute_dataset()
        if o.reference is not None:  # read (and checked) now, not at the first validation
            self.reference_images(ctx.device)

    def attach_teachers(self, base_dir: Path | None, device, progress: bool = True, train_missing: bool = True):
        """Load the teachers and the discriminator the options name (``base_dir``: where preset
        runs live) and the label space; they are kept outside the state dict."""
        o = self.options
        photo, sketch, space = self._load_teachers(base_dir, progress, train_missing)
        frozen = {"photo": photo.to(device), "sketch": sketch.to(device)}
        if o.w_guidance > 0 and o.variant in GENERATOR_VARIANTS:
            if o.discriminator is None:
                raise ConfigError("method.discriminator: modality guidance (w_guidance > 0) needs a discriminator; "
                                  "set one or w_guidance=0")
            frozen["discriminator"] = load_discriminator(o.discriminator, "method.discriminator", base_dir,
                                                         progress, train_missing).to(device)
        sides = o.bn_sides if o.variant in GENERATOR_VARIANTS else ("photo", "sketch")
        if o.w_bn > 0 and not any(frozen[m].bn_layers() for m in sides):
            raise ConfigError(f"method.w_bn: no teacher of bn_sides ({', '.join(sides)}: {photo.source}, "
                              f"{sketch.source}) has BatchNorm layers (DeepInversion matches their statistics); set "
                              "w_bn=0")
        object.__setattr__(self, "_frozen", frozen)
        object.__setattr__(self, "space", space)
        return photo, sketch, space

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Create what depends on the teachers from the checkpoint's shapes when they are not loaded
        (``load_run``), and refuse to resume with teachers other than the run's."""
        state = dict(state_dict)
        terms = state.get("round_terms")
        if terms is not None and hasattr(self, "round_terms") and terms.shape != self.round_terms.shape:
            # a checkpoint from before a logged term was added: the new terms start unlogged (nan)
            state["round_terms"] = torch.cat([terms, torch.full((len(LOGGED_TERMS),), float("nan"))])[:len(LOGGED_TERMS)]
        if hasattr(self, "heads"):
            if not self.heads.built:
                self.heads.materialise(state, "heads.")
            for name in ("pool_prob_photo", "pool_prob_sketch"):
                if name in state and getattr(self, name).shape != state[name].shape:
                    setattr(self, name, torch.zeros_like(state[name]))
            saved = state.get("teacher_fingerprint")
            if saved is not None and "photo" in self._frozen and not torch.equal(saved.cpu(),
                                                                                 self.teacher_fingerprint.cpu()):
                raise CheckpointError("last.pt: teacher_fingerprint: the teachers differ from the ones this run "
                                      "started with; resume with the same teachers or use another run_dir")
        return super().load_state_dict(state, strict=strict, assign=assign)

    def _substitute_dataset(self):
        from ..engine.datasets import build_dataset

        if not hasattr(self, "_substitute"):
            ds = build_dataset(self.options.substitute)
            if self.options.substitute.get("cache_images"):
                from ..data.image_cache import cached_images

                ds = cached_images(ds)
            if int(ds.image_size) != int(self.options.image_size):
                raise ConfigError(f"method.substitute: images of {ds.image_size} px, expected method.image_size="
                                  f"{self.options.image_size} (one resolution end to end)")
            object.__setattr__(self, "_substitute", ds)
        return self._substitute

    # ---- the engine's hooks -----------------------------------------------------------------------------
    def train_source(self, ctx):
        if self.options.variant == "alternative_data":
            from ..data.samplers import PairBatchSampler
            from ..engine.sources import PairSource

            ds = self._substitute_dataset()
            split = self.options.substitute.get("train_split", "train")
            mode = "instance" if ds.pairs(split) else "class"
            return PairSource(PairBatchSampler(ds, split, ctx.train.batch_size, mode, None, seed=ctx.seed))
        return ctx.generated()

    def configure_optimizers(self, train):
        """``student``: the students and the proxy maps, the students' backbones at
        ``train.backbone_lr`` when it is set; ``estimator``: the estimators (Adam, constant rate)."""
        from ..engine.optim import OptimizerSpec, default_param_groups

        o = self.options
        if o.variant in TRAINING_FREE:
            return {"main": OptimizerSpec([self.anchor], lr=0.0)}
        trained = nn.ModuleList([self.students, self.heads])  # a view: the modules stay where they are
        specs = {"student": OptimizerSpec(default_param_groups(trained, train, self.students.backbone_parameters()))}
        if o.variant in GENERATOR_VARIANTS:
            specs["estimator"] = OptimizerSpec(list(self.estimators.parameters()), optimizer="adam",
                                               lr=o.estimator_lr, betas=(0.5, 0.999), weight_decay=0.0,
                                               schedule="constant", warmup_steps=0, grad_clip=0.0)
        return specs

    def train_mode(self, train):
        self.train()
        if train.backbone_bn == "frozen" and hasattr(self.encoder, "freeze_backbone_norm"):
            self.encoder.freeze_backbone_norm()

    def training_step(self, batch, ctx):
        o = self.options
        if o.variant in TRAINING_FREE:
            ctx.step("main")  # no gradient: nothing changes (keeps the schedule's order check quiet)
            return {}
        logs: dict[str, torch.Tensor] = {}
        if o.variant == "alternative_data":
            photos, sketches = batch["photo"], batch["sketch"]
            with torch.no_grad():  # (augmented images are labelled again in the student step)
                t_photo, t_sketch = self._teacher_targets(photos, sketches)
            labels = (t_photo + t_sketch).argmax(1)
        else:
            if int(batch["step"]) % o.estimator_every == 0 or int(self.pool_count) == 0:
                self._estimator_round(int(batch["seed"]), ctx)
            logs.update({f"est/{k}": self.round_terms[i].clone() for i, k in enumerate(LOGGED_TERMS)
                         if not torch.isnan(self.round_terms[i])})
            photos, sketches, t_photo, t_sketch, labels = self._pool_batch(ctx, int(batch["batch_size"]))
        logs.update(self._student_step(photos, sketches, t_photo, t_sketch, labels, ctx))
        logs["estimator_steps"] = self.estimator_step_count.detach().float()
        return logs

    # ---- teachers on images ------------------------------------------------------------------------
    def _teacher_targets(self, photos, sketches):
        """Both teachers' renormalised distributions over their covered targets, ``(B, T)`` each."""
        out = []
        for m, x in (("photo", photos), ("sketch", sketches)):
            labels = self.space.teachers[m]
            logits, _ = self._frozen[m](rgb(x))
            mass = L.target_mass(logits, labels.natives.to(x.device), labels.member.to(x.device))
            out.append(L.renormalise(mass, labels.covered.to(x.device)))
        return out

    # ---- the estimator objective -------------------------------------------------------------------
    def estimator_objective(self, photos: torch.Tensor, sketches: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The weighted sum of the switched-on estimator terms on a batch of generated pairs
        (``photos`` RGB, ``sketches`` grey or RGB, in [0, 1]) and the unweighted terms."""
        o, dev = self.options, photos.device
        generated = {"photo": photos, "sketch": sketches}
        sketches = rgb(sketches)
        terms: dict[str, torch.Tensor] = {}
        dist, feats, masses = {}, {}, {}
        bn: dict[str, list] = {"photo": [], "sketch": []}
        for m, x in (("photo", photos), ("sketch", sketches)):
            labels = self.space.teachers[m]
            match_bn = o.w_bn > 0 and m in o.bn_sides
            with _bn_statistics(self._frozen[m], bn[m]) if match_bn else contextlib.nullcontext():
                logits, feats[m] = self._frozen[m](x)
            masses[m] = L.target_mass(logits, labels.natives.to(dev), labels.member.to(dev))
            dist[m] = L.renormalise(masses[m], labels.covered.to(dev))
        cov = {m: self.space.teachers[m].covered.to(dev) for m in dist}
        if o.w_onehot:
            terms["onehot"] = L.one_hot_loss(masses["photo"], cov["photo"]) + L.one_hot_loss(masses["sketch"],
                                                                                           cov["sketch"])
        if o.w_balance:
            terms["balance"] = L.class_balance_loss(dist["photo"], cov["photo"]) + \
                L.class_balance_loss(dist["sketch"], cov["sketch"])
        if o.w_activation:
            terms["activation"] = L.activation_loss(feats["photo"]) + L.activation_loss(feats["sketch"])
        if o.w_align and o.variant == "crossx_dfl":
            terms["align"] = L.class_alignment_loss(dist["photo"], dist["sketch"],
                                                    torch.tensor(self.space.shared, device=dev))
        weights = {k: getattr(o, f"w_{k}") for k in (*ESTIMATOR_TERMS, "tv", "l2")}
        logged: dict[str, torch.Tensor] = {}
        if o.w_guidance and "discriminator" in self._frozen and o.variant == "crossx_dfl":
            d = self._frozen["discriminator"]
            terms["guidance"] = L.modality_guidance_loss(d(photos), d(sketches))
            if int(self.estimator_step_count) < o.guidance_warmup:  # the estimators first satisfy the teachers
                weights["guidance"] = 0.0
            if torch.is_grad_enabled() and photos.requires_grad:  # is the discriminator saturated? (issue 19)
                grads = torch.autograd.grad(terms["guidance"], [generated["photo"], generated["sketch"]],
                                            retain_graph=True, allow_unused=True)
                logged["guidance_grad"] = sum(g.flatten(1).norm(dim=1).mean() for g in grads if g is not None)
        if o.w_adv_kl or o.w_adv_euclid:
            z = {"photo": self.students.encode_photo(photos), "sketch": self.students.encode_sketch(sketches)}
            for kind, key in (("prob", "adv_kl"), ("euclid", "adv_euclid")):
                if getattr(o, f"w_{key}"):
                    terms[key] = -sum(L.kl_divergence(dist[m], self.heads.distribution(z[m], m, kind,
                                                                                     o.euclid_temperature))
                                      for m in ("photo", "sketch"))
        if o.w_bn:
            terms["bn"] = sum(L.bn_statistics_loss(bn[m], o.bn_first_multiplier) for m in o.bn_sides if bn[m])
        if o.w_tv:  # DeepInversion's image priors on the sides fitted to BatchNorm statistics
            terms["tv"] = sum(L.total_variation(generated[m]) for m in o.bn_sides)
        if o.w_l2:
            terms["l2"] = sum(((generated[m] - 0.5) ** 2).mean() for m in o.bn_sides)
        total = sum(weights[k] * v for k, v in terms.items())
        return total, {**terms, **logged}

    # ---- estimator rounds -----------------------------------------------------------------------------
    def _noise(self, seed: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.options.noise_dim, generator=g)
        z_sketch = torch.randn(n, self.options.noise_dim, generator=g) if self.options.variant == "unimodal" else z
        return z.to(device), z_sketch.to(device)

    def _synthesise(self, seed: int, n: int, device, count: bool = True):
        """One round: ``(photos, sketches, logs)`` in [0, 1] (no gradient), and the estimators'
        update (the meta-initialisation or the in-place estimators; see the module docstring).
        ``count=False`` (validation, samples) adapts a copy and leaves the method untouched."""
        o = self.options
        logs: dict[str, torch.Tensor] = {}
        if o.variant == "gaussian_prior":
            g = torch.Generator().manual_seed(int(seed))
            eps = torch.randn(n, 3, o.image_size, o.image_size, generator=g).to(device)
            sketch = torch.sigmoid(eps.mean(1, keepdim=True) * math.sqrt(3.0))
            return torch.sigmoid(eps), sketch if o.sketch_channels == 1 else rgb(sketch), logs
        if o.variant == "deepinversion":
            return self._invert(seed, n, device, count)
        z_p, z_s = self._noise(seed, n, device)
        meta = o.meta_init or not count
        gens = copy.deepcopy(self.estimators) if meta else self.estimators
        gens.train()
        inner = torch.optim.Adam(gens.parameters(), lr=o.inner_lr, betas=(0.5, 0.999)) if meta else None
        sums: dict[str, float] = {}
        with _frozen(self.students), _frozen(self.heads):
            for _ in range(o.estimator_steps if (count or o.meta_init) else 0):
                loss, terms = self.estimator_objective(gens["photo"](z_p), gens["sketch"](z_s))
                if meta:
                    inner.zero_grad(set_to_none=True)
                    loss.backward()
                    inner.step()
                else:
                    self._ctx.zero_grad("estimator")
                    self._ctx.backward(loss, "estimator")
                    self._ctx.step("estimator")
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if count:
                    self.estimator_step_count += 1
        if count and o.meta_init:  # Reptile: move the meta-initialisation towards the adapted weights
            self._ctx.zero_grad("estimator")
            for p, q in zip(self.estimators.parameters(), gens.parameters()):
                p.grad = (p.detach() - q.detach()).clone()
            self._ctx.step("estimator")
            for b, c in zip(self.estimators.buffers(), gens.buffers()):
                b.copy_(c)
        with torch.no_grad():
            photos, sketches = gens["photo"](z_p), gens["sketch"](z_s)
        object.__setattr__(self, "last_adapted", gens)  # the round's estimators (for inspection)
        steps = max(1, o.estimator_steps)
        logs.update({f"est/{k}": torch.tensor(v / steps) for k, v in sums.items()})
        return photos, sketches, logs

    def _invert(self, seed: int, n: int, device, count: bool):
        """DeepInversion ("meta-data"): pixels optimised so each teacher assigns the pair's class
        (drawn from the shared classes) and, with ``w_bn``, matches its BatchNorm statistics."""
        o = self.options
        g = torch.Generator().manual_seed(int(seed))
        s = o.image_size
        photo = torch.randn(n, 3, s, s, generator=g).to(device).requires_grad_(True)
        sketch = torch.randn(n, o.sketch_channels, s, s, generator=g).to(device).requires_grad_(True)
        shared = torch.tensor(self.space.shared)
        target = shared[torch.randint(len(shared), (n,), generator=g)].to(device)
        opt = torch.optim.Adam([photo, sketch], lr=o.inner_lr, betas=(0.5, 0.999))
        sums: dict[str, float] = {}
        with _frozen(self.students), _frozen(self.heads):
            for _ in range(o.estimator_steps):
                xp, xs = torch.sigmoid(photo), rgb(torch.sigmoid(sketch))
                terms, bn = {}, []
                ce = xp.new_zeros(())
                for m, x in (("photo", xp), ("sketch", xs)):
                    labels = self.space.teachers[m]
                    with _bn_statistics(self._frozen[m], bn) if o.w_bn > 0 else contextlib.nullcontext():
                        logits, _ = self._frozen[m](x)
                    mass = L.target_mass(logits, labels.natives.to(device), labels.member.to(device))
                    ce = ce - mass.gather(1, target[:, None]).clamp_min(1e-12).log().mean()
                terms["onehot"] = ce
                if o.w_bn:
                    terms["bn"] = L.bn_statistics_loss(bn)
                if o.w_tv:
                    terms["tv"] = L.total_variation(xp) + L.total_variation(xs)
                loss = sum((1.0 if k == "onehot" else getattr(o, f"w_{k}")) * v for k, v in terms.items())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if count:
                    self.estimator_step_count += 1
        steps = max(1, o.estimator_steps)
        with torch.no_grad():
            return torch.sigmoid(photo), torch.sigmoid(sketch), {f"est/{k}": torch.tensor(v / steps)
                                                                  for k, v in sums.items()}

    def _estimator_round(self, seed: int, ctx) -> dict[str, torch.Tensor]:
        o = self.options
        object.__setattr__(self, "_ctx", ctx)
        try:
            photos, sketches, logs = self._synthesise(seed, o.estimator_batch, ctx.device)
        finally:
            object.__setattr__(self, "_ctx", None)
        self._add_to_pool(photos, sketches)
        for i, k in enumerate(LOGGED_TERMS):  # the round's mean terms, logged on every step until the next
            self.round_terms[i] = float(logs[f"est/{k}"]) if f"est/{k}" in logs else float("nan")

    @torch.no_grad()
    def _add_to_pool(self, photos: torch.Tensor, sketches: torch.Tensor) -> None:
        """Quantise to 8 bits (as real images are), label with both teachers, write into the ring."""
        qp = (photos * 255).round().clamp(0, 255).to(torch.uint8)
        qs = (sketches * 255).round().clamp(0, 255).to(torch.uint8)
        t_photo, t_sketch = self._teacher_targets(qp.float() / 255, qs.float() / 255)
        labels = (t_photo + t_sketch).argmax(1)
        if self.options.pool_filter == "agree" and int(self.pool_count) > 0:
            # only pairs whose teachers name the same shared class (the first round fills the pool whatever)
            shared = torch.as_tensor(self.space.shared, device=qp.device)
            agree = t_photo[:, shared].argmax(1) == t_sketch[:, shared].argmax(1)
            if not bool(agree.any()):
                return
            qp, qs, t_photo, t_sketch, labels = qp[agree], qs[agree], t_photo[agree], t_sketch[agree], labels[agree]
        size, n = self.options.pool_size, len(qp)
        keep = min(n, size)
        start = int(self.pool_count) + n - keep
        where = (torch.arange(keep, device=qp.device) + start) % size
        self.pool_photo[where] = qp[-keep:]
        self.pool_sketch[where] = qs[-keep:]
        self.pool_prob_photo[where] = t_photo[-keep:].to(self.pool_prob_photo.dtype)
        self.pool_prob_sketch[where] = t_sketch[-keep:].to(self.pool_prob_sketch.dtype)
        self.pool_label[where] = labels[-keep:]
        self.pool_count += n

    def _pool_batch(self, ctx, batch_size: int):
        """``batch_size`` distinct pool entries, drawn with ``ctx.generator`` (resumable)."""
        filled = int(min(int(self.pool_count), self.options.pool_size))
        g = ctx.generator(1)
        idx = torch.randperm(filled, generator=g, device=g.device)[:batch_size].to(self.pool_photo.device)
        photos = self.pool_photo[idx].float() / 255
        sketches = self.pool_sketch[idx].float() / 255
        return photos, sketches, self.pool_prob_photo[idx], self.pool_prob_sketch[idx], self.pool_label[idx]

    # ---- the student step --------------------------------------------------------------------------
    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A random horizontal flip and a shift of up to 1/16 of the side, per image."""
        n = len(x)
        flip = torch.where(torch.rand(n, generator=g, device=g.device) < 0.5, -1.0, 1.0).to(x.device)
        shift = ((torch.rand(n, 2, generator=g, device=g.device) * 2 - 1) * 0.125).to(x.device)
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = flip, 1.0, shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _student_step(self, photos, sketches, t_photo, t_sketch, labels, ctx) -> dict[str, torch.Tensor]:
        o = self.options
        sketches = rgb(sketches)
        if o.augment:  # the teachers label the augmented images the students see
            g = ctx.generator(2)
            photos, sketches = self._augment(photos, g), self._augment(sketches, g)
            with torch.no_grad():
                t_photo, t_sketch = self._teacher_targets(photos, sketches)
        zp, zs = self.students.encode_photo(photos), self.students.encode_sketch(sketches)
        terms: dict[str, torch.Tensor] = {}
        cross_modal = o.variant != "unimodal"  # uni-modal distillation has no cross-modal term
        if o.w_nce and cross_modal:
            n = int(min(int(self.queue_count), o.queue_size))
            lab = labels if o.mask_same_class else None
            qlab = self.queue_label[:n] if o.mask_same_class else None
            terms["nce"] = (L.info_nce(zs, zp, o.temperature, self.queue_photo[:n], lab, qlab)
                            + L.info_nce(zp, zs, o.temperature, self.queue_sketch[:n], lab, qlab)) / 2
        targets = {"photo": (zp, t_photo), "sketch": (zs, t_sketch)}
        for kind, key in (("prob", "proxy_kl"), ("euclid", "proxy_euclid")):
            if getattr(o, f"w_{key}"):
                terms[key] = sum(L.kl_divergence(t, self.heads.distribution(z, m, kind, o.euclid_temperature))
                                 for m, (z, t) in targets.items())
        if o.w_proxy_cross and cross_modal:  # each modality's embedding against the other teacher's proxies, shared classes
            shared = self.heads.shared
            cross = zp.new_zeros(())
            for m, other in (("photo", "sketch"), ("sketch", "photo")):
                z, t = targets[m]
                q = self.heads.distribution(z, other, "prob", o.euclid_temperature)
                cross = cross + L.kl_divergence(L._restrict(t, shared), L._restrict(q, shared))
            terms["proxy_cross"] = cross
        if o.w_anchor:  # one anchor per shared class, shared by both students, each fitted to its teacher
            anchors = F.normalize(self.heads.anchors, dim=1)
            shared = self.heads.shared
            terms["anchor"] = sum(L.kl_divergence(L._restrict(t, shared),
                                                  F.softmax(F.normalize(z, dim=1) @ anchors.T / o.anchor_temperature, 1))
                                  for z, t in targets.values())
        loss = sum(getattr(o, f"w_{k}") * v for k, v in terms.items())
        ctx.zero_grad("student")
        ctx.backward(loss, "student")
        ctx.step("student")
        self._enqueue(zp.detach(), zs.detach(), labels)
        return {"loss": loss.detach(), **{f"loss_{k}": v.detach() for k, v in terms.items()}}

    @torch.no_grad()
    def _enqueue(self, photo: torch.Tensor, sketch: torch.Tensor, labels: torch.Tensor) -> None:
        """Write a step's embeddings into the negative queue (a ring): every step, any batch size
        (a batch larger than the queue leaves its last ``queue_size`` rows)."""
        size, n = self.options.queue_size, len(photo)
        keep = min(n, size)
        start = int(self.queue_count) + n - keep
        where = (torch.arange(keep, device=photo.device) + start) % size
        self.queue_photo[where] = photo[-keep:].to(self.queue_photo.dtype)
        self.queue_sketch[where] = sketch[-keep:].to(self.queue_sketch.dtype)
        self.queue_label[where] = labels[-keep:]
        self.queue_count += n

    # ---- validation on generated data ----------------------------------------------------------------
    @torch.no_grad()
    def _held_out(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs from held-out noise (a fixed seed no training step draws), through a copy of the
        estimators adapted as a training round would (the method is left untouched)."""
        o = self.options
        photos, sketches = [], []
        for i in range(0, n, o.estimator_batch):
            with torch.enable_grad():
                p, s, _ = self._synthesise(VALIDATION_SEED + i, min(o.estimator_batch, n - i), device, count=False)
            photos.append(p)
            sketches.append(s)
        return torch.cat(photos), torch.cat(sketches)

    def validation_metrics(self, ctx):
        """``generated/map`` (sketch -> photo mAP@all over held-out generated pairs, relevant = same
        teacher pseudo-label) and ``generated/agreement`` (how often the students' proxy arg-max
        matches the teacher's), on pairs the training never saw."""
        from ..eval import evaluate_retrieval

        o = self.options
        if o.variant in TRAINING_FREE:
            return None
        if o.variant == "alternative_data":
            ds = self._substitute_dataset()
            from ..data import SampleDataset

            pairs = ds.pairs(o.substitute.get("val_split") or "val") or ds.pairs(o.substitute.get("train_split",
                                                                                                    "train"))
            pairs = pairs[: o.validation_size]
            photos = torch.stack([SampleDataset(ds, [p])[0]["image"] for _, p in pairs]).to(ctx.device)
            sketches = torch.stack([SampleDataset(ds, [s])[0]["image"] for s, _ in pairs]).to(ctx.device)
        else:
            photos, sketches = self._held_out(o.validation_size, ctx.device)
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                qp = (photos * 255).round() / 255
                qs = rgb((sketches * 255).round() / 255)
                t_photo, t_sketch = self._teacher_targets(qp, qs)
                labels = (t_photo + t_sketch).argmax(1)
                zp, zs = self.students.encode_photo(qp), self.students.encode_sketch(qs)
                agree = []
                for m, z, t in (("photo", zp, t_photo), ("sketch", zs, t_sketch)):
                    q = self.heads.distribution(z, m, "prob", o.euclid_temperature)
                    agree.append(float((q.argmax(1) == t.argmax(1)).float().mean()))
                ep, es = self.encoder.encode_photo(qp), self.encoder.encode_sketch(qs)
                result = evaluate_retrieval(es, ep, labels, labels, metrics=["map"])
                diagnostics = dfl_diagnostics.synthesis_metrics(self, qp, qs)
        finally:
            self.train(was)
        return {"generated/map": float(result.metrics["map"]), "generated/agreement": sum(agree) / 2,
                "generated/step": float(int(self.queue_count) // max(1, int(ctx.train.batch_size))), **diagnostics}

    def validation_metric_names(self):
        """What ``eval.select`` may name: ``generated/step`` selects the last validated checkpoint;
        ``reference/*`` and the probes read real images and are for diagnosis only, never selection."""
        if self.options.variant in TRAINING_FREE:
            return None
        return ["generated/map", "generated/agreement", "generated/step", "synthesis/agreement",
                "synthesis/balance", "synthesis/confidence_photo", "synthesis/confidence_sketch"]

    def reference_images(self, device) -> dict | None:
        """The real reference of ``method.reference`` (diagnosis only) with the teachers' features of
        it, loaded once; None without one."""
        if self.options.reference is None:
            return None
        if getattr(self, "_reference", None) is None:
            ref = dfl_diagnostics.load_reference(self.options.reference, self.options.image_size)
            for m in ("photo", "sketch"):
                if m in ref:
                    feats = [self._frozen[m](rgb(x.to(device)))[1] for x in ref[m].split(128)]
                    ref[f"{m}_features"] = torch.cat(feats)
                    ref[m] = ref[m].to(device)
            object.__setattr__(self, "_reference", ref)
        return self._reference

    # ---- samples for people ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_samples(self, n: int, device, seed: int = VALIDATION_SEED) -> dict[str, torch.Tensor]:
        """``{"photo", "sketch", "label", "confidence"}`` for ``n`` generated pairs (the teachers
        must be loaded: ``setup``)."""
        photos, sketches = [], []
        o = self.options
        for i in range(0, n, o.estimator_batch):
            with torch.enable_grad():
                p, s, _ = self._synthesise(seed + i, min(o.estimator_batch, n - i), device, count=False)
            photos.append(p)
            sketches.append(rgb(s))
        photos, sketches = torch.cat(photos), torch.cat(sketches)
        t_photo, t_sketch = self._teacher_targets(photos, sketches)
        score = (t_photo + t_sketch) / 2
        conf, label = score.max(1)
        return {"photo": photos, "sketch": sketches, "label": label, "confidence": conf}


def _synthetic_classes(options: dict) -> list[str]:
    from ..data.synthetic import CLASS_NAMES

    if options.get("classes"):
        return list(options["classes"])
    n = options.get("num_classes")
    return list(CLASS_NAMES[: int(n) if n else len(CLASS_NAMES)])


def overlap_classes(union: list[str], overlap: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split ``union`` into the photo teacher's and the sketch teacher's classes so that the
    shared ones are ``round(overlap · |union|)`` (at least 1) of them, chosen by a seeded
    permutation, and the others alternate between the two teachers. Overlap = |shared| / |union|
    (Jaccard); each teacher knows its classes plus the shared ones; retrieval runs over the union."""
    import numpy as np

    n = len(union)
    k = max(1, min(n, int(round(overlap * n))))
    order = np.random.default_rng([int(seed), 0xC1A55]).permutation(n)
    shared = {union[i] for i in order[:k]}
    rest = [union[i] for i in order[k:]]
    photo_only, sketch_only = set(rest[0::2]), set(rest[1::2])
    photo = [c for c in union if c in shared or c in photo_only]
    sketch = [c for c in union if c in shared or c in sketch_only]
    return photo, sketch


def write_samples_grid(run_dir: str | Path, out: str | Path | None = None, per_class: int = 4, n: int = 256,
                       which: str = "best", seed: int = VALIDATION_SEED, overwrite: bool = False,
                       scale: int = 2, reference: dict | None = None) -> Path:
    """A PNG of generated (photo | sketch) pairs, one row per class (the teachers' pseudo-label,
    most confident first), from a CrossX-DFL run's estimators: the poster's "qualitative
    reconstructions" (``sbirkit dfl samples RUN``). The teachers are loaded as the run names them
    (preset runs beside the run folder). An existing ``out`` is refused unless ``overwrite``.
    The synthesis diagnostics of the ``n`` pairs (:mod:`~sbirkit.methods.dfl_diagnostics`; with
    ``reference``, or the run's own ``method.reference``, the generated-vs-real probes) are
    written beside it as ``<out>.json``."""
    from PIL import Image, ImageDraw

    from ..engine import load_run
    from ..errors import UsageError

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "samples.png"
    if out.exists() and not overwrite:
        raise UsageError(f"--out {out}: exists; pass --overwrite to replace it")
    for flag, value in (("--per-class", per_class), ("--n", n), ("--scale", scale)):
        if value < 1:
            raise UsageError(f"{flag}: expected a positive integer, got {value}")
    method, config = load_run(run_dir, which)
    if not isinstance(method, CrossXDFL) or method.options.variant in TRAINING_FREE + ("alternative_data",):
        raise ConfigError(f"{run_dir}: expected a crossx_dfl run that generates its data (variant crossx_dfl, "
                          "unimodal, gaussian_prior or deepinversion)")
    method.attach_teachers(run_dir.parent, torch.device("cpu"), progress=False)
    if reference is not None:
        method.options.reference = reference
    method.eval()
    samples = method.generate_samples(n, torch.device("cpu"), seed=seed)
    qp, qs = ((samples[k] * 255).round() / 255 for k in ("photo", "sketch"))
    diagnostics = dfl_diagnostics.synthesis_metrics(method, qp, qs)
    side = method.options.image_size * scale
    rows = []
    for t, name in enumerate(method.space.targets):
        idx = (samples["label"] == t).nonzero().flatten()
        if len(idx):
            idx = idx[samples["confidence"][idx].argsort(descending=True)][:per_class]
            rows.append((name, idx.tolist()))
    if not rows:
        raise ConfigError(f"{run_dir}: no generated pair was labelled; nothing to draw")
    label_w, gap = 96, 4
    sheet = Image.new("RGB", (label_w + per_class * (2 * side + gap), len(rows) * (side + gap)), "white")
    draw = ImageDraw.Draw(sheet)

    def tile(x: torch.Tensor) -> Image.Image:
        arr = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        return Image.fromarray(arr).resize((side, side), Image.Resampling.NEAREST)

    for r, (name, idx) in enumerate(rows):
        y = r * (side + gap)
        draw.text((4, y + side // 2 - 6), name[:14], fill="black")
        for c, i in enumerate(idx):
            x = label_w + c * (2 * side + gap)
            sheet.paste(tile(samples["photo"][i]), (x, y))
            sheet.paste(tile(samples["sketch"][i]), (x + side, y))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    import json

    out.with_suffix(".json").write_text(json.dumps({"run": str(run_dir), "which": which, "pairs": n,
                                                    **diagnostics}, indent=1) + "\n")
    return out
