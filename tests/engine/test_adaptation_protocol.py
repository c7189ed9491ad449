"""The adaptation protocol: support disjoint from the queries and from every sketch of a support photo,
galleries per category / user, seeded draws, Acc@K with the engine's tie convention against a
by-hand ranking, macro and micro means by hand, model selection on validation groups only, and
``evaluate_run(protocol=...)`` records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sbirkit.data import create_dataset
from sbirkit.engine import Evaluator, Trainer, evaluate_run
from sbirkit.engine.adapt_run import protocol_for_run
from sbirkit.engine.adaptation import AdaptationProtocol, draw_tasks, support_batch
from sbirkit.engine.options import EvalOptions
from sbirkit.errors import DataError, UsageError
from sbirkit.models import create_encoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods"))
from adaptive_helpers import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def two_sketches_each():
    """6 classes x 8 photos, every photo drawn twice (by two users)."""
    return create_dataset("synthetic", num_classes=6, photos_per_class=8, sketches_per_photo=2, image_size=16,
                          splits={"train": 0.5, "test": 0.5})


def test_support_is_disjoint_from_queries_and_from_every_sketch_of_a_support_photo(two_sketches_each):
    ds = two_sketches_each
    tasks, skipped = draw_tasks(ds, "test", "class", k=2, draws=5, seed=3)
    assert not skipped and len(tasks) == 6 * 5
    for t in tasks:
        support_sketches = {s.key for s, _ in t.support}
        support_photos = {p.key for _, p in t.support}
        assert len(support_photos) == 2
        assert all(s.key not in support_sketches and p.key not in support_photos for s, p in t.queries)
        # the other sketch of a support photo is no query either
        queried = {s.key for s, _ in t.queries}
        for s in ds.sketches("test"):
            if s.instance_id in {p.instance_id for _, p in t.support}:
                assert s.key not in queried
        gallery = {p.key for p in t.gallery}
        assert gallery == {p.key for p in ds.photos("test") if p.class_index == t.support[0][0].class_index}
        assert support_photos <= gallery and all(p.key in gallery for _, p in t.queries)
        assert len(t.queries) == 2 * (len(gallery) - 2) and not t.negatives  # k >= 2: no extra negatives
    again, _ = draw_tasks(ds, "test", "class", k=2, draws=5, seed=3)
    assert [[s.key for s, _ in t.support] for t in again] == [[s.key for s, _ in t.support] for t in tasks]
    draws = {tuple(sorted(p.key for _, p in t.support)) for t in tasks if t.group == "house"}
    assert len(draws) > 1  # five draws are not one support set five times


def test_one_shot_support_gets_a_negative_and_user_tasks_rank_every_photo(two_sketches_each):
    ds = two_sketches_each
    tasks, _ = draw_tasks(ds, "test", "user", k=1, draws=2, groups=["neat"], seed=0)
    for t in tasks:
        assert t.group == "neat" and len(t.negatives) == 1
        assert t.negatives[0].key != t.support[0][1].key
        assert all(s.user_id == "neat" for s, _ in t.queries) and t.queries
        assert {p.key for p in t.gallery} == {p.key for p in ds.photos("test")}
    few, skipped = draw_tasks(ds, "test", "class", k=4, draws=1, groups=["house"])
    assert not few and "house" in skipped and "k=4" in skipped["house"]
    with pytest.raises(UsageError, match="k"):
        draw_tasks(ds, "test", "class", k=0, draws=1)
    with pytest.raises(DataError, match="zebra"):
        draw_tasks(ds, "test", "class", k=1, draws=1, groups=["zebra"])


def _ranks_by_hand(q: np.ndarray, g: np.ndarray, q_inst, g_inst) -> np.ndarray:
    dist = 1.0 - q @ g.T  # cosine distance of unit rows
    out = []
    for i, inst in enumerate(q_inst):
        true = dist[i, [j for j, x in enumerate(g_inst) if x == inst]].min()
        out.append(int((dist[i] <= true).sum()))  # ties count against the query
    return np.array(out)


def test_acc_at_k_macro_and_micro_match_a_hand_computation(two_sketches_each):
    ds = two_sketches_each
    torch.manual_seed(0)
    encoder = create_encoder("tiny_cnn", embed_dim=8).eval()
    calls = []

    def adapt(batch):
        calls.append((tuple(batch["sketch"].shape), tuple(batch["photo"].shape)))
        return encoder

    protocol = AdaptationProtocol({"name": "synthetic"}, seed=1, adapt=adapt, k=2, group_by="class",
                                  groups=["house", "tree"], draws=3)
    evaluator = Evaluator(encoder, ds, batch_size=64)
    out = protocol.evaluate(evaluator, "test", ["sketch2photo"], EvalOptions())
    assert len(calls) == 6 and calls[0] == ((2, 3, 16, 16), (2, 3, 16, 16))
    tasks, _ = draw_tasks(ds, "test", "class", 2, 3, groups=["house", "tree"], seed=1)
    macro, micro = {1: [], 5: []}, {1: [], 5: []}
    for d in range(3):
        per_group, pooled = {1: [], 5: []}, {1: [], 5: []}
        for t in [t for t in tasks if t.draw == d]:
            q, _, qi = evaluator.embed([s for s, _ in t.queries])
            g, _, gi = evaluator.embed(t.gallery)
            ranks = _ranks_by_hand(q, g, qi, gi)
            for k in (1, 5):
                per_group[k].append(np.mean(ranks <= k))
                pooled[k] += list(ranks <= k)
        for k in (1, 5):
            macro[k].append(np.mean(per_group[k]))
            micro[k].append(np.mean(pooled[k]))
    row, micro_row = out.results["sketch2photo"], out.results["sketch2photo (micro)"]
    for k in (1, 5):
        assert row.metrics[f"acc@{k}"] == pytest.approx(np.mean(macro[k]))
        assert row.metrics[f"acc@{k}:sd"] == pytest.approx(np.std(macro[k], ddof=1))
        assert micro_row.metrics[f"acc@{k}"] == pytest.approx(np.mean(micro[k]))
    assert out.protocol["groups"] == ["house", "tree"] and out.protocol["k"] == 2 and out.protocol["draws"] == 3
    assert out.protocol["macro_per_draw"]["acc@1"] == pytest.approx(macro[1])
    assert out.protocol["support_disjoint_from_queries"] is True


class _SamePoint(torch.nn.Module):
    """Embeds every image at one point: every gallery photo ties with the true one."""

    embed_dim = 4

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.ones(4))

    def encode_sketch(self, x):
        return self.anchor.expand(x.shape[0], 4)

    encode_photo = encode_sketch


@pytest.mark.parametrize("ties", ["pessimistic", "expected", "optimistic"])
def test_acc_at_k_follows_the_tie_policy(two_sketches_each, ties):
    """All photos tied: the true photo (one of n) is first with probability 1/n under ``expected``,
    never under ``pessimistic``, always under ``optimistic``; the record names the policy."""
    ds = two_sketches_each
    encoder = _SamePoint()
    protocol = AdaptationProtocol({"name": "synthetic"}, seed=0, adapt=lambda batch: encoder, k=1,
                                  group_by="class", groups=["house"], draws=2)
    out = protocol.evaluate(Evaluator(encoder, ds, batch_size=64), "test", ["sketch2photo"], EvalOptions(ties=ties))
    n = len([p for p in ds.photos("test") if p.class_name == "house"])
    assert n > 2
    row = out.results["sketch2photo"]
    assert row.metrics["acc@1"] == pytest.approx({"pessimistic": 0.0, "expected": 1 / n, "optimistic": 1.0}[ties])
    assert row.metrics["acc@1:sd"] == pytest.approx(0.0)  # every draw: the same ties
    assert row.ties == ties and row.tie_policy.startswith(ties) and out.protocol["ties"] == ties


def test_summarise_by_hand():
    protocol = AdaptationProtocol({}, adapt=lambda b: None, k=1, draws=2)
    nan = float("nan")
    tasks = [{"group": "a", "draw": 0, "per_query": {"acc@1": np.array([1.0, 0.0]), "acc@5": np.array([1.0, 1.0]),
                                                    "acc@10": np.array([1.0, 1.0])}},
             {"group": "b", "draw": 0, "per_query": {"acc@1": np.array([1.0, 1.0, 1.0, 0.0]),
                                                    "acc@5": np.array([1.0, 1, 1, 1]), "acc@10": np.array([1.0, 1, 1, 1])}},
             {"group": "a", "draw": 1, "per_query": {"acc@1": np.array([0.0, 0.0]), "acc@5": np.array([1.0, nan]),
                                                    "acc@10": np.array([1.0, 1.0])}},
             {"group": "b", "draw": 1, "per_query": {"acc@1": np.array([1.0, 0, 0, 0]), "acc@5": np.array([1.0, 1, 1, 1]),
                                                    "acc@10": np.array([1.0, 1, 1, 1])}}]
    s = protocol.summarise(tasks)
    # draw 0: groups .5 and .75 -> macro .625, micro 4/6; draw 1: 0 and .25 -> .125, micro 1/6
    assert s["macro_per_draw"]["acc@1"] == pytest.approx([0.625, 0.125])
    assert s["macro"]["acc@1"] == pytest.approx((0.375, np.std([0.625, 0.125], ddof=1)))
    assert s["micro"]["acc@1"][0] == pytest.approx((4 / 6 + 1 / 6) / 2)
    assert s["macro_per_draw"]["acc@5"] == pytest.approx([1.0, 1.0])  # an undefined query is left out
    assert s["per_group"]["a"]["acc@1"] == pytest.approx(0.25)


def test_model_selection_adapts_on_validation_groups_only_and_eval_records_the_protocol(tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(), run)
    trainer.fit()
    # the adaptation protocol, wrapped by the collapse monitors (methods/collapse.py)
    assert isinstance(trainer.val_protocol.inner, AdaptationProtocol)
    assert trainer.val_protocol.groups == ["star"]
    assert set(trainer.source.sampler.groups) == {"house", "tree", "fish"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in rows if r.get("split") == "val"]
    # the preset validates before step 1 too (train.validate_at_start), then every eval_every steps
    assert [r["step"] for r in vals] == [0, 6, 12] and all("sketch2photo/acc@1" in r for r in vals)
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["selection"] == "max sketch2photo/acc@1 on split 'val'"
    assert best["value"] == pytest.approx(max(r["sketch2photo/acc@1"] for r in vals))

    protocol = protocol_for_run(run, k=2, draws=2)
    assert protocol.groups == ["cup", "umbrella"] and protocol.name == "adapt2-class"
    report = evaluate_run(run, protocol=protocol)
    saved = json.loads((run / "eval-test-best-adapt2-class.json").read_text())
    assert saved["protocol"]["groups"] == ["cup", "umbrella"] and saved["protocol"]["strategy"] == "meta"
    assert saved["results"]["sketch2photo"]["metrics"] == report["results"]["sketch2photo"]["metrics"]
    margin = saved["protocol"]["margin"]
    assert 0 < margin["min"] <= margin["max"] < 1
    none = evaluate_run(run, protocol=protocol_for_run(run, k=2, draws=2, strategy="none"))
    assert none["protocol"]["name"] == "adapt2-class-none" and none["protocol"]["margin"] is None
    assert (run / "eval-test-best-adapt2-class-none.json").is_file()


def test_cached_maps_adapt_and_embed_like_images(tmp_path):
    """train.cached_features with spatial attention: the engine caches the backbone's final maps; support
    sets come from the cache and the adapted encoder embeds cached maps as it embeds the images."""
    run = tmp_path / "cached"
    trainer = Trainer(tiny_config("train.cached_features=true"), run)
    trainer.fit()
    assert trainer.source.inputs == "features" and trainer.features.stage is not None
    assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r.get("split") == "val"] == [0, 6, 12]  # validate_at_start (the preset)
    report = evaluate_run(run, protocol=protocol_for_run(run, k=2, draws=1))
    assert report["protocol"]["groups"] == ["cup", "umbrella"]

    method = trainer.method.eval()
    ds, store = trainer.dataset, trainer.features
    pairs = [(s, p) for s, p in ds.pairs("test") if s.class_name == "cup"][:3]
    from_cache = support_batch(ds, pairs, store=store, encoder=method.encoder)
    from_images = support_batch(ds, pairs)
    assert from_cache["inputs"] == "features" and from_cache["sketch"].ndim == 4  # maps, not pooled vectors
    a, b = method.adapt(from_cache), method.adapt(from_images)
    for name in a.adapted:
        assert torch.allclose(a.adapted[name], b.adapted[name], atol=1e-5)
    with torch.no_grad():
        via_maps = a.encode_features(from_cache["sketch"], "sketch", store.stage)
        via_images = a.eval().encode_sketch(from_images["sketch"])
    assert torch.allclose(via_maps, via_images, atol=1e-5)
    assert not torch.allclose(via_maps, method.encoder.encode_features(from_cache["sketch"], "sketch", store.stage))
