"""Datasets as a run builds them: held-out validation instances, and the QMUL-V1 preset on real data."""

from __future__ import annotations

import pickle

import pytest
import tiny_pairs  # noqa: F401  (registers the tiny_pairs dataset)
from runs_helper import tiny_config

from sbirkit.data.image_cache import cached_images
from sbirkit.data.samplers import PairBatchSampler
from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.engine.inference import build_dataset


def test_val_fraction_holds_out_whole_train_instances():
    data = tiny_config("data.options={num_classes: 4, photos_per_class: 10, splits: [8, 0, 2], image_size: 16}",
                       "data.val_fraction=0.3")["data"]
    ds = build_dataset(data)
    before = build_dataset({**data, "val_fraction": 0.0})
    assert not before.select(split="val")
    val = ds.select(split="val")
    assert 0 < len(ds.photos("val")) < 32 and len(ds.sketches("val")) == len(ds.photos("val"))
    # a sketch goes with its photo; test is untouched; same choice every time
    assert {s.instance_id for s in val if s.is_sketch} == {p.instance_id for p in ds.photos("val")}
    assert [s.key for s in ds.select(split="test")] == [s.key for s in before.select(split="test")]
    assert [s.key for s in build_dataset(data).select(split="val")] == [s.key for s in val]
    with pytest.raises(ValueError, match="already has a 'val' split"):
        build_dataset(tiny_config("data.val_fraction=0.3")["data"])


def test_image_cache_returns_the_same_pixels():
    ds = build_dataset(tiny_config()["data"])
    cached = cached_images(ds)
    s = ds.sketches("train")[0]
    first = cached.load_image(s)
    assert first.tobytes() == ds.load_image(s).tobytes() == cached.load_image(s).tobytes()
    assert cached.load_image(s) is not cached.load_image(s)  # callers get their own copy
    assert type(cached) is type(ds) and cached.pairs("val") == ds.pairs("val")
    assert len(cached.load_image) == 1
    clone = pickle.loads(pickle.dumps(cached))  # DataLoader workers under 'spawn'
    assert clone.load_image(s).tobytes() == first.tobytes() and len(clone.load_image) == 1


def test_qmul_v1_preset_on_real_data(shared_data):
    cfg = apply_overrides(load_preset("triplet_sn-qmul_v1"), [f"data.root={shared_data / 'qmul_v1'}"])
    ds = build_dataset(cfg["data"])
    train, val, test = (len(ds.pairs(s)) for s in ("train", "val", "test"))
    assert train + val == 304 and test == 115  # shoes: 304 train / 115 test pairs
    assert 15 <= val <= 50  # ~10% of the training pairs, for model selection
    sampler = PairBatchSampler(ds, "train", cfg["train"]["batch_size"], mode="instance", seed=0)
    assert len(sampler) == train // 32 and sampler.skipped == 0


def test_val_fraction_holds_out_part_of_an_unsplit_dataset():
    from sbirkit.data import create_dataset
    from sbirkit.data.splits import hold_out_fraction

    ds = create_dataset("synthetic", num_classes=3, photos_per_class=20, image_size=16)
    unsplit = ds.with_split(lambda s: None)
    held = hold_out_fraction(unsplit, 0.25, "train", "val")
    train, val = held.select(split="train"), held.select(split="val")
    assert len(train) + len(val) == len(ds.samples) and 0.1 < len(val) / len(ds.samples) < 0.4
    assert {s.instance_id for s in train}.isdisjoint({s.instance_id for s in val})  # a sketch goes with its photo
