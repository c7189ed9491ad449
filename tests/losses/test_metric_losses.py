"""Loss values checked against hand computation on 3-pair batches, and a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

from sbirkit.losses import (
    ContrastiveLoss,
    CosineDistance,
    CrossModalTripletLoss,
    EuclideanDistance,
    create_distance,
    match_masks,
)

# Three (sketch, photo) pairs in 2-D. Euclidean distances d[i, j] = ||sketch_i - photo_j||:
#   s0=(0,0): p0 1,   p1 3,  p2 0
#   s1=(1,0): p0 √2,  p1 2,  p2 1
#   s2=(0,2): p0 1,   p1 √13, p2 2
SKETCH = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
PHOTO = torch.tensor([[0.0, 1.0], [3.0, 0.0], [0.0, 0.0]])
LABELS = torch.tensor([0, 0, 1])
INSTANCES = torch.tensor([0, 1, 2])
R2, R13 = math.sqrt(2.0), math.sqrt(13.0)


def test_distances_by_hand():
    d = EuclideanDistance().pairwise(SKETCH, PHOTO)
    assert torch.allclose(d, torch.tensor([[1.0, 3.0, 0.0], [R2, 2.0, 1.0], [1.0, R13, 2.0]]), atol=1e-5)
    sq = EuclideanDistance(squared=True).pairwise(SKETCH, PHOTO)
    assert torch.allclose(sq, d.pow(2), atol=1e-5)
    assert torch.allclose(EuclideanDistance().paired(SKETCH, PHOTO), torch.tensor([1.0, 2.0, 2.0]))
    cos = CosineDistance().pairwise(torch.tensor([[1.0, 0.0], [2.0, 2.0]]), torch.tensor([[0.0, 3.0], [1.0, 0.0]]))
    assert torch.allclose(cos, torch.tensor([[1.0, 0.0], [1 - 1 / R2, 1 - 1 / R2]]), atol=1e-6)
    paired = CosineDistance().paired(torch.tensor([[1.0, 0.0]]), torch.tensor([[-5.0, 0.0]]))
    assert paired.item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="distance"):
        create_distance("manhattan")


def test_match_masks_levels():
    pos, neg = match_masks(LABELS, level="class")
    assert pos.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert neg.tolist() == [[False, False, True], [False, False, True], [True, True, False]]
    pos, neg = match_masks(LABELS, INSTANCES, level="instance", same_class_negatives=True)
    assert pos.tolist() == torch.eye(3, dtype=torch.bool).tolist()
    assert neg.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    _, neg_any = match_masks(LABELS, INSTANCES, level="instance")
    assert neg_any.tolist() == (~torch.eye(3, dtype=torch.bool)).tolist()
    with pytest.raises(ValueError, match="instances"):
        match_masks(LABELS, None, level="instance")


def test_triplet_batch_hard_by_hand():
    # s0: hardest pos max(1, 3)=3, hardest neg 0 -> 3.5; s1: max(√2, 2)=2, neg 1 -> 1.5;
    # s2: pos 2, hardest neg min(1, √13)=1 -> 1.5.  Mean 6.5 / 3.
    out = CrossModalTripletLoss("euclidean", margin=0.5, mining="batch_hard")(SKETCH, PHOTO, LABELS)
    assert out["loss"].item() == pytest.approx(6.5 / 3, abs=1e-5)
    assert out["triplet"] is out["loss"]
    assert out["active"].item() == pytest.approx(1.0)


def test_triplet_semi_hard_by_hand():
    # s0: pos 1, only negative p2 at 0 is not farther -> fallback farthest negative 0 -> 1.5
    # s1: pos 2, only negative p2 at 1 -> fallback 1 -> 1.5
    # s2: pos 2, negatives 1 (closer) and √13 (farther) -> semi-hard √13 -> relu(2 - √13 + m)
    loss = CrossModalTripletLoss("euclidean", margin=0.5, mining="semi_hard")
    out = loss(SKETCH, PHOTO, LABELS)
    assert out["loss"].item() == pytest.approx(1.0, abs=1e-5)
    assert out["active"].item() == pytest.approx(2 / 3)
    out = CrossModalTripletLoss("euclidean", margin=2.0, mining="semi_hard")(SKETCH, PHOTO, LABELS)
    expected = (3.0 + 3.0 + (2 - R13 + 2.0)) / 3
    assert out["loss"].item() == pytest.approx(expected, abs=1e-5)


def test_triplet_random_single_negative_is_exact():
    # Fine-grained with same-class negatives: s0's only negative is p1, s1's is p0, s2 has none
    # (excluded).  s0: relu(1 - 3 + .5) = 0; s1: relu(2 - √2 + .5).
    loss = CrossModalTripletLoss("euclidean", margin=0.5, mining="random", level="instance",
                                 same_class_negatives=True)
    out = loss(SKETCH, PHOTO, LABELS, INSTANCES)
    assert out["loss"].item() == pytest.approx((0.0 + 2 - R2 + 0.5) / 2, abs=1e-5)
    assert out["active"].item() == pytest.approx(0.5)


def test_triplet_random_draws_only_negatives_and_all_of_them():
    # Class level, s2 has two negatives: p0 (loss 1.5) and p1 (loss 0); s0 and s1 give 1.5 each.
    loss = CrossModalTripletLoss("euclidean", margin=0.5, mining="random")
    seen = set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        seen.add(round(loss(SKETCH, PHOTO, LABELS, generator=g)["loss"].item(), 4))
    assert seen == {round(4.5 / 3, 4), round(3.0 / 3, 4)}


def test_triplet_cosine_and_gradients():
    s = SKETCH.clone().requires_grad_(True)
    p = (PHOTO + 0.1).requires_grad_(True)
    out = CrossModalTripletLoss(CosineDistance(), margin=0.3, mining="batch_hard")(s, p, LABELS)
    d = CosineDistance().pairwise(s.detach(), p.detach())
    ref = torch.stack([
        torch.relu(max(d[0, 0], d[0, 1]) - d[0, 2] + 0.3),
        torch.relu(max(d[1, 0], d[1, 1]) - d[1, 2] + 0.3),
        torch.relu(d[2, 2] - min(d[2, 0], d[2, 1]) + 0.3),
    ]).mean()
    assert out["loss"].item() == pytest.approx(ref.item(), abs=1e-6)
    out["loss"].backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_triplet_no_negatives_gives_zero_with_graph():
    s = torch.randn(3, 4, requires_grad=True)
    out = CrossModalTripletLoss(mining="batch_hard")(s, torch.randn(3, 4), torch.zeros(3, dtype=torch.long))
    assert out["loss"].item() == 0.0
    out["loss"].backward()
    assert s.grad is not None


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_triplet_matches_brute_force(mining):
    g = torch.Generator().manual_seed(0)
    s, p = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    labels = torch.randint(0, 3, (12,), generator=g)
    out = CrossModalTripletLoss("squared_euclidean", margin=0.7, mining=mining)(s, p, labels)
    d = ((s[:, None] - p[None]) ** 2).sum(-1)
    terms = []
    for i in range(12):
        negs = [d[i, j].item() for j in range(12) if labels[j] != labels[i]]
        if not negs:
            continue
        if mining == "batch_hard":
            ap = max(d[i, j].item() for j in range(12) if labels[j] == labels[i])
            an = min(negs)
        else:
            ap = d[i, i].item()
            farther = [x for x in negs if x > ap]
            an = min(farther) if farther else max(negs)
        terms.append(max(0.0, ap - an + 0.7))
    assert out["loss"].item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_contrastive_by_hand():
    # matches (class level): d = 1, 3, √2, 2, 2 -> 1/2 d² = .5, 4.5, 1, 2, 2 -> mean 2.0
    # non-matches: d = 0, 1, 1, √13 with m = 2 -> 1/2 max(0, 2 - d)² = 2, .5, .5, 0 -> mean .75
    out = ContrastiveLoss("euclidean", margin=2.0)(SKETCH, PHOTO, LABELS)
    assert out["pos"].item() == pytest.approx(2.0, abs=1e-5)
    assert out["neg"].item() == pytest.approx(0.75, abs=1e-5)
    assert out["loss"].item() == pytest.approx(2.75, abs=1e-5)


def test_contrastive_instance_level_by_hand():
    # matches: the diagonal d = 1, 2, 2 -> .5, 2, 2 -> mean 1.5
    # same-class non-matches: (0,1) d=3 -> 0; (1,0) d=√2 -> .5 (2-√2)²
    loss = ContrastiveLoss("euclidean", margin=2.0, level="instance", same_class_negatives=True)
    out = loss(SKETCH, PHOTO, LABELS, INSTANCES)
    assert out["pos"].item() == pytest.approx(1.5, abs=1e-5)
    assert out["neg"].item() == pytest.approx(0.25 * (2 - R2) ** 2, abs=1e-5)


def test_bad_options_are_errors():
    with pytest.raises(ValueError, match="mining"):
        CrossModalTripletLoss(mining="hardest")
    with pytest.raises(ValueError, match="level"):
        ContrastiveLoss(level="user")


def test_triplet_batch_all_by_hand():
    # class level, positive = own photo, every other-class photo a negative (m = 0.5):
    # s0: d_ap 1, neg p2 (0) -> 1.5; s1: d_ap 2, neg p2 (1) -> 1.5;
    # s2: d_ap 2, negs p0 (1) -> 1.5, p1 (√13) -> 0.  Mean over the 4 triplets: 4.5 / 4.
    out = CrossModalTripletLoss("euclidean", margin=0.5, mining="all")(SKETCH, PHOTO, LABELS)
    assert out["loss"].item() == pytest.approx(4.5 / 4, abs=1e-5)
    assert out["active"].item() == pytest.approx(3 / 4)
