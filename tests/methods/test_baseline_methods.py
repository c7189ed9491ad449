"""Baseline methods: registry, options checking, sampler specs, and training_step values
recomputed by hand from the encoder's embeddings."""

from __future__ import annotations

import pytest
import torch

from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.losses import ContrastiveLoss, CrossModalTripletLoss
from sbirkit.methods import Method, SamplerSpec, create_method, list_methods


def _config(preset: str, *overrides: str) -> dict:
    return apply_overrides(load_preset(preset), ["model.embed_dim=8", *overrides])


def _batch(labels, instances, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    return {"sketch": torch.rand(n, 3, size, size, generator=g), "photo": torch.rand(n, 3, size, size, generator=g),
            "label": torch.tensor(labels), "instance": torch.tensor(instances)}


def test_registry_lists_the_baselines():
    assert {"siamese", "triplet", "triplet_sn"} <= set(list_methods())
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        create_method("nope", _config("triplet-synthetic"))


def test_presets_build_the_right_losses_and_samplers():
    siamese = create_method("siamese", _config("siamese-synthetic"))
    assert isinstance(siamese, Method) and isinstance(siamese.loss, ContrastiveLoss)
    assert siamese.sampler_spec() == SamplerSpec(kind="pairs", mode="class", classes_per_batch=8)
    triplet = create_method("triplet", _config("triplet-synthetic"))
    assert isinstance(triplet.loss, CrossModalTripletLoss) and triplet.loss.mining == "all"
    assert triplet.loss.level == "class" and triplet.sampler_spec().mode == "class"
    sn = create_method("triplet_sn", _config("triplet_sn-synthetic"))
    assert sn.loss.level == "instance" and sn.loss.same_class_negatives
    assert sn.sampler_spec() == SamplerSpec(kind="pairs", mode="instance", classes_per_batch=4)
    assert sn.encoder.shared is False
    assert create_method("triplet_sn", _config("triplet_sn-synthetic", "model.shared=true")).encoder.shared


def test_unknown_or_bad_method_options_are_errors():
    with pytest.raises(ValueError, match=r"method\.mrgin: unknown option for method 'triplet'"):
        create_method("triplet", _config("triplet-synthetic", "method.mrgin=0.1"))
    with pytest.raises(ValueError, match="mining"):
        create_method("triplet", _config("triplet-synthetic", "method.mining=hardest"))
    with pytest.raises(ValueError, match=r"method\.mining: unknown option for method 'siamese'"):
        create_method("siamese", _config("siamese-synthetic", "method.mining=batch_hard"))


def test_triplet_sn_step_by_hand():
    # two classes x two instances: each anchor's only same-class negative is the other instance
    torch.manual_seed(0)
    method = create_method("triplet_sn", _config("triplet_sn-synthetic", "method.margin=0.5", "method.mining=random"))
    batch = _batch([0, 0, 1, 1], [0, 1, 2, 3])
    out = method.training_step(batch)
    with torch.no_grad():
        s = method.encoder.encode_sketch(batch["sketch"])
        p = method.encoder.encode_photo(batch["photo"])
    other = [1, 0, 3, 2]
    terms = [max(0.0, float(((s[i] - p[i]) ** 2).sum() - ((s[i] - p[other[i]]) ** 2).sum()) + 0.5)
             for i in range(4)]
    assert out["loss"].item() == pytest.approx(sum(terms) / 4, abs=1e-5)
    out["loss"].backward()
    for branch in (method.encoder.sketch_encoder, method.encoder.photo_encoder):
        grads = [q.grad for q in branch.parameters() if q.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)


def test_triplet_uses_other_class_negatives_by_hand():
    torch.manual_seed(1)
    method = create_method("triplet", _config("triplet-synthetic", "method.margin=0.3", "method.mining=batch_hard"))
    batch = _batch([0, 0, 1], [0, 1, 2])
    out = method.training_step(batch)
    with torch.no_grad():
        s = torch.nn.functional.normalize(method.encoder.encode_sketch(batch["sketch"]), dim=1)
        p = torch.nn.functional.normalize(method.encoder.encode_photo(batch["photo"]), dim=1)
    d = 1 - s @ p.T  # cosine distance; batch-hard: farthest same-class photo, nearest other-class photo
    terms = [max(0.0, float(max(d[0, 0], d[0, 1]) - d[0, 2]) + 0.3),
             max(0.0, float(max(d[1, 0], d[1, 1]) - d[1, 2]) + 0.3),
             max(0.0, float(d[2, 2] - min(d[2, 0], d[2, 1])) + 0.3)]
    assert out["loss"].item() == pytest.approx(sum(terms) / 3, abs=1e-5)


def test_siamese_step_by_hand():
    torch.manual_seed(2)
    method = create_method("siamese", _config("siamese-synthetic", "method.margin=1.5"))
    batch = _batch([0, 1, 1], [0, 1, 2])
    out = method.training_step(batch)
    with torch.no_grad():
        d = torch.cdist(method.encoder.encode_sketch(batch["sketch"]), method.encoder.encode_photo(batch["photo"]))
    same = [(0, 0), (1, 1), (1, 2), (2, 1), (2, 2)]
    diff = [(0, 1), (0, 2), (1, 0), (2, 0)]
    pos = sum(0.5 * float(d[i, j]) ** 2 for i, j in same) / len(same)
    neg = sum(0.5 * max(0.0, 1.5 - float(d[i, j])) ** 2 for i, j in diff) / len(diff)
    assert out["pos"].item() == pytest.approx(pos, abs=1e-5)
    assert out["neg"].item() == pytest.approx(neg, abs=1e-5)
    assert out["loss"].item() == pytest.approx(pos + neg, abs=1e-5)


def test_mining_schedule_switches_the_miner_at_its_steps():
    from types import SimpleNamespace

    from sbirkit.losses import MiningSchedule

    schedule = MiningSchedule({0: "all", 3: "hard"})
    assert [schedule.at(s).name for s in (0, 2, 3, 100)] == ["all", "all", "hard", "hard"]
    assert repr(schedule) == "{0: all, 3: hard}" and MiningSchedule("random").at(7).name == "random"
    assert repr(MiningSchedule.from_options("all", {"3": "hard"})) == repr(schedule)  # keys of a saved config.yaml
    with pytest.raises(ValueError, match="step 0 is method.mining"):
        MiningSchedule.from_options("all", {0: "hard"})
    for bad, match in (({1: "hard"}, "start at step 0"), ({0: "all", -1: "hard"}, "integer first steps"),
                       ({0: "nope"}, "expected one of"), ({}, "expected a miner name")):
        with pytest.raises(ValueError, match=match):
            MiningSchedule(bad)
    method = create_method("triplet_sn", _config("triplet_sn-synthetic", "method.mining=all",
                                                   "method.mining_schedule={3: hard}"))
    batch = _batch([0, 0, 1, 1, 0, 1], [0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        s, p = method.embed_side(batch, "sketch").float(), method.embed_side(batch, "photo").float()
    for step, miner in ((0, "all"), (2, "all"), (3, "hard"), (9, "hard")):
        ctx = SimpleNamespace(global_step=step, gather=lambda x: x)
        with torch.no_grad():
            got = method.training_step(batch, ctx)["loss"]
        want = CrossModalTripletLoss("squared_euclidean", 0.2, miner, level="instance", same_class_negatives=True)(
            s, p, batch["label"], batch["instance"])["loss"]
        assert method.loss.mining == miner
        torch.testing.assert_close(got, want)
    # the two miners really differ on this batch, so the switch is visible in the loss
    assert not torch.isclose(
        CrossModalTripletLoss("squared_euclidean", 0.2, "all", level="instance", same_class_negatives=True)(
            s, p, batch["label"], batch["instance"])["loss"],
        CrossModalTripletLoss("squared_euclidean", 0.2, "hard", level="instance", same_class_negatives=True)(
            s, p, batch["label"], batch["instance"])["loss"])
