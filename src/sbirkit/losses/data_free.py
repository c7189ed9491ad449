"""The loss terms of data-free SBIR (CrossX-DFL, Chaudhuri et al., CVPR 2023), as pure functions.

Names follow the poster's sections ("Semantic Consistency Loss", "Class Alignment", "Modality
Guidance", "Metric-Agnostic Adversarial Estimation", "Cross-Modal Contrastive Learning"); the
poster's text carries no equation numbers, so each docstring writes its equation out. Teachers'
outputs are first mapped onto the shared target label space (:mod:`sbirkit.methods.crossx_dfl.label_space`):
with ``p = softmax(logits)`` over the teacher's own classes and ``M`` the 0/1 matrix from the
teacher classes a class map uses to target classes,

* ``mass = p[:, natives] @ M``: the probability of each target class (uncovered targets 0; the
  rest of the mass sits on teacher classes no target uses), and
* ``p̂ = mass / Σ_covered mass``: the teacher's distribution over the target classes it covers.

Terms (B a batch, T target classes, ``covered`` a teacher's targets, ``S`` the shared ones):

* one-hot (DAFL, Chen et al., ICCV 2019): ``L_oh = -1/B Σ_b log mass_b[argmax_c p̂_b]``, the
  cross-entropy of the teacher's output to its own arg-max (with an identity map, exactly
  ``CE(logits, argmax logits)``);
* class balance (DAFL's information entropy): ``L_ie = Σ_c p̄_c log p̄_c``, ``p̄ = mean_b p̂_b``:
  the negative entropy of the batch-mean distribution, lowest when every class is generated;
* activation (DAFL): ``L_a = -mean |f|`` over the teacher's features f (its final layer's input);
* class alignment: ``L_align = 1/2 [KL(p̂^p_S || p̂^s_S) + KL(p̂^s_S || p̂^p_S)]``, the two teachers'
  distributions renormalised over the shared classes S, on the pair made from one noise vector;
* modality guidance: ``L_mg = BCE(d(g^p(ξ)), 1) + BCE(d(g^s(ξ)), 0)``, d the photo logit;
* metric-agnostic adversarial estimation: the student's distribution over a teacher's classes
  is its embedding z projected onto the teacher's class proxies ``P_k = A w_k`` (``w_k`` the
  teacher's final-layer weights, A learned): probabilistic ``q_k ∝ exp(z·P_k)``, Euclidean
  ``q_k ∝ exp(-||z - P_k||² / τ_e)``; ``L_adv = -[KL(p̂ || q^prob) + KL(p̂ || q^euc)]`` (the
  estimators maximise the disagreement, the students minimise it: the proxy term);
* BatchNorm statistics (DeepInversion, Yin et al., CVPR 2020), an extension:
  ``L_bn = Σ_l ||μ_l(x) - μ_l^BN||₂ + ||σ²_l(x) - σ²_l^BN||₂`` over the teacher's BatchNorm layers;
* cross-modal InfoNCE with a negative queue (MoCo, He et al., CVPR 2020):
  ``L_nce = CE([z^s_i·z^p_j]_j ++ [z^s_i·q^p_k]_k / τ, i)`` plus the same from photos to sketches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-12


def target_mass(logits: torch.Tensor, natives: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """``(B, T)``: each target class's share of ``softmax(logits)`` (0 for uncovered targets)."""
    return F.softmax(logits.float(), dim=1)[:, natives] @ member


def renormalise(mass: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """``mass`` restricted to ``covered`` targets and normalised to sum to 1 (0 elsewhere)."""
    mass = mass * covered.to(mass.dtype)
    return mass / mass.sum(1, keepdim=True).clamp_min(EPS)


def one_hot_loss(mass: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """``-mean_b log mass_b[argmax over covered targets]`` (see the module docstring)."""
    masked = mass.masked_fill(~covered.to(torch.bool), -1.0)
    target = masked.argmax(1)
    return -mass.gather(1, target[:, None]).clamp_min(EPS).log().mean()


def class_balance_loss(p_hat: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """``Σ_c p̄_c log p̄_c`` over covered targets, ``p̄`` the batch mean of ``p_hat``."""
    mean = p_hat.mean(0)[covered.to(torch.bool)]
    return (mean * mean.clamp_min(EPS).log()).sum()


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """``-mean |f|``."""
    return -features.abs().mean()


def _restrict(p: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    q = p[:, index]
    return q / q.sum(1, keepdim=True).clamp_min(EPS)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``mean_b Σ_c p log(p / q)`` of row distributions (0 log 0 = 0)."""
    return (p * (p.clamp_min(EPS).log() - q.clamp_min(EPS).log())).sum(1).mean()


def class_alignment_loss(p_hat_photo: torch.Tensor, p_hat_sketch: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """Symmetric KL of the two teachers' distributions renormalised over the shared classes."""
    a, b = _restrict(p_hat_photo, shared), _restrict(p_hat_sketch, shared)
    return 0.5 * (kl_divergence(a, b) + kl_divergence(b, a))


def modality_guidance_loss(photo_logits: torch.Tensor, sketch_logits: torch.Tensor) -> torch.Tensor:
    """``BCE(d(photos), 1) + BCE(d(sketches), 0)`` on the discriminator's photo logits."""
    return (F.binary_cross_entropy_with_logits(photo_logits, torch.ones_like(photo_logits))
            + F.binary_cross_entropy_with_logits(sketch_logits, torch.zeros_like(sketch_logits)))


def proxy_logits(z: torch.Tensor, proxies: torch.Tensor, kind: str, euclid_temperature: float = 1.0) -> torch.Tensor:
    """The student's logits over a teacher's classes: ``z·P_k`` (``"prob"``) or
    ``-||z - P_k||² / τ_e`` (``"euclid"``)."""
    if kind == "prob":
        return z @ proxies.T
    if kind == "euclid":
        d2 = (z * z).sum(1, keepdim=True) - 2 * z @ proxies.T + (proxies * proxies).sum(1)[None, :]
        return -d2 / float(euclid_temperature)
    raise ValueError(f"proxy_logits: kind: expected 'prob' or 'euclid', got {kind!r}")


def student_distribution(logits: torch.Tensor, member: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """The student's distribution over a teacher's covered targets from its logits over the
    teacher's mapped classes (one logit per row of ``member``)."""
    return renormalise(F.softmax(logits.float(), dim=1) @ member, covered)


def bn_statistics_loss(stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
                       first_multiplier: float = 1.0) -> torch.Tensor:
    """DeepInversion's feature-statistics term from ``(batch mean, batch var, running mean,
    running var)`` of each BatchNorm layer's input, in forward order; the first layer's term is
    multiplied by ``first_multiplier`` (DeepInversion weighs it 10x: it sees the pixels)."""
    total = stats[0][0].new_zeros(())
    for i, (mean, var, run_mean, run_var) in enumerate(stats):
        term = torch.linalg.vector_norm(mean - run_mean) + torch.linalg.vector_norm(var - run_var)
        total = total + (float(first_multiplier) if i == 0 else 1.0) * term
    return total


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (DeepInversion's image prior)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float, queue: torch.Tensor | None = None,
             labels: torch.Tensor | None = None, queue_labels: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE: query i's positive is key i; negatives are the other keys of the batch and the
    rows of ``queue`` (detached keys of earlier steps). With ``labels``, negatives of the query's
    own (pseudo-)class are left out (``queue_labels`` < 0: an empty slot, never used)."""
    logits = queries @ keys.T
    same = None
    if labels is not None:
        same = labels[:, None] == labels[None, :]
        same.fill_diagonal_(False)
    if queue is not None and len(queue):
        logits = torch.cat([logits, queries @ queue.T], dim=1)
        if same is not None:
            extra = labels[:, None] == queue_labels[None, :] if queue_labels is not None else \
                torch.zeros(len(queries), len(queue), dtype=torch.bool, device=queries.device)
            same = torch.cat([same, extra], dim=1)
    logits = logits / float(temperature)
    if same is not None:
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))
