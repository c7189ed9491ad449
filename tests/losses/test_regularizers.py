"""The feature-space regularisers of adaptive_fg: the confusion L_D by hand, which gradient reaches
what, that it shrinks a modality gap on a fixed feature set without lowering the effective rank
(while gradient reversal on the same set widens it), and the cosine classifier's L_C."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sbirkit.losses.regularizers import CosineClassifier, confusion_loss, domain_discriminator, domain_terms
from sbirkit.methods.collapse import effective_rank


def test_confusion_loss_by_hand_is_zero_at_confusion_and_its_gradient_is_bounded():
    z = torch.tensor([0.0, 2.0, -3.0], requires_grad=True)
    # BCE against 1/2: 1/2 softplus(-z) + 1/2 softplus(z); minus ln 2
    expected = (0.5 * F.softplus(-z) + 0.5 * F.softplus(z)).mean() - math.log(2.0)
    loss = confusion_loss(z)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert confusion_loss(torch.zeros(4)).item() == pytest.approx(0.0, abs=1e-7)
    loss.backward()
    assert torch.allclose(z.grad, (torch.sigmoid(z.detach()) - 0.5) / 3, atol=1e-6)
    assert float(z.grad.abs().max()) <= 0.5 / 3
    # an unbounded logit does not make the loss or its gradient blow up in F's favour: larger |z| costs more
    assert confusion_loss(torch.tensor([50.0])).item() > confusion_loss(torch.tensor([5.0])).item() > 0


def test_d_learns_only_from_disc_and_f_only_from_confusion():
    torch.manual_seed(0)
    d = domain_discriminator(4, 8)
    fs = torch.randn(5, 4, requires_grad=True)
    fp = torch.randn(6, 4, requires_grad=True)
    out = domain_terms(d, fs, fp)
    grads = torch.autograd.grad(out["disc"], [fs, fp, *d.parameters()], allow_unused=True)
    assert grads[0] is None and grads[1] is None  # D's loss sees detached features
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads[2:])
    grads = torch.autograd.grad(out["confusion"], [fs, fp, *d.parameters()], allow_unused=True)
    assert float(grads[0].abs().sum()) > 0 and float(grads[1].abs().sum()) > 0
    assert all(g is None for g in grads[2:])  # F's term leaves D alone
    logits = d(torch.cat([fs, fp])).squeeze(1)
    target = torch.cat([torch.ones(5), torch.zeros(6)])
    assert out["accuracy"].item() == pytest.approx(float(((logits > 0).float() == target).float().mean()))
    assert out["disc"].item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6)


class _Reverse(torch.autograd.Function):
    """Gradient reversal (Ganin & Lempitsky 2015), here only to show what the package no longer offers."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def _fixed_feature_set(n: int = 512, d: int = 16, gap: float = 2.0):
    """Paired sketch/photo inputs: shared content plus a modality offset along the first axis."""
    g = torch.Generator().manual_seed(0)
    content = torch.randn(n, d, generator=g)
    offset = torch.zeros(d)
    offset[0] = gap
    return (content + offset + 0.3 * torch.randn(n, d, generator=g),
            content - offset + 0.3 * torch.randn(n, d, generator=g))


def _train_domain_term(reverse: bool, steps: int = 200):
    """F (a linear map from the identity) trained on L_D alone by plain gradient steps, D by Adam."""
    xs, xp = _fixed_feature_set()
    torch.manual_seed(0)
    f = nn.Linear(xs.shape[1], xs.shape[1])
    with torch.no_grad():
        f.weight.copy_(torch.eye(xs.shape[1]))
        f.bias.zero_()
    d = domain_discriminator(xs.shape[1], 32)
    opt_f, opt_d = torch.optim.SGD(f.parameters(), lr=0.1), torch.optim.Adam(d.parameters(), lr=1e-2)

    def gap_and_rank():
        with torch.no_grad():
            fs, fp = f(xs), f(xp)
        gap = float((fs.mean(0) - fp.mean(0)).norm() / torch.cat([fs, fp]).norm(dim=1).mean())
        return gap, effective_rank(torch.cat([fs, fp]))

    before = gap_and_rank()
    for _ in range(steps):
        fs, fp = f(xs), f(xp)
        if reverse:  # the first implementation: one BCE, D descends it, F ascends it
            feats = _Reverse.apply(torch.cat([fs, fp]))
            target = torch.cat([torch.ones(len(fs)), torch.zeros(len(fp))])
            loss = F.binary_cross_entropy_with_logits(d(feats).squeeze(1), target)
        else:
            out = domain_terms(d, fs, fp)
            loss = out["disc"] + out["confusion"]
        opt_f.zero_grad()
        opt_d.zero_grad()
        loss.backward()
        opt_f.step()
        opt_d.step()
    return before, gap_and_rank()


def test_confusion_shrinks_a_modality_gap_on_a_fixed_feature_set_without_lowering_the_rank():
    (gap0, rank0), (gap1, rank1) = _train_domain_term(reverse=False)
    assert gap0 > 0.8
    assert gap1 < 0.25 * gap0  # the mean sketch and mean photo feature have come together
    # only the offset's one direction went: the effective rank stays within one dimension of its start
    assert rank1 > rank0 - 1.0 and rank1 > 0.9 * rank0


def test_gradient_reversal_on_the_same_set_widens_the_gap_instead():
    """Why the package dropped it: F ascending D's unbounded BCE overshoots confusion and flips the
    modalities past each other (the gap grows) while the features lose rank."""
    (gap0, rank0), (gap1, rank1) = _train_domain_term(reverse=True)
    assert gap1 > 1.5 * gap0
    assert rank1 < 0.9 * rank0


def test_cosine_classifier_logits_by_hand_ignore_feature_scale_and_learn():
    clf = CosineClassifier(3, 2, scale=10.0, learn_scale=False)
    with torch.no_grad():
        clf.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
    x = torch.tensor([[3.0, 4.0, 0.0]])
    assert torch.allclose(clf(x), torch.tensor([[10 * 0.6, 10 * 0.8]]), atol=1e-5)
    assert torch.allclose(clf(100.0 * x), clf(x), atol=1e-5)  # only directions count
    assert "log_scale" not in dict(clf.named_parameters())
    learned = CosineClassifier(3, 2, scale=5.0)
    assert float(learned.log_scale.detach().exp()) == pytest.approx(5.0)
    assert "log_scale" in dict(learned.named_parameters())
    with pytest.raises(ValueError, match="scale"):
        CosineClassifier(3, 2, scale=0.0)
    # on nearly collinear features (a large shared component) it still learns the classes
    torch.manual_seed(0)
    common = torch.ones(8) * 5.0
    centres = torch.randn(4, 8)
    labels = torch.arange(4).repeat_interleave(16)
    feats = common + centres[labels] + 0.1 * torch.randn(64, 8)
    clf = CosineClassifier(8, 4)
    opt = torch.optim.Adam(clf.parameters(), lr=0.05)
    for _ in range(200):
        loss = F.cross_entropy(clf(feats), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * math.log(4)
