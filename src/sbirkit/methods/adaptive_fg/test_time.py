"""adaptive_fg at test time: an encoder adapted to a support set by the meta-learned inner loop, or
by the baselines' strategies (none, fine-tuning the head or everything)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch.func import functional_call

from ...errors import UsageError
from ...losses.triplet import fine_grained_triplet_loss as triplet_loss
from .encoder import AdaptedEncoder
from .options import STRATEGIES


class AdaptAtTestTime:
    """:meth:`adapt` of :class:`~sbirkit.methods.adaptive_fg.method.AdaptiveFG` (a mixin)."""

    @property
    def default_strategy(self) -> str:
        if self.options.strategy is not None:
            return self.options.strategy
        return "meta" if self.options.mode == "meta" else "none"

    def adapt(self, support: Mapping[str, Any], *, strategy: str | None = None, steps: int | None = None,
              lr: float | None = None, optimizer: str | None = None) -> AdaptedEncoder:
        """An encoder adapted to a support set, without changing this method or keeping any graph.

        ``support``: ``{"sketch": (k,3,H,W), "photo": (k,3,H,W)}``, sketch i drawn from photo i, and
        optionally ``"negative"``: (n,3,H,W) more photos of the category (user) that no support
        sketch shows (needed with k = 1, where they are the only negatives). ``"photo_id"`` / ``"negative_id"``
        (int tensors) mark repeated photos, which are then never negatives of their own sketches.
        ``"inputs": "features"`` (with ``"feature_stage"``) says the slots hold cached backbone
        features or maps instead of images (:func:`sbirkit.engine.adaptation.support_batch`).

        ``strategy``: ``meta`` (the meta-learned inner loop: ``inner_steps`` steps of size alpha
        with the predicted margin), ``none``, ``finetune_head`` / ``finetune_all`` (``steps`` steps
        of ``optimizer`` (default ``finetune_optimizer``: adam or sgd) at ``lr`` on the fixed-margin
        triplet loss: the fine-tuning baselines). The result's ``record`` holds the strategy, steps, margin and time taken.
        """
        o = self.options
        strategy = strategy or self.default_strategy
        if strategy not in STRATEGIES:
            raise UsageError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
        started = time.perf_counter()
        device = next(self.parameters()).device
        inputs, stage = support.get("inputs", "images"), support.get("feature_stage")
        sketch = torch.as_tensor(support["sketch"]).to(device)
        photo = torch.as_tensor(support["photo"]).to(device)
        k = len(sketch)
        if k < 1 or len(photo) != k:
            raise UsageError(f"support: expected k >= 1 sketches and as many photos, got {len(sketch)} and {len(photo)}")
        negative = support.get("negative")
        negative = torch.as_tensor(negative).to(device) if negative is not None and len(negative) else photo[:0]
        ids = torch.as_tensor(support.get("photo_id", torch.arange(k))).to(device).long()
        neg_ids = torch.as_tensor(support.get("negative_id", torch.arange(k, k + len(negative)))).to(device).long()
        all_ids = torch.cat([ids, neg_ids])
        if strategy != "none" and not bool((all_ids[None, :] != ids[:, None]).any()):
            raise UsageError("support: a triplet needs a negative photo: with k = 1 give at least one more photo "
                             "of the category (\"negative\")")
        needs_images = strategy == "finetune_all" or (strategy == "meta" and o.inner == "all")
        if needs_images and inputs != "images":
            raise UsageError(f"strategy {strategy} (inner={o.inner}): adapting every parameter needs images, this "
                             "support set holds cached features; adapt the head (finetune_head, or inner=head)")
        was_training = self.training
        self.eval()
        record: dict[str, Any] = {"strategy": strategy, "k": k, "negatives": len(negative)}
        try:
            photos = torch.cat([photo, negative])
            with torch.no_grad():
                f_s = self.features(sketch, inputs, stage).float()
                f_p = self.features(photos, inputs, stage).float()
            if strategy == "none":
                params: dict[str, torch.Tensor] = {}
                record["steps"] = 0
            elif strategy == "meta" and o.mode == "meta":
                steps = int(o.inner_steps if steps is None else steps)
                with torch.enable_grad():
                    margin = self.task_margin(f_s, f_p[:k]).detach()
                    learner = self.learner(create_graph=False, detach=True)
                    s_in, p_in = (f_s, f_p) if o.inner == "head" else (sketch, photos)
                    learner = self.inner_loop(learner, s_in, p_in, all_ids, margin, steps)
                params = learner.detached()
                if o.inner == "head":
                    params = {f"head.{n}": p for n, p in params.items()}
                record.update(steps=steps, margin=float(margin), alpha=self._alpha_record())
            elif strategy == "meta":
                raise UsageError("strategy meta: this run was trained with method.mode=supervised (no inner loop); "
                                 "use none, finetune_head or finetune_all")
            else:
                steps = int(o.finetune_steps if steps is None else steps)
                lr = float(o.finetune_lr if lr is None else lr)
                optimizer = optimizer or o.finetune_optimizer
                if optimizer not in ("adam", "sgd"):
                    raise UsageError(f"optimizer: expected adam or sgd, got {optimizer!r}")
                params = self._finetune(strategy, f_s, f_p, sketch, photos, all_ids, steps, lr, optimizer)
                record.update(steps=steps, lr=lr, optimizer=optimizer, margin=float(o.outer_margin))
        finally:
            self.train(was_training)
        record["seconds"] = round(time.perf_counter() - started, 6)
        return AdaptedEncoder(self.encoder, params, record)

    def _alpha_record(self) -> float | None:
        o = self.options
        if o.learn_alpha == "scalar":
            return float(self.alpha.detach())
        if o.learn_alpha == "none":
            return float(o.alpha)
        return float(torch.cat([a.detach().flatten() for a in self.alphas.values()]).mean())

    def _finetune(self, strategy: str, f_s, f_p, sketch, photos, ids, steps: int, lr: float,
                  optimizer: str = "adam") -> dict[str, torch.Tensor]:
        """Plain fine-tuning on the support triplets (fixed margin): the head, or every parameter."""
        o, branch = self.options, self.branch
        if strategy == "finetune_head":
            names = [f"head.{n}" for n, _ in branch.head.named_parameters()]
        else:
            names = [n for n, p in branch.named_parameters() if p.requires_grad]
        own = dict(branch.named_parameters())
        params = {n: own[n].detach().clone().requires_grad_(True) for n in names}
        opt = torch.optim.Adam(params.values(), lr=lr) if optimizer == "adam" else torch.optim.SGD(params.values(), lr=lr)
        head_params = {n[len("head."):]: p for n, p in params.items()} if strategy == "finetune_head" else None
        with torch.enable_grad():
            for _ in range(int(steps)):
                if head_params is not None:
                    es, ep = functional_call(branch.head, head_params, (f_s,)), functional_call(branch.head, head_params, (f_p,))
                else:
                    es, ep = functional_call(branch, params, (sketch,)), functional_call(branch, params, (photos,))
                loss = triplet_loss(es, ep, ids, float(o.outer_margin))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return {n: p.detach() for n, p in params.items()}
