"""The data-free SBIR loss terms against hand-computed values (sbirkit.losses.data_free)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sbirkit.losses import data_free as L


def test_target_mass_sums_the_teacher_classes_a_map_joins_and_leaves_out_the_rest():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))  # softmax = (0.5, 0.2, 0.3)
    natives = torch.tensor([0, 1])  # classes 0 and 1 -> target 0; class 2 belongs to no target
    member = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mass = L.target_mass(logits, natives, member)
    assert mass[0].tolist() == pytest.approx([0.7, 0.0])
    covered = torch.tensor([True, False])
    assert L.renormalise(mass, covered)[0].tolist() == pytest.approx([1.0, 0.0])
    # one-hot: -log of the arg-max target's share of the full softmax: -log 0.7, not 0
    assert float(L.one_hot_loss(mass, covered)) == pytest.approx(-math.log(0.7))


def test_one_hot_with_an_identity_map_is_cross_entropy_to_the_argmax():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    mass = L.target_mass(logits, torch.arange(3), torch.eye(3))
    expected = F.cross_entropy(logits, logits.argmax(1))
    assert float(L.one_hot_loss(mass, torch.ones(3, dtype=torch.bool))) == pytest.approx(float(expected), rel=1e-6)
    # by hand: first row -log(e^2 / (e^2 + 2))
    first = -math.log(math.e ** 2 / (math.e ** 2 + 2))
    assert float(L.one_hot_loss(mass[:1], torch.ones(3, dtype=torch.bool))) == pytest.approx(first, rel=1e-6)


def test_class_balance_is_the_negative_entropy_of_the_batch_mean():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # mean (0.5, 0.5): entropy log 2
    assert float(L.class_balance_loss(p, torch.tensor([True, True]))) == pytest.approx(-math.log(2))
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # one class only: entropy 0
    assert float(L.class_balance_loss(same, torch.tensor([True, True]))) == pytest.approx(0.0, abs=1e-9)


def test_activation_is_minus_the_mean_absolute_feature():
    assert float(L.activation_loss(torch.tensor([[1.0, -2.0], [0.0, 3.0]]))) == pytest.approx(-1.5)


def test_class_alignment_is_the_symmetric_kl_over_the_shared_classes():
    photo = torch.tensor([[0.4, 0.4, 0.2]])  # class 2 is the photo teacher's only
    sketch = torch.tensor([[0.9, 0.1, 0.0]])
    shared = torch.tensor([0, 1])
    a, b = [0.5, 0.5], [0.9, 0.1]  # renormalised over the shared classes
    kl_ab = sum(x * math.log(x / y) for x, y in zip(a, b))
    kl_ba = sum(y * math.log(y / x) for x, y in zip(a, b))
    assert float(L.class_alignment_loss(photo, sketch, shared)) == pytest.approx(0.5 * (kl_ab + kl_ba), rel=1e-6)
    assert float(L.class_alignment_loss(photo, photo, shared)) == pytest.approx(0.0, abs=1e-7)


def test_modality_guidance_is_two_binary_cross_entropies():
    zero = torch.zeros(4)
    assert float(L.modality_guidance_loss(zero, zero)) == pytest.approx(2 * math.log(2))
    sure = torch.full((4,), 50.0)
    assert float(L.modality_guidance_loss(sure, -sure)) == pytest.approx(0.0, abs=1e-6)  # photos photo-like, sketches not
    assert float(L.modality_guidance_loss(-sure, sure)) == pytest.approx(100.0, rel=1e-4)


def test_proxy_logits_projection_and_distance():
    z = torch.tensor([[1.0, 0.0]])
    proxies = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    assert L.proxy_logits(z, proxies, "prob").tolist() == [[0.0, 3.0]]
    # -||z - P||^2 / tau: (1 + 4) and (4 + 0) over tau 2
    assert L.proxy_logits(z, proxies, "euclid", 2.0)[0].tolist() == pytest.approx([-2.5, -2.0])
    with pytest.raises(ValueError):
        L.proxy_logits(z, proxies, "cosine")


def test_student_distribution_aggregates_teacher_classes_like_the_teacher():
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    member = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    q = L.student_distribution(logits, member, torch.tensor([True, True]))
    assert q[0].tolist() == pytest.approx([0.5, 0.5])


def test_kl_divergence_by_hand():
    p, q = torch.tensor([[0.25, 0.75]]), torch.tensor([[0.5, 0.5]])
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert float(L.kl_divergence(p, q)) == pytest.approx(expected, rel=1e-6)
    assert float(L.kl_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]]))) == pytest.approx(math.log(2))


def test_bn_statistics_loss_by_hand():
    stats = [(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))]
    assert float(L.bn_statistics_loss(stats)) == pytest.approx(1.0 + 1.0)


def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # horizontal steps of 1, no vertical change
    assert float(L.total_variation(x)) == pytest.approx(1.0)


def test_info_nce_with_a_queue_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    queue = torch.tensor([[-1.0, 0.0]])
    t = 0.5
    # row 0: logits (1, 0.6, -1) / t, positive 0; row 1: (0, 0.8, 0) / t, positive 1
    rows = [[1.0, 0.6, -1.0], [0.0, 0.8, 0.0]]
    expected = sum(-r[i] / t + math.log(sum(math.exp(v / t) for v in r)) for i, r in enumerate(rows)) / 2
    assert float(L.info_nce(q, k, t, queue)) == pytest.approx(expected, rel=1e-6)
    # without a queue the negatives are the other keys only
    rows = [[1.0, 0.6], [0.0, 0.8]]
    expected = sum(-r[i] / t + math.log(sum(math.exp(v / t) for v in r)) for i, r in enumerate(rows)) / 2
    assert float(L.info_nce(q, k, t)) == pytest.approx(expected, rel=1e-6)


def test_info_nce_can_leave_out_negatives_of_the_same_pseudo_class():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    queue = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    labels, queue_labels = torch.tensor([0, 0]), torch.tensor([0, 1])
    t = 1.0
    # row 0 keeps its positive and the queue row of class 1; row 1 likewise
    rows = [([1.0, 0.0], 0), ([0.8, -1.0], 0)]
    expected = sum(-r[i] + math.log(sum(math.exp(v) for v in r)) for r, i in rows) / 2
    got = L.info_nce(q, k, t, queue, labels, queue_labels)
    assert float(got) == pytest.approx(expected, rel=1e-6)
