"""ZSCMR: each loss term on a hand-computed example, the assembled objective and its switches,
seen-class bookkeeping, checkpoint round trip, and that P's class anchors do not collapse."""

from __future__ import annotations

import math

import pytest
import torch

from sbirkit.data import DataError, create_dataset
from sbirkit.engine import SetupContext
from sbirkit.losses import bidirectional_triplet_loss
from sbirkit.methods import create_method
from sbirkit.methods.zscmr import (
    ZSCMR,
    CosineClassifier,
    classification_loss,
    min_pairwise_distance,
    reconstruction_loss,
    semantic_alignment_loss,
)

EMBED = 8


def tiny_dataset(num_classes: int = 4):
    return create_dataset("synthetic", num_classes=num_classes, photos_per_class=10, image_size=16)


def tiny_method(*, semantic: str = "random", **options) -> ZSCMR:
    config = {
        "model": {"backbone": "tiny_cnn", "embed_dim": EMBED, "shared": False},
        "method": {"name": "zscmr", "semantic": semantic,
                   "semantic_options": {"dim": 16, "seed": 0} if semantic == "random" else {}, **options},
    }
    return create_method("zscmr", config)


def test_semantic_alignment_by_hand():
    photo = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sketch = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # photo rows: 0 and (-1, 1) -> 2, mean 1; sketch rows: (-.4, .8) -> .8 and 0, mean .4
    assert semantic_alignment_loss(photo, sketch, targets).item() == pytest.approx(1.4)


def test_bidirectional_triplet_by_hand():
    sketch = torch.tensor([[0.0], [1.0], [3.0]])
    photo = torch.tensor([[0.5], [2.0], [3.5]])
    labels = torch.tensor([0, 0, 1])
    # d[i, j] = (s_i - p_j)^2 = [[.25, 4, 12.25], [.25, 1, 6.25], [6.25, 1, .25]], margin 6
    # sketch anchors (neg photo 2, 2, 0): max(0, .25-12.25+6)=0, max(0, 1-6.25+6)=.75, max(0, .25-6.25+6)=0
    # photo anchors (neg sketch 2, 2, 1): max(0, .25-6.25+6)=0, max(0, 1-1+6)=6, max(0, .25-6.25+6)=0
    out = bidirectional_triplet_loss(sketch, photo, labels, margin=6.0, distance="squared_euclidean",
                                     negatives=(torch.tensor([2, 2, 0]), torch.tensor([2, 2, 1])))
    assert out["sketch_anchor"].item() == pytest.approx(0.25)
    assert out["photo_anchor"].item() == pytest.approx(2.0)
    assert out["triplet"].item() == pytest.approx(2.25)
    with pytest.raises(ValueError, match="another class"):
        bidirectional_triplet_loss(sketch, photo, labels, 6.0, negatives=(torch.tensor([1, 2, 0]), torch.tensor([2, 2, 1])))


def test_bidirectional_triplet_hard_negatives_by_hand():
    sketch = torch.tensor([[0.0], [1.0], [3.0]])
    photo = torch.tensor([[0.5], [2.0], [3.5]])
    # same d as above; the closest other-class item: photos (2, 2, 1) for the sketch anchors,
    # sketches (2, 2, 1) for the photo anchors. sketch side: 0, .75, max(0, .25-1+6)=5.25 -> 2;
    # photo side: 0, 6, max(0, .25-6.25+6)=0 -> 2
    out = bidirectional_triplet_loss(sketch, photo, torch.tensor([0, 0, 1]), margin=6.0, mining="hard")
    assert out["sketch_anchor"].item() == pytest.approx(2.0)
    assert out["photo_anchor"].item() == pytest.approx(2.0)


def test_triplet_random_negatives_are_other_class():
    # two classes of one pair each: the only negative of every anchor is the other pair
    sketch, photo = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [2.5]])
    labels = torch.tensor([3, 7])
    # d = [[1, 6.25], [1, .25]]; sketch anchors: max(0, 1-6.25+2)=0, max(0, .25-1+2)=1.25
    # photo anchors: max(0, 1-1+2)=2, max(0, .25-6.25+2)=0
    out = bidirectional_triplet_loss(sketch, photo, labels, margin=2.0, generator=torch.Generator().manual_seed(0))
    assert out["triplet"].item() == pytest.approx((0 + 1.25) / 2 + (2 + 0) / 2)
    same = bidirectional_triplet_loss(sketch, photo, torch.tensor([1, 1]), margin=2.0)
    assert same["triplet"].item() == 0.0  # no other-class item: no triplet


def test_reconstruction_by_hand():
    value = reconstruction_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]),
                                torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[1.0, 1.0, 4.0]]))
    assert value.item() == pytest.approx((1 + 4) / 2 + 9 / 3)


def test_classification_by_hand():
    photo_logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax (.25, .75)
    sketch_logits = torch.tensor([[0.0, 0.0]])  # softmax (.5, .5)
    value = classification_loss(photo_logits, sketch_logits, torch.tensor([1]))
    assert value.item() == pytest.approx(-math.log(0.75) + math.log(2.0))


def test_cosine_classifier_logits():
    clf = CosineClassifier(2, 3, scale=10.0)
    with torch.no_grad():
        clf.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, -1.0], [1.0, 1.0]]))
    logits = clf(torch.tensor([[3.0, 4.0]]))  # unit (0.6, 0.8)
    expected = 10.0 * torch.tensor([[0.6, -0.8, (0.6 + 0.8) / math.sqrt(2.0)]])
    assert torch.allclose(logits, expected)


def test_min_pairwise_distance():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    assert min_pairwise_distance(points).item() == pytest.approx(1.0)


def _feature_batch(method: ZSCMR, labels: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Backbone-sized features (64-d) around fixed class centres, fresh noise per ``seed``."""
    centres = torch.randn(32, 64, generator=torch.Generator().manual_seed(12345)) * 2
    g = torch.Generator().manual_seed(seed)
    lab = torch.tensor(labels)
    return {"sketch": centres[lab] + torch.randn(len(lab), 64, generator=g),
            "photo": centres[lab] + 0.5 + torch.randn(len(lab), 64, generator=g), "label": lab, "inputs": "features"}


def test_training_step_is_the_weighted_sum_and_terms_switch_off():
    ds = tiny_dataset()
    method = tiny_method(w_cmd=2.0, w_triplet=0.5, w_rcs=3.0, w_class=1.5)
    method.setup(SetupContext.for_dataset(ds))
    assert method.seen_classes.tolist() == [0, 1, 2, 3] and method.mode == "instance"  # synthetic pairs
    batch = _feature_batch(method, [0, 1, 2, 3, 0, 1])
    out = method.training_step(batch)
    e_s = method.encoder.encode_features(batch["sketch"], "sketch")
    e_p = method.encoder.encode_features(batch["photo"], "photo")
    expected_cmd = semantic_alignment_loss(e_p, e_s, method.projected_semantics()[batch["label"]])
    assert out["cmd"].item() == pytest.approx(expected_cmd.item(), rel=1e-6)
    expected_rcs = reconstruction_loss(method.decode_sketch(e_p), batch["sketch"], method.decode_photo(e_s), batch["photo"])
    assert out["rcs"].item() == pytest.approx(expected_rcs.item(), rel=1e-6)
    total = 2.0 * out["cmd"] + 0.5 * out["triplet"] + 3.0 * out["rcs"] + 1.5 * out["class"]
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)

    only = tiny_method(terms=["cmd", "class"])
    only.setup(SetupContext.for_dataset(ds))
    out = only.training_step(batch)
    out["loss"].backward()
    assert set(out) == {"cmd", "class", "loss", "p_min_distance"}
    assert out["loss"].item() == pytest.approx((out["cmd"] + out["class"]).item(), rel=1e-6)
    assert all(p.grad is None for p in only.decode_sketch.parameters())  # rcs off: decoders untouched
    with pytest.raises(ValueError, match="method.terms"):
        tiny_method(terms=["cmd", "nope"])


def test_unseen_labels_are_refused():
    ds = tiny_dataset(6)
    seen_only = ds.subset(s for s in ds.samples if s.class_index < 4)
    method = tiny_method()
    method.setup(SetupContext.for_dataset(seen_only))
    assert method.seen_classes.tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match="seen classes only.*index 5"):
        method.training_step(_feature_batch(method, [0, 1, 5]))


def test_needs_separate_branches_and_known_options():
    with pytest.raises(ValueError, match="model.shared"):
        create_method("zscmr", {"model": {"backbone": "tiny_cnn", "embed_dim": EMBED, "shared": True},
                                "method": {"name": "zscmr"}})
    with pytest.raises(ValueError, match="method.projection"):
        tiny_method(projection="frozen")


def test_checkpoint_round_trip_needs_no_dataset():
    method = tiny_method(projection="fixed")
    method.setup(SetupContext.for_dataset(tiny_dataset()))
    fresh = tiny_method(projection="fixed")  # as load_run builds it: no setup, no dataset
    assert fresh.semantic is None
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.semantic, method.semantic) and torch.equal(fresh.seen_lookup, method.seen_lookup)
    assert torch.allclose(fresh.projected_semantics(), method.projected_semantics())
    assert not fresh.projection.learned and not any(p is fresh.projection.weight for p in fresh.parameters())


def _train_steps(method: ZSCMR, steps: int, seed: int = 0) -> None:
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        labels = torch.randint(0, 4, (16,), generator=gen).tolist()
        out = method.training_step(_feature_batch(method, labels, seed=step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()


def _anchor_and_class_spread(method: ZSCMR) -> tuple[float, float]:
    """(min distance between P's class anchors, min distance between the classes' mean photo embeddings)."""
    batch = _feature_batch(method, [0, 1, 2, 3] * 8, seed=999)
    with torch.no_grad():
        emb = method.encoder.encode_features(batch["photo"], "photo")
    means = torch.stack([emb[batch["label"] == c].mean(0) for c in range(4)])
    return min_pairwise_distance(method.projected_semantics().detach()).item(), min_pairwise_distance(means).item()


@pytest.mark.parametrize("terms", [("cmd", "triplet", "rcs", "class"), ("cmd",)])
def test_fixed_projection_keeps_classes_apart(terms):
    """The default fixed P: the anchors keep their distances and stay unit vectors, and the
    embeddings of different classes stay apart, with every term and with L_cmd alone."""
    torch.manual_seed(0)
    method = tiny_method(terms=list(terms))
    method.setup(SetupContext.for_dataset(tiny_dataset()))
    before = method.projected_semantics().detach().clone()
    _train_steps(method, 450)
    after = method.projected_semantics().detach()
    assert torch.allclose(after, before) and after.norm(dim=1).sub(1).abs().max() < 1e-5
    anchors, classes = _anchor_and_class_spread(method)
    assert anchors == pytest.approx(min_pairwise_distance(before).item()) and anchors > 0.5
    assert classes > 0.5


def test_learned_projection_is_kept_apart_only_by_the_other_terms():
    """A learned P with normalised outputs cannot shrink, but under L_cmd alone all anchors (and
    embeddings) slide onto one direction; the triplet, classification and reconstruction terms
    keep them apart. This is why P is fixed by default."""
    torch.manual_seed(0)
    full = tiny_method(projection="learned")
    full.setup(SetupContext.for_dataset(tiny_dataset()))
    _train_steps(full, 450)
    anchors, classes = _anchor_and_class_spread(full)
    assert anchors > 0.5 and classes > 0.5
    torch.manual_seed(0)
    alone = tiny_method(projection="learned", terms=["cmd"])
    alone.setup(SetupContext.for_dataset(tiny_dataset()))
    _train_steps(alone, 900)
    anchors, classes = _anchor_and_class_spread(alone)
    assert anchors < 0.05 and classes < 0.05
