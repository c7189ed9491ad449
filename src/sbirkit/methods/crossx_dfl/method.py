"""Data-free SBIR: CrossX-DFL (Chaudhuri, Bhunia, Song, Dutta, CVPR 2023) and its baselines.

Sketch and photo encoders (students) are trained from two frozen classifiers (teachers, one per
modality; :mod:`~sbirkit.methods.crossx_dfl.teachers`) without a single training image. The loop, per
trainer step (the engine's generated source: ``train_source`` -> ``ctx.generated()``, manual
optimisation, named optimisers ``estimator`` and ``student``):

1. every ``estimator_every`` steps, an **estimator round**: two estimators (generators) g^p, g^s
   fed the *same* noise ξ (no class input) are optimised for ``estimator_steps`` steps on the
   estimator objective (the poster's "Semantic Consistency Loss", "Class Alignment", "Modality
   Guidance" and "Metric-Agnostic Adversarial Estimation", and optionally DeepInversion's
   BatchNorm statistics; the equations are in :mod:`sbirkit.losses.data_free`; :mod:`~.objective`), with the students
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
shared classes) and ``averaging`` (the two teachers' weights averaged into one encoder). Each is a
class of :mod:`~sbirkit.methods.crossx_dfl.variants`, picked once from ``method.variant``; the
training-free ones have no optimiser (``configure_optimizers`` returns ``{}``).

The teachers and the discriminator are other runs (or files): the method asks its context for
them in ``setup`` (``ctx.load_run``, ``ctx.preset_run``, which trains a preset teacher first), and
``load_run`` gives a training-free run's teachers through :meth:`CrossXDFL.prepare_load`.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from ...engine.context import PresetRunNotTrained
from ...errors import CheckpointError, ConfigError
from ...losses import data_free as L
from ..base import Method
from ..registry import register_method
from . import diagnostics
from .encoders import ClassSpaceEncoder, ProxyHeads
from .estimators import rgb
from .label_space import LabelSpace, build_label_space, load_class_map
from .objective import estimator_objective, teacher_targets
from .options import LOGGED_TERMS, VALIDATION_SEED, Options, check_options
from .students import init_students_from_teachers
from .teachers import Teacher, load_discriminator, load_teacher
from .variants import variant_for


@register_method("crossx_dfl", "data-free SBIR from a photo and a sketch classifier (CrossX-DFL, CVPR 2023)")
class CrossXDFL(Method):
    """CrossX-DFL and its baselines (see the module docstring)."""

    name = "crossx_dfl"
    manual_optimization = True
    Options = Options

    # ---- construction -----------------------------------------------------------------------------
    def __init__(self, encoder, options=None, frozen: dict | None = None):
        super().__init__(encoder, options)
        check_options(self.options)
        self.variant = variant_for(self.options)  # what differs between the variants (variants.py)
        object.__setattr__(self, "_frozen", dict(frozen or {}))  # teachers, discriminator: not in the state dict
        if not self.variant.trains:  # the teachers become the encoder (setup, prepare_load); until then
            self.encoder.requires_grad_(False)  # the method holds the unused students, frozen
            return
        self.encoder = self.variant.wrap_encoder(encoder)
        self.heads = ProxyHeads()
        if isinstance(self.encoder, ClassSpaceEncoder):
            self.encoder.attach(self.heads)
        self.variant.build_modules(self)
        d, q = self.students.embed_dim, self.options.queue_size
        self.register_buffer("queue_photo", torch.zeros(q, d))
        self.register_buffer("queue_sketch", torch.zeros(q, d))
        self.register_buffer("queue_label", torch.full((q,), -1, dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        self.variant.build_buffers(self)
        self.register_buffer("estimator_step_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("round_terms", torch.full((len(LOGGED_TERMS),), float("nan")))
        self.register_buffer("teacher_fingerprint", torch.zeros(2, dtype=torch.long))

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
            from ...engine.config import apply_overrides, load_preset

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

    def _load_teachers(self, ctx) -> tuple[Teacher, Teacher, LabelSpace]:
        photo_spec, sketch_spec = self._teacher_specs()
        photo = load_teacher(photo_spec, "photo", "method.photo_teacher", ctx)
        sketch = load_teacher(sketch_spec, "sketch", "method.sketch_teacher", ctx)
        space = build_label_space(photo, sketch, load_class_map(photo_spec.get("class_map"), "method.photo_teacher"),
                                  load_class_map(sketch_spec.get("class_map"), "method.sketch_teacher"))
        return photo, sketch, space

    def _build_teacher_encoder(self, ctx) -> None:
        """A training-free variant's encoder, made of the teachers (its weights go into the checkpoint)."""
        photo, sketch, space = self._load_teachers(ctx)
        object.__setattr__(self, "_frozen", {"photo": photo, "sketch": sketch})
        self.encoder = self.variant.encoder(photo, sketch, space)

    def setup(self, ctx) -> None:
        """Load (or first train, through ``ctx.preset_run``) the teachers and the discriminator,
        build the label space and the proxies. The training data (``ctx.dataset``, the evaluation
        data of a data-free preset) is never read. A dry run trains no teacher: what training
        would do first is printed."""
        o = self.options
        try:
            if not self.variant.trains:
                self._build_teacher_encoder(ctx)
                return
            photo, sketch, space = self.attach_teachers(ctx)
        except PresetRunNotTrained as exc:  # a dry run: report what training would do first
            print(f"# {exc}", file=sys.stderr)
            return
        if o.student_init == "teachers":  # (a resumed run then loads its own weights over these)
            init_students_from_teachers(self.students, {"photo": photo, "sketch": sketch})
        self.heads.build(space, {"photo": photo, "sketch": sketch}, self.students.embed_dim, o.proxy_scale,
                         anchors=o.w_anchor > 0)
        self.variant.setup(self, ctx, space)
        self.teacher_fingerprint = torch.tensor([photo.fingerprint(), sketch.fingerprint()], dtype=torch.long)
        if o.reference is not None:  # read (and checked) now, not at the first validation
            self.reference_images(ctx.device)

    def prepare_load(self, ctx) -> None:
        """``load_run``: a training-free run's encoder is its teachers, built before the checkpoint
        loads into them (a trained variant needs none: its proxies take the checkpoint's shapes)."""
        if self.variant.trains:
            return
        try:
            self._build_teacher_encoder(ctx)
        except PresetRunNotTrained:  # the checkpoint's weights then do not fit: load_run says so
            pass

    def attach_teachers(self, ctx):
        """Load the teachers and the discriminator the options name, through ``ctx`` (preset runs
        beside ``ctx.run_dir``), on ``ctx.device``, and the label space; they are kept outside the
        state dict."""
        o = self.options
        photo, sketch, space = self._load_teachers(ctx)
        frozen = {"photo": photo.to(ctx.device), "sketch": sketch.to(ctx.device)}
        if o.w_guidance > 0 and self.variant.discriminator:
            if o.discriminator is None:
                raise ConfigError("method.discriminator: modality guidance (w_guidance > 0) needs a discriminator; "
                                  "set one or w_guidance=0")
            frozen["discriminator"] = load_discriminator(o.discriminator, "method.discriminator", ctx).to(ctx.device)
        sides = self.variant.bn_sides()
        if o.w_bn > 0 and not any(frozen[m].bn_layers() for m in sides):
            raise ConfigError(f"method.w_bn: no teacher of bn_sides ({', '.join(sides)}: {photo.source}, "
                              f"{sketch.source}) has BatchNorm layers (DeepInversion matches their statistics); set "
                              "w_bn=0")
        object.__setattr__(self, "_frozen", frozen)
        object.__setattr__(self, "space", space)
        return photo, sketch, space

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Create what depends on the teachers from the checkpoint's shapes when they are not loaded
        (``load_run``), and refuse to resume with teachers other than the run's. A training-free
        run saved by a version that stepped a dummy parameter (``anchor``) loads without it."""
        state = dict(state_dict)
        if not self.variant.trains:
            state.pop("anchor", None)
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

    # ---- the engine's hooks -----------------------------------------------------------------------------
    def train_source(self, ctx):
        return self.variant.train_source(self, ctx)

    def configure_optimizers(self, train):
        """The variant's (:mod:`~sbirkit.methods.crossx_dfl.variants`): ``student`` (the students and
        the proxy maps, the backbones at ``train.backbone_lr`` when set), ``estimator`` for the
        estimators (Adam, constant rate); none for a training-free variant."""
        return self.variant.optimizers(self, train)

    def train_mode(self, train):
        self.train()
        if train.backbone_bn == "frozen" and hasattr(self.encoder, "freeze_backbone_norm"):
            self.encoder.freeze_backbone_norm()

    def training_step(self, batch, ctx):
        if not self.variant.trains:
            return {}  # nothing learns (the run has no optimiser)
        (photos, sketches, t_photo, t_sketch, labels), logs = self.variant.training_pairs(self, batch, ctx)
        logs.update(self._student_step(photos, sketches, t_photo, t_sketch, labels, ctx))
        logs["estimator_steps"] = self.estimator_step_count.detach().float()
        return logs

    def estimator_objective(self, photos: torch.Tensor, sketches: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The estimators' objective on generated pairs (:func:`~.objective.estimator_objective`)."""
        return estimator_objective(self, photos, sketches)

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
                t_photo, t_sketch = teacher_targets(self, photos, sketches)
        zp, zs = self.students.encode_photo(photos), self.students.encode_sketch(sketches)
        terms: dict[str, torch.Tensor] = {}
        cross_modal = self.variant.cross_modal  # uni-modal distillation has no cross-modal term
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
    def validation_metrics(self, ctx):
        """``generated/map`` (sketch -> photo mAP@all over held-out generated pairs, relevant = same
        teacher pseudo-label) and ``generated/agreement`` (how often the students' proxy arg-max
        matches the teacher's), on pairs the training never saw."""
        from ...eval import evaluate_retrieval

        o = self.options
        if not self.variant.trains:
            return None
        photos, sketches = self.variant.validation_images(self, ctx)
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                qp = (photos * 255).round() / 255
                qs = rgb((sketches * 255).round() / 255)
                t_photo, t_sketch = teacher_targets(self, qp, qs)
                labels = (t_photo + t_sketch).argmax(1)
                zp, zs = self.students.encode_photo(qp), self.students.encode_sketch(qs)
                agree = []
                for m, z, t in (("photo", zp, t_photo), ("sketch", zs, t_sketch)):
                    q = self.heads.distribution(z, m, "prob", o.euclid_temperature)
                    agree.append(float((q.argmax(1) == t.argmax(1)).float().mean()))
                ep, es = self.encoder.encode_photo(qp), self.encoder.encode_sketch(qs)
                result = evaluate_retrieval(es, ep, labels, labels, metrics=["map"])
                synthesis = diagnostics.synthesis_metrics(self, qp, qs)
        finally:
            self.train(was)
        return {"generated/map": float(result.metrics["map"]), "generated/agreement": sum(agree) / 2,
                "generated/step": float(int(self.queue_count) // max(1, int(ctx.train.batch_size))), **synthesis}

    def validation_metric_names(self):
        """What ``eval.select`` may name: ``generated/step`` selects the last validated checkpoint;
        ``reference/*`` and the probes read real images and are for diagnosis only, never selection."""
        if not self.variant.trains:
            return None
        return ["generated/map", "generated/agreement", "generated/step", "synthesis/agreement",
                "synthesis/balance", "synthesis/confidence_photo", "synthesis/confidence_sketch"]

    def reference_images(self, device) -> dict | None:
        """The real reference of ``method.reference`` (diagnosis only) with the teachers' features of
        it, loaded once; None without one."""
        if self.options.reference is None:
            return None
        if getattr(self, "_reference", None) is None:
            ref = diagnostics.load_reference(self.options.reference, self.options.image_size)
            for m in ("photo", "sketch"):
                if m in ref:
                    feats = [self._frozen[m](rgb(x.to(device)))[1] for x in ref[m].split(128)]
                    ref[f"{m}_features"] = torch.cat(feats)
                    ref[m] = ref[m].to(device)
            object.__setattr__(self, "_reference", ref)
        return self._reference

    # ---- samples for people ------------------------------------------------------------------------------
    def synthesise(self, seed: int, n: int, device, count: bool = True, ctx=None):
        """One synthesis round of a generating variant: ``(photos, sketches, logs)`` in [0, 1]
        (``count=False``: validation, samples; the method is left untouched; ``ctx``: the step's
        context, whose ``estimator`` optimiser a counted round steps)."""
        return self.variant.synthesise(self, seed, n, device, count, ctx=ctx)

    @torch.no_grad()
    def generate_samples(self, n: int, device, seed: int = VALIDATION_SEED) -> dict[str, torch.Tensor]:
        """``{"photo", "sketch", "label", "confidence"}`` for ``n`` generated pairs (the teachers
        must be loaded: ``setup`` or :meth:`attach_teachers`)."""
        if not self.variant.generates:
            raise ConfigError(f"method.variant: {self.options.variant} generates no pairs (crossx_dfl, unimodal, "
                              "gaussian_prior and deepinversion do)")
        photos, sketches = self.variant.held_out(self, n, device, seed, sketch_rgb=True)
        t_photo, t_sketch = teacher_targets(self, photos, sketches)
        score = (t_photo + t_sketch) / 2
        conf, label = score.max(1)
        return {"photo": photos, "sketch": sketches, "label": label, "confidence": conf}


def _synthetic_classes(options: dict) -> list[str]:
    from ...data.synthetic import CLASS_NAMES

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
