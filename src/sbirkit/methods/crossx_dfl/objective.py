"""The teachers on images, and the estimators' objective of ``crossx_dfl`` (the equations are in
:mod:`sbirkit.losses.data_free`): one-hot, class balance, activation, class alignment, modality
guidance, adversarial estimation against the students, and DeepInversion's BatchNorm statistics
and image priors."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ...losses import data_free as L
from .estimators import rgb
from .options import ESTIMATOR_TERMS
from .teachers import Teacher


@contextlib.contextmanager
def bn_statistics(teacher: Teacher, out: list):
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
def frozen(module: nn.Module):
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


def teacher_targets(method, photos: torch.Tensor, sketches: torch.Tensor) -> list[torch.Tensor]:
    """Both teachers' renormalised distributions over their covered targets, ``(B, T)`` each."""
    out = []
    for m, x in (("photo", photos), ("sketch", sketches)):
        labels = method.space.teachers[m]
        logits, _ = method._frozen[m](rgb(x))
        mass = L.target_mass(logits, labels.natives.to(x.device), labels.member.to(x.device))
        out.append(L.renormalise(mass, labels.covered.to(x.device)))
    return out


def estimator_objective(method, photos: torch.Tensor, sketches: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The weighted sum of the switched-on estimator terms on a batch of generated pairs
    (``photos`` RGB, ``sketches`` grey or RGB, in [0, 1]) and the unweighted terms."""
    o, dev = method.options, photos.device
    generated = {"photo": photos, "sketch": sketches}
    sketches = rgb(sketches)
    terms: dict[str, torch.Tensor] = {}
    dist, feats, masses = {}, {}, {}
    bn: dict[str, list] = {"photo": [], "sketch": []}
    for m, x in (("photo", photos), ("sketch", sketches)):
        labels = method.space.teachers[m]
        match_bn = o.w_bn > 0 and m in o.bn_sides
        with bn_statistics(method._frozen[m], bn[m]) if match_bn else contextlib.nullcontext():
            logits, feats[m] = method._frozen[m](x)
        masses[m] = L.target_mass(logits, labels.natives.to(dev), labels.member.to(dev))
        dist[m] = L.renormalise(masses[m], labels.covered.to(dev))
    cov = {m: method.space.teachers[m].covered.to(dev) for m in dist}
    if o.w_onehot:
        terms["onehot"] = L.one_hot_loss(masses["photo"], cov["photo"]) + L.one_hot_loss(masses["sketch"],
                                                                                       cov["sketch"])
    if o.w_balance:
        terms["balance"] = L.class_balance_loss(dist["photo"], cov["photo"]) + \
            L.class_balance_loss(dist["sketch"], cov["sketch"])
    if o.w_activation:
        terms["activation"] = L.activation_loss(feats["photo"]) + L.activation_loss(feats["sketch"])
    if o.w_align and method.variant.cross_modal:
        terms["align"] = L.class_alignment_loss(dist["photo"], dist["sketch"],
                                                torch.tensor(method.space.shared, device=dev))
    weights = {k: getattr(o, f"w_{k}") for k in (*ESTIMATOR_TERMS, "tv", "l2")}
    logged: dict[str, torch.Tensor] = {}
    if o.w_guidance and "discriminator" in method._frozen and method.variant.cross_modal:
        d = method._frozen["discriminator"]
        terms["guidance"] = L.modality_guidance_loss(d(photos), d(sketches))
        if int(method.estimator_step_count) < o.guidance_warmup:  # the estimators first satisfy the teachers
            weights["guidance"] = 0.0
        if torch.is_grad_enabled() and photos.requires_grad:  # is the discriminator saturated? (issue 19)
            grads = torch.autograd.grad(terms["guidance"], [generated["photo"], generated["sketch"]],
                                        retain_graph=True, allow_unused=True)
            logged["guidance_grad"] = sum(g.flatten(1).norm(dim=1).mean() for g in grads if g is not None)
    if o.w_adv_kl or o.w_adv_euclid:
        z = {"photo": method.students.encode_photo(photos), "sketch": method.students.encode_sketch(sketches)}
        for kind, key in (("prob", "adv_kl"), ("euclid", "adv_euclid")):
            if getattr(o, f"w_{key}"):
                terms[key] = -sum(L.kl_divergence(dist[m], method.heads.distribution(z[m], m, kind,
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
