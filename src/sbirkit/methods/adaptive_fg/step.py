"""adaptive_fg's training step: the inner loop on each task's support, the outer loss on its
queries, the regularisers on F's features, and BatchNorm in training (``feature_norm``)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...losses.regularizers import domain_terms
from ...losses.triplet import fine_grained_triplet_loss as triplet_loss
from .learner import FunctionalLearner

if TYPE_CHECKING:
    from ...engine.context import StepContext


class MetaStep:
    """The step of :class:`~sbirkit.methods.adaptive_fg.method.AdaptiveFG` (a mixin: it reads the
    method's options, branch, margin net, alphas and regularisers' modules)."""

    def inner_alphas(self) -> dict[str, torch.Tensor | float]:
        o = self.options
        if o.learn_alpha == "scalar":
            return {n: self.alpha for n in self.inner_names}
        if o.learn_alpha == "per_parameter":
            return {n: self.alphas[n.replace(".", "__")] for n in self.inner_names}
        return {n: float(o.alpha) for n in self.inner_names}

    def learner(self, create_graph: bool, detach: bool = False) -> FunctionalLearner:
        """The inner-loop learner at the meta-learned initialisation: the head (``inner: head``,
        called on F's features) or the whole branch (``inner: all``, called on images)."""
        branch = self.branch
        params = dict(branch.named_parameters())
        if self.options.inner == "head":
            module = branch.head
            tensors = {n[len("head."):]: params[n] for n in self.inner_names}
            alphas = {n[len("head."):]: a for n, a in self.inner_alphas().items()}
        else:
            module, tensors, alphas = branch, {n: params[n] for n in self.inner_names}, self.inner_alphas()
        if detach:
            tensors = {n: t.detach().requires_grad_(True) for n, t in tensors.items()}
            alphas = {n: (a.detach() if isinstance(a, torch.Tensor) else a) for n, a in alphas.items()}
        return FunctionalLearner(module, tensors, alphas, create_graph)

    def task_margin(self, sketch_features: torch.Tensor, photo_features: torch.Tensor) -> torch.Tensor:
        """mu of a task from its support features (the fixed ``inner_margin`` when not learned)."""
        if self.margin_net is None:
            return torch.tensor(float(self.options.inner_margin), device=sketch_features.device)
        return self.margin_net(sketch_features.detach(), photo_features.detach())

    def inner_loop(self, learner: FunctionalLearner, sketches: torch.Tensor, photos: torch.Tensor,
                   photo_ids: torch.Tensor, margin: torch.Tensor, steps: int) -> FunctionalLearner:
        """``steps`` gradient steps of the smooth-hinge triplet loss on the support: sketch i's
        positive is ``photos[i]``, the other photos (other ids) its negatives."""
        tau = float(self.options.tau)
        for _ in range(int(steps)):
            loss = triplet_loss(learner(sketches), learner(photos), photo_ids, margin, tau)
            learner.adapt(loss)
        return learner

    def regularizer_losses(self, f_sketch: torch.Tensor, f_photo: torch.Tensor, labels: torch.Tensor,
                           photo_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_D, L_C, L_S, L_ud on F's features of a task: sketch i pairs with photo i (same class
        ``labels[i]``, photo id ``photo_ids[i]``)."""
        o, out = self.options, {}
        feats = torch.cat([f_sketch, f_photo])
        if "d" in self.active_regularizers:
            # D's own loss (reaches D only) and F's bounded confusion term (reaches F only)
            terms = domain_terms(self.discriminator, f_sketch, f_photo)
            out["disc"], out["reg_d"], out["d_acc"] = terms["disc"], terms["confusion"], terms["accuracy"]
        if "c" in self.active_regularizers or "s" in self.active_regularizers:
            targets = self.class_lookup[labels].repeat(2)
            known = targets >= 0
            if bool(known.any()):
                if "c" in self.active_regularizers:
                    out["reg_c"] = F.cross_entropy(self.classifier(feats[known]), targets[known])
                if "s" in self.active_regularizers:
                    decoded = self.decoder(feats[known])
                    out["reg_s"] = 0.5 * (1.0 - F.cosine_similarity(decoded, self.semantic[targets[known]], dim=1)).mean()
        if "ud" in self.active_regularizers:
            out["reg_ud"] = triplet_loss(F.normalize(f_sketch, dim=1), F.normalize(f_photo, dim=1), photo_ids,
                                         float(o.ud_margin))
        return out

    def features(self, x: torch.Tensor, inputs: str = "images", stage: int | None = None) -> torch.Tensor:
        """F's pooled features of images, of cached pooled features (returned as they are) or of
        cached maps cut at ``stage`` (``train.cached_features``)."""
        if inputs == "images":
            return self.branch.features(x)
        return x if stage is None else self.branch.features_from(x, int(stage))

    @contextlib.contextmanager
    def _running_norm(self, images: torch.Tensor | None):
        """``feature_norm: running``: the step's images go through F once without gradient in training
        mode, which updates the BatchNorm running statistics, and the step itself normalises with
        those statistics (BatchNorm in eval mode), as evaluation and adaptation do. A task holds one
        category (or one user): normalising by its batch statistics would take out exactly what tells
        categories apart, make every feature depend on which tasks share the step, and differ from the
        statistics used at test time. ``batch``: ordinary training-mode BatchNorm (over every image of
        the step; from scratch, where running statistics are not yet meaningful, training with them
        collapsed). ``auto``: running with ``init_from``, else batch."""
        norms = [m for m in self.branch.backbone.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        if self.feature_norm != "running" or not norms or images is None:
            yield
            return
        with torch.no_grad():
            self.branch.features(images)
        for m in norms:
            m.eval()
        try:
            yield
        finally:
            for m in norms:
                m.train()

    @property
    def feature_norm(self) -> str:
        norm = self.options.feature_norm
        return norm if norm != "auto" else ("running" if self.starts_from_run else "batch")

    @staticmethod
    def _task_images(task: Mapping[str, Any]) -> list[torch.Tensor]:
        sup, qry = task["support"], task["query"]
        return [sup["sketch"], sup["photo"], qry["sketch"], qry["photo"]]

    def _task_losses(self, task: Mapping[str, Any], feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of one task from F's features of its images (support sketches, support photos,
        query sketches, query photos, in that order)."""
        o = self.options
        sup, qry = task["support"], task["query"]
        k, q = len(sup["sketch"]), len(qry["sketch"])
        branch = self.branch
        fs_s, fs_p, fq_s, fq_p = feats.split([k, k, q, q])
        ids_s, ids_q = sup["photo_index"], qry["photo_index"]
        out: dict[str, torch.Tensor] = {}
        if o.mode == "supervised":
            emb = branch.head(feats)
            es_s, es_p, eq_s, eq_p = emb.split([k, k, q, q])
            main = triplet_loss(torch.cat([es_s, eq_s]), torch.cat([es_p, eq_p]), torch.cat([ids_s, ids_q]),
                                float(o.outer_margin))
            out["triplet"] = main
        else:
            margin = self.task_margin(fs_s, fs_p)
            learner = self.learner(create_graph=not o.first_order)
            # the support triplets' negatives are the other support photos; only a 1-shot task borrows
            # one photo of the task (the inner step must not push sketches away from query photos)
            extra = 1 if k == 1 else 0
            if o.inner == "head":
                sketches_in, photos_in = fs_s, torch.cat([fs_p, fq_p[:extra]])
            else:
                sketches_in, photos_in = sup["sketch"], torch.cat([sup["photo"], qry["photo"][:extra]])
            learner = self.inner_loop(learner, sketches_in, photos_in, torch.cat([ids_s, ids_q[:extra]]), margin,
                                      int(o.inner_steps))
            if o.inner == "head":
                eq_s, photos_out = learner(fq_s), learner(torch.cat([fq_p, fs_p]))
            else:
                eq_s, photos_out = learner(qry["sketch"]), learner(torch.cat([qry["photo"], sup["photo"]]))
            main = triplet_loss(eq_s, photos_out, torch.cat([ids_q, ids_s]), float(o.outer_margin))
            out["outer"] = main
            out["margin"] = margin.detach()
        regs = self.regularizer_losses(torch.cat([fs_s, fq_s]), torch.cat([fs_p, fq_p]),
                                       torch.cat([sup["label"], qry["label"]]), torch.cat([ids_s, ids_q]))
        out.update(regs)
        total = sum(self.weighted_terms(out).values())
        out["loss"] = total + out["disc"] if "disc" in out else total
        return out

    def weighted_terms(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The terms of a task that reach F, each at the weight it has now: the main (outer or
        supervised triplet) loss and ``w_x * ramp * gate * reg_x`` for each regulariser (ramp: from 0
        to 1 over ``reg_ramp_steps``; gate: 0 while the task's main loss is at most ``reg_gate``)."""
        o = self.options
        main = "outer" if "outer" in losses else "triplet"
        out = {main: losses[main]}
        scale = min(1.0, self._step / int(o.reg_ramp_steps)) if int(o.reg_ramp_steps) > 0 else 1.0
        if o.reg_gate is not None and not float(losses[main].detach()) > float(o.reg_gate):
            scale = 0.0
        for name, value in losses.items():
            if name.startswith("reg_"):
                out[name] = float(getattr(o, "w_" + name[len("reg_"):])) * scale * value
        return out

    def domain_accuracy(self, f_sketch: torch.Tensor, f_photo: torch.Tensor) -> float | None:
        """The domain discriminator's accuracy on these features (sketch = 1), None without L_D."""
        if self.discriminator is None:
            return None
        with torch.no_grad():
            logits = self.discriminator(torch.cat([f_sketch, f_photo])).squeeze(1)
        target = torch.cat([torch.ones(len(f_sketch)), torch.zeros(len(f_photo))]).to(logits.device)
        return float(((logits > 0).float() == target).float().mean())

    def training_step(self, batch: Mapping[str, Any], ctx: StepContext | None = None) -> dict[str, torch.Tensor]:
        inputs = batch.get("inputs", "images")
        if inputs not in ("images", "features"):
            raise ConfigError(f"adaptive_fg: expected images or cached features, got {inputs!r}")
        tasks = batch["tasks"]
        if ctx is not None:
            self._step = int(ctx.global_step)
        parts = [self._task_images(t) for t in tasks]
        sizes = [sum(len(x) for x in p) for p in parts]
        images = torch.cat([x for p in parts for x in p])
        stage = tasks[0]["support"].get("feature_stage")
        with self._running_norm(images if inputs == "images" else None):
            feats = self.features(images, inputs, stage).float()
            per_task = [self._task_losses(t, f) for t, f in zip(tasks, feats.split(sizes))]
        out = {name: torch.stack([t[name] for t in per_task]).mean() for name in per_task[0]}
        if self.options.learn_alpha == "scalar":
            out["alpha"] = self.alpha.detach()
        if ctx is not None:
            self._step = int(ctx.global_step) + 1
        return out
