"""Training sources: every kind's plans are a pure function of the seed and step (what makes resume
exact), batches collate to the documented structure, and one tree map moves nested batches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sbirkit.data import create_dataset
from sbirkit.engine import SetupContext
from sbirkit.engine.sources import GeneratedSource, step_loader, to_device


@pytest.fixture(scope="module")
def ctx():
    ds = create_dataset("synthetic", num_classes=4, photos_per_class=6, image_size=16, seed=0)
    context = SetupContext.for_dataset(ds)
    context.train = type(context.train)(**{**context.train.__dict__, "batch_size": 4})
    return context


def _take(it, n):
    return list(itertools.islice(it, n))


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("kind", ["pairs", "episodes", "samples", "generated"])
def test_plans_are_a_pure_function_of_seed_and_step(ctx, kind):
    make = {"pairs": lambda: ctx.pairs("instance"), "episodes": lambda: ctx.episodes("class", 2, 1, 2),
            "samples": lambda: ctx.samples("sketch"), "generated": lambda: ctx.generated()}[kind]
    source = make()
    stream = _take(source.batches(0), 12)
    for start in (0, 1, 5, 11):  # a resumed run at step `start` sees the same plans
        assert _same(_take(make().batches(start), 12 - start), stream[start:])
    assert not _same(stream[0], stream[1])
    batch = next(iter(step_loader(source, 5, 1)))
    assert _same(batch, source.collate(stream[5]))


def test_batch_structures(ctx):
    pairs = ctx.pairs("instance").collate(next(ctx.pairs("instance").batches(0)))
    assert pairs["sketch"].shape == (4, 3, 16, 16) and pairs["inputs"] == "images"
    episodes = ctx.episodes("class", 2, 1, 2)
    batch = episodes.collate(next(episodes.batches(0)))
    assert len(batch["tasks"]) == 2 and batch["inputs"] == "images"
    task = batch["tasks"][0]
    assert task["support"]["photo"].shape == (2, 3, 16, 16) and task["query"]["sketch"].shape == (1, 3, 16, 16)
    assert len(set(task["support"]["label"].tolist() + task["query"]["label"].tolist())) == 1  # one category
    samples = ctx.samples("photo")
    batch = samples.collate(next(samples.batches(0)))
    assert batch["image"].shape == (4, 3, 16, 16) and set(batch) >= {"label", "inputs"}
    epoch = [i for plan in _take(samples.batches(0), len(samples)) for i in plan]
    assert sorted(epoch) == list(range(len(samples) * 4)) and len(samples) == 4  # each photo once an epoch


def test_generated_seeds_differ_by_step_and_run_seed():
    a, b = GeneratedSource(0, 8), GeneratedSource(1, 8)
    seeds = [a.collate(s)["seed"] for s in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= x < 2**63 for x in seeds)
    assert seeds[:3] == [GeneratedSource(0, 8).step_seed(s) for s in range(3)]
    assert a.step_seed(0) != b.step_seed(0)


def test_to_device_maps_nested_batches_and_leaves_the_rest():
    batch = {"tasks": [{"support": {"x": torch.ones(2)}, "group": "cat"}], "inputs": "images", "n": 3,
             "pair": (torch.zeros(1), np.int64(4))}
    moved = to_device(batch, torch.device("cpu"))
    assert moved["tasks"][0]["group"] == "cat" and moved["inputs"] == "images" and moved["n"] == 3
    assert isinstance(moved["pair"], tuple) and torch.equal(moved["tasks"][0]["support"]["x"], torch.ones(2))


def test_no_dataset_means_no_pairs(ctx):
    empty = SetupContext.for_dataset(None)
    with pytest.raises(ValueError, match="data.name"):
        empty.pairs()
    assert empty.generated(batch_size=5).batch_size == 5
