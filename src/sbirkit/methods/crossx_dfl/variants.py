"""One class per ``method.variant`` of ``crossx_dfl`` (``docs/data_free.md`` defines each).

The method (:class:`~sbirkit.methods.crossx_dfl.method.CrossXDFL`) picks its variant once, from
``method.variant`` (:func:`variant_for`), and asks it for what differs between them: the modules
and buffers it keeps, its optimisers, where a step's training pairs come from, its validation
images, and which terms it has. Everything else (teachers, proxies, the student step, the queue)
is the method's, shared by every trained variant.

* :class:`Variant` (students trained from the teachers' targets, the cross-modal terms on):
  :class:`AlternativeData` (pairs of a substitute dataset) and :class:`PoolVariant` (pairs
  synthesised in rounds into a pool): :class:`GaussianPrior` (noise images),
  :class:`DeepInversion` (pixels optimised to the teachers), :class:`Generators` (two estimators,
  the meta-initialisation): :class:`CrossX` (the method) and :class:`Unimodal` (no cross-modal term);
* :class:`TrainingFree` (nothing learns, no optimiser; the teachers are the encoder):
  :class:`ClassifierOnly` and :class:`Averaging`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ...losses import data_free as L
from .encoders import AveragedEncoder, ClassSpaceEncoder, TeacherEncoder
from .estimators import build_estimators, rgb
from .objective import bn_statistics, estimator_objective, frozen, teacher_targets
from .options import LOGGED_TERMS, VARIANTS, Options


class Variant:
    """A trained variant: students and proxies learn from the teachers' targets (the base)."""

    name = ""
    trains = True  # False: nothing learns; the run has no optimiser
    generates = False  # the training pairs are synthesised (``sbirkit dfl samples`` can show them)
    cross_modal = True  # InfoNCE, the cross-proxy term, class alignment and modality guidance
    discriminator = False  # loads the modality discriminator (when w_guidance > 0)

    def __init__(self, options: Options):
        self.options = options

    def check(self) -> None:
        """What this variant needs of the options, beyond :func:`~.options.check_options`."""

    def bn_sides(self) -> tuple[str, ...]:
        """The teachers whose BatchNorm statistics ``w_bn`` matches."""
        return ("photo", "sketch")

    # ---- construction ----------------------------------------------------------------------------
    def wrap_encoder(self, students: nn.Module) -> nn.Module:
        """The encoder a run embeds with, around the students."""
        return students

    def build_modules(self, method) -> None:
        """Modules of this variant's own, registered before the queue."""

    def build_buffers(self, method) -> None:
        """Buffers of this variant's own, registered after the queue."""

    def setup(self, method, ctx, space) -> None:
        """After the teachers and proxies are built (``method.setup``)."""

    # ---- training --------------------------------------------------------------------------------
    def optimizers(self, method, train) -> dict[str, Any]:
        """``student``: the students and the proxy maps, the students' backbones at
        ``train.backbone_lr`` when it is set."""
        from ...engine.optim import OptimizerSpec, default_param_groups

        trained = nn.ModuleList([method.students, method.heads])  # a view: the modules stay where they are
        return {"student": OptimizerSpec(default_param_groups(trained, train, method.students.backbone_parameters()))}

    def train_source(self, method, ctx):
        return ctx.generated()

    def training_pairs(self, method, batch, ctx) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """``((photos, sketches, t_photo, t_sketch, labels), logs)`` of one student step."""
        raise NotImplementedError

    def validation_images(self, method, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        """``(photos, sketches)`` in [0, 1] that model selection scores."""
        raise NotImplementedError


class AlternativeData(Variant):
    """Pairs of a substitute dataset (``method.substitute``), labelled by the teachers."""

    name = "alternative_data"

    def check(self) -> None:
        if not isinstance(self.options.substitute, dict):
            raise ConfigError("method.substitute: variant alternative_data needs the substitute dataset's data "
                              "section, e.g. {name: synthetic, options: {...}}")

    def dataset(self, method):
        from ...engine.datasets import build_dataset

        if not hasattr(method, "_substitute"):
            o = self.options
            ds = build_dataset(o.substitute)
            if o.substitute.get("cache_images"):
                from ...data.image_cache import cached_images

                ds = cached_images(ds)
            if int(ds.image_size) != int(o.image_size):
                raise ConfigError(f"method.substitute: images of {ds.image_size} px, expected method.image_size="
                                  f"{o.image_size} (one resolution end to end)")
            object.__setattr__(method, "_substitute", ds)
        return method._substitute

    def setup(self, method, ctx, space) -> None:
        self.dataset(method)

    def train_source(self, method, ctx):
        from ...data.samplers import PairBatchSampler
        from ...engine.sources import PairSource

        ds = self.dataset(method)
        split = self.options.substitute.get("train_split", "train")
        mode = "instance" if ds.pairs(split) else "class"
        return PairSource(PairBatchSampler(ds, split, ctx.train.batch_size, mode, None, seed=ctx.seed))

    def training_pairs(self, method, batch, ctx):
        photos, sketches = batch["photo"], batch["sketch"]
        with torch.no_grad():  # (augmented images are labelled again in the student step)
            t_photo, t_sketch = teacher_targets(method, photos, sketches)
        return (photos, sketches, t_photo, t_sketch, (t_photo + t_sketch).argmax(1)), {}

    def validation_images(self, method, ctx):
        from ...data import SampleDataset

        o, ds = self.options, self.dataset(method)
        pairs = ds.pairs(o.substitute.get("val_split") or "val") or ds.pairs(o.substitute.get("train_split", "train"))
        pairs = pairs[: o.validation_size]
        photos = torch.stack([SampleDataset(ds, [p])[0]["image"] for _, p in pairs]).to(ctx.device)
        sketches = torch.stack([SampleDataset(ds, [s])[0]["image"] for s, _ in pairs]).to(ctx.device)
        return photos, sketches


class PoolVariant(Variant):
    """Pairs synthesised in rounds (every ``estimator_every`` steps) into a ring-buffer pool, 8-bit
    like real images and labelled by both teachers; each student step draws a batch from it."""

    generates = True

    def build_buffers(self, method) -> None:
        o, s = self.options, self.options.image_size
        method.register_buffer("pool_photo", torch.zeros(o.pool_size, 3, s, s, dtype=torch.uint8))
        method.register_buffer("pool_sketch", torch.zeros(o.pool_size, o.sketch_channels, s, s, dtype=torch.uint8))
        method.register_buffer("pool_label", torch.full((o.pool_size,), -1, dtype=torch.long))
        method.register_buffer("pool_count", torch.zeros((), dtype=torch.long))
        method.register_buffer("pool_prob_photo", torch.zeros(o.pool_size, 0))
        method.register_buffer("pool_prob_sketch", torch.zeros(o.pool_size, 0))

    def setup(self, method, ctx, space) -> None:
        t = space.num_targets
        method.pool_prob_photo = torch.zeros(self.options.pool_size, t)
        method.pool_prob_sketch = torch.zeros(self.options.pool_size, t)

    def synthesise(self, method, seed: int, n: int, device, count: bool = True, ctx=None):
        """``(photos, sketches, logs)`` of one round, in [0, 1] (no gradient). ``count=False``
        (validation, samples) leaves the method untouched."""
        raise NotImplementedError

    def training_pairs(self, method, batch, ctx):
        if int(batch["step"]) % self.options.estimator_every == 0 or int(method.pool_count) == 0:
            self.round(method, int(batch["seed"]), ctx)
        logs = {f"est/{k}": method.round_terms[i].clone() for i, k in enumerate(LOGGED_TERMS)
                if not torch.isnan(method.round_terms[i])}
        return self.pool_batch(method, ctx, int(batch["batch_size"])), logs

    def round(self, method, seed: int, ctx) -> None:
        photos, sketches, logs = self.synthesise(method, seed, self.options.estimator_batch, ctx.device, ctx=ctx)
        self.add_to_pool(method, photos, sketches)
        for i, k in enumerate(LOGGED_TERMS):  # the round's mean terms, logged on every step until the next
            method.round_terms[i] = float(logs[f"est/{k}"]) if f"est/{k}" in logs else float("nan")

    @torch.no_grad()
    def add_to_pool(self, method, photos: torch.Tensor, sketches: torch.Tensor) -> None:
        """Quantise to 8 bits (as real images are), label with both teachers, write into the ring."""
        qp = (photos * 255).round().clamp(0, 255).to(torch.uint8)
        qs = (sketches * 255).round().clamp(0, 255).to(torch.uint8)
        t_photo, t_sketch = teacher_targets(method, qp.float() / 255, qs.float() / 255)
        labels = (t_photo + t_sketch).argmax(1)
        if self.options.pool_filter == "agree" and int(method.pool_count) > 0:
            # only pairs whose teachers name the same shared class (the first round fills the pool whatever)
            shared = torch.as_tensor(method.space.shared, device=qp.device)
            agree = t_photo[:, shared].argmax(1) == t_sketch[:, shared].argmax(1)
            if not bool(agree.any()):
                return
            qp, qs, t_photo, t_sketch, labels = qp[agree], qs[agree], t_photo[agree], t_sketch[agree], labels[agree]
        size, n = self.options.pool_size, len(qp)
        keep = min(n, size)
        start = int(method.pool_count) + n - keep
        where = (torch.arange(keep, device=qp.device) + start) % size
        method.pool_photo[where] = qp[-keep:]
        method.pool_sketch[where] = qs[-keep:]
        method.pool_prob_photo[where] = t_photo[-keep:].to(method.pool_prob_photo.dtype)
        method.pool_prob_sketch[where] = t_sketch[-keep:].to(method.pool_prob_sketch.dtype)
        method.pool_label[where] = labels[-keep:]
        method.pool_count += n

    def pool_batch(self, method, ctx, batch_size: int):
        """``batch_size`` distinct pool entries, drawn with ``ctx.generator`` (resumable)."""
        filled = int(min(int(method.pool_count), self.options.pool_size))
        g = ctx.generator(1)
        idx = torch.randperm(filled, generator=g, device=g.device)[:batch_size].to(method.pool_photo.device)
        photos = method.pool_photo[idx].float() / 255
        sketches = method.pool_sketch[idx].float() / 255
        return photos, sketches, method.pool_prob_photo[idx], method.pool_prob_sketch[idx], method.pool_label[idx]

    @torch.no_grad()
    def validation_images(self, method, ctx):
        """Pairs from held-out noise (a fixed seed no training step draws), through a copy of the
        estimators adapted as a training round would (the method is left untouched)."""
        from .options import VALIDATION_SEED

        return self.held_out(method, self.options.validation_size, ctx.device, VALIDATION_SEED)

    @torch.no_grad()
    def held_out(self, method, n: int, device, seed: int, sketch_rgb: bool = False):
        o = self.options
        photos, sketches = [], []
        for i in range(0, n, o.estimator_batch):
            with torch.enable_grad():
                p, s, _ = self.synthesise(method, seed + i, min(o.estimator_batch, n - i), device, count=False)
            photos.append(p)
            sketches.append(rgb(s) if sketch_rgb else s)
        return torch.cat(photos), torch.cat(sketches)


class GaussianPrior(PoolVariant):
    """Each pair one Gaussian noise image (``sigmoid(N(0, 1))`` per pixel; the sketch its grey version)."""

    name = "gaussian_prior"

    def synthesise(self, method, seed, n, device, count=True, ctx=None):
        o = self.options
        g = torch.Generator().manual_seed(int(seed))
        eps = torch.randn(n, 3, o.image_size, o.image_size, generator=g).to(device)
        sketch = torch.sigmoid(eps.mean(1, keepdim=True) * math.sqrt(3.0))
        return torch.sigmoid(eps), sketch if o.sketch_channels == 1 else rgb(sketch), {}


class DeepInversion(PoolVariant):
    """DeepInversion ("meta-data"): pixels optimised so each teacher assigns the pair's class
    (drawn from the shared classes) and, with ``w_bn``, matches its BatchNorm statistics."""

    name = "deepinversion"

    def synthesise(self, method, seed, n, device, count=True, ctx=None):
        o = self.options
        g = torch.Generator().manual_seed(int(seed))
        s = o.image_size
        photo = torch.randn(n, 3, s, s, generator=g).to(device).requires_grad_(True)
        sketch = torch.randn(n, o.sketch_channels, s, s, generator=g).to(device).requires_grad_(True)
        shared = torch.tensor(method.space.shared)
        target = shared[torch.randint(len(shared), (n,), generator=g)].to(device)
        opt = torch.optim.Adam([photo, sketch], lr=o.inner_lr, betas=(0.5, 0.999))
        sums: dict[str, float] = {}
        with frozen(method.students), frozen(method.heads):
            for _ in range(o.estimator_steps):
                xp, xs = torch.sigmoid(photo), rgb(torch.sigmoid(sketch))
                terms, bn = {}, []
                ce = xp.new_zeros(())
                for m, x in (("photo", xp), ("sketch", xs)):
                    labels = method.space.teachers[m]
                    with bn_statistics(method._frozen[m], bn) if o.w_bn > 0 else contextlib.nullcontext():
                        logits, _ = method._frozen[m](x)
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
                    method.estimator_step_count += 1
        steps = max(1, o.estimator_steps)
        with torch.no_grad():
            return torch.sigmoid(photo), torch.sigmoid(sketch), {f"est/{k}": torch.tensor(v / steps)
                                                                  for k, v in sums.items()}


class Generators(PoolVariant):
    """Two estimators (generators) fed noise, adapted each round on the estimator objective
    (:func:`~.objective.estimator_objective`) from a meta-initialisation (Reptile), or trained in
    place without ``meta_init``; their own optimiser, ``estimator``."""

    discriminator = True

    def bn_sides(self) -> tuple[str, ...]:
        return tuple(self.options.bn_sides)

    def build_modules(self, method) -> None:
        method.estimators = build_estimators(self.options)

    def optimizers(self, method, train):
        from ...engine.optim import OptimizerSpec

        specs = super().optimizers(method, train)
        specs["estimator"] = OptimizerSpec(list(method.estimators.parameters()), optimizer="adam",
                                           lr=self.options.estimator_lr, betas=(0.5, 0.999), weight_decay=0.0,
                                           schedule="constant", warmup_steps=0, grad_clip=0.0)
        return specs

    def noise(self, seed: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The photo and the sketch estimator's noise: the same."""
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.options.noise_dim, generator=g)
        return z.to(device), z.to(device)

    def synthesise(self, method, seed, n, device, count=True, ctx=None):
        """The estimators' update is the meta-initialisation's or the in-place estimators' (see the
        method's docstring); ``count=False`` adapts a copy."""
        o = self.options
        z_p, z_s = self.noise(seed, n, device)
        meta = o.meta_init or not count
        gens = copy.deepcopy(method.estimators) if meta else method.estimators
        gens.train()
        inner = torch.optim.Adam(gens.parameters(), lr=o.inner_lr, betas=(0.5, 0.999)) if meta else None
        sums: dict[str, float] = {}
        with frozen(method.students), frozen(method.heads):
            for _ in range(o.estimator_steps if (count or o.meta_init) else 0):
                loss, terms = estimator_objective(method, gens["photo"](z_p), gens["sketch"](z_s))
                if meta:
                    inner.zero_grad(set_to_none=True)
                    loss.backward()
                    inner.step()
                else:
                    ctx.zero_grad("estimator")
                    ctx.backward(loss, "estimator")
                    ctx.step("estimator")
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if count:
                    method.estimator_step_count += 1
        if count and o.meta_init:  # Reptile: move the meta-initialisation towards the adapted weights
            ctx.zero_grad("estimator")
            for p, q in zip(method.estimators.parameters(), gens.parameters()):
                p.grad = (p.detach() - q.detach()).clone()
            ctx.step("estimator")
            for b, c in zip(method.estimators.buffers(), gens.buffers()):
                b.copy_(c)
        with torch.no_grad():
            photos, sketches = gens["photo"](z_p), gens["sketch"](z_s)
        object.__setattr__(method, "last_adapted", gens)  # the round's estimators (for inspection)
        steps = max(1, o.estimator_steps)
        return photos, sketches, {f"est/{k}": torch.tensor(v / steps) for k, v in sums.items()}


class CrossX(Generators):
    """CrossX-DFL: one noise for both estimators, class alignment, modality guidance, InfoNCE."""

    name = "crossx_dfl"


class Unimodal(Generators):
    """Uni-modal distillation: each student distils its own teacher with its own estimator (separate
    noise), no cross-modal term; retrieval compares the students' class distributions."""

    name = "unimodal"
    cross_modal = False

    def wrap_encoder(self, students: nn.Module) -> nn.Module:
        return ClassSpaceEncoder(students)

    def noise(self, seed: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.options.noise_dim, generator=g)
        z_sketch = torch.randn(n, self.options.noise_dim, generator=g)
        return z.to(device), z_sketch.to(device)


class TrainingFree(Variant):
    """Nothing learns: the encoder is made of the teachers (in the checkpoint), and the run has no
    optimiser; its one step only makes the run folder."""

    trains = False

    def encoder(self, photo, sketch, space) -> nn.Module:
        raise NotImplementedError

    def optimizers(self, method, train):
        return {}

    def training_pairs(self, method, batch, ctx):  # pragma: no cover - the method does not step
        raise RuntimeError(f"variant {self.name} trains nothing")


class ClassifierOnly(TrainingFree):
    """Each modality embedded by its teacher's outputs over the shared classes."""

    name = "classifier_only"

    def encoder(self, photo, sketch, space):
        return TeacherEncoder(photo, sketch, space, self.options.classifier_output)


class Averaging(TrainingFree):
    """The two teachers' weights averaged into one encoder."""

    name = "averaging"

    def encoder(self, photo, sketch, space):
        return AveragedEncoder(photo, sketch)


VARIANT_CLASSES: dict[str, type[Variant]] = {cls.name: cls for cls in (
    CrossX, Unimodal, GaussianPrior, DeepInversion, AlternativeData, ClassifierOnly, Averaging)}
assert tuple(VARIANT_CLASSES) == VARIANTS


def variant_for(options: Options) -> Variant:
    """The variant ``options.variant`` names (checked by :func:`~.options.check_options` first)."""
    variant = VARIANT_CLASSES[options.variant](options)
    variant.check()
    return variant
