"""Training-time augmentation: seeded and resumable, stroke ops on real vector sketches, a shared
pair flip, never at evaluation, and a documented fallback for degenerate sketches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sbirkit.data import SBIRDataset, create_dataset
from sbirkit.data.augment import Augment, ImageOps, StrokeOps, augment_image, augment_strokes, item_rng
from sbirkit.data.records import Modality, Sample
from sbirkit.data.samplers import PairBatchSampler, PairDataset
from sbirkit.data.strokes import Strokes
from sbirkit.engine import SetupContext
from sbirkit.errors import ConfigError, EmptySketchError

FULL = {"photo": {"crop": [0.7, 1.0], "flip": 0.5, "rotate": 10, "translate": 0.05, "color": 0.3},
        "sketch": {"crop": [0.7, 1.0], "flip": 0.5, "rotate": 10, "translate": 0.05},
        "strokes": {"drop": 0.2, "jitter": 0.02, "width": [0.5, 2.0]}}


def _arrow(size=32) -> Image.Image:
    """An image that is not left-right symmetric: a dark block in the left third."""
    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).rectangle([2, 8, size // 3, size - 8], fill="black")
    return img


def test_config_is_checked_with_one_line_errors():
    assert Augment.from_config(None) is None and Augment.from_config({}) is None
    aug = Augment.from_config(FULL)
    assert aug.photo.crop == (0.7, 1.0) and aug.strokes.width == (0.5, 2.0) and aug.pair_flip == "same"
    for bad, needle in [({"photo": {"flipp": 0.5}}, "data.augment.photo.flipp"),
                        ({"photo": {"flip": 2}}, "data.augment.photo.flip"),
                        ({"sketch": {"crop": [0.9, 0.5]}}, "data.augment.sketch.crop"),
                        ({"pair_flip": "mirror"}, "pair_flip"), ({"video": {}}, "data.augment.video")]:
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            Augment.from_config(bad)


def test_image_ops_are_seeded_and_keep_the_size():
    ops = ImageOps(crop=(0.6, 1.0), flip=0.5, rotate=15, translate=0.1, color=0.3)
    img = _arrow().convert("RGB")
    a = np.asarray(augment_image(img, ops, item_rng(7, 1, 2), photo=True))
    b = np.asarray(augment_image(img, ops, item_rng(7, 1, 2), photo=True))
    c = np.asarray(augment_image(img, ops, item_rng(7, 1, 3), photo=True))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    flipped = np.asarray(augment_image(img, ImageOps(flip=1.0), item_rng(0), photo=False))
    assert np.array_equal(flipped, np.asarray(img)[:, ::-1])  # a flip with probability 1 is a mirror


def test_stroke_ops_on_real_svg_and_ndjson_sketches(shared_data):
    from sbirkit.data.strokes import rasterize
    from sbirkit.data.svg import read_svg

    svg = read_svg(sorted((shared_data / "tuberlin_svg").rglob("*.svg"))[0])
    import json

    line = (shared_data / "quickdraw_raw" / "cat.ndjson").read_text().splitlines()[0]
    nd = Strokes.from_ndjson_drawing(json.loads(line)["drawing"], source="cat.ndjson:1")
    for strokes in (svg, nd):
        dropped, _ = augment_strokes(strokes, StrokeOps(drop=0.5), item_rng(1))
        assert 1 <= len(dropped) < len(strokes)  # some strokes go, one always stays
        moved, _ = augment_strokes(strokes, StrokeOps(jitter=0.02), item_rng(1))
        x0, y0, x1, y1 = strokes.bounds()
        shift = np.concatenate(moved.strokes) - np.concatenate(strokes.strokes)
        assert 0 < np.abs(shift).mean() < 0.05 * max(x1 - x0, y1 - y0)
        _, factor = augment_strokes(strokes, StrokeOps(width=(2.0, 3.0)), item_rng(1))
        thin = (np.asarray(rasterize(strokes, 64, stroke_width=2.0)) < 128).sum()
        thick = (np.asarray(rasterize(strokes, 64, stroke_width=2.0 * factor)) < 128).sum()
        assert 2.0 <= factor <= 3.0 and thick > 1.3 * thin


def test_degenerate_sketches_fall_back_or_fail_loudly():
    strokes = Strokes([np.array([[0, 0], [10, 10]], np.float32), np.array([[5, 5], [6, 30]], np.float32)])
    kept, _ = augment_strokes(strokes, StrokeOps(drop=1.0), item_rng(0))  # every stroke would go
    assert len(kept) == 1 and np.array_equal(kept.strokes[0], strokes.strokes[1])  # the longest stays
    dot, _ = augment_strokes(Strokes([np.array([[3.0, 4.0]])]), StrokeOps(drop=0.5, jitter=0.1), item_rng(0))
    assert dot.num_points == 1
    with pytest.raises(EmptySketchError):
        augment_strokes(Strokes([]), StrokeOps(drop=0.5), item_rng(0))


class Arrows(SBIRDataset):
    """Two instances of one class; every sketch and photo is the asymmetric arrow image."""

    name = "arrows"

    def __init__(self):
        samples = []
        for i in range(4):
            samples.append(Sample(f"p{i}", Modality.PHOTO, 0, "a", instance_id=f"i{i}", split="train"))
            samples.append(Sample(f"s{i}", Modality.SKETCH, 0, "a", instance_id=f"i{i}", split="train"))
        super().__init__(["a"], samples, image_size=32)

    def read(self, sample):
        return _arrow()


@pytest.mark.parametrize("pair_flip", ["same", "independent"])
def test_pair_flip_same_flips_a_sketch_and_its_photo_together(pair_flip):
    ds = Arrows()
    aug = Augment.from_config({"photo": {"flip": 0.5}, "sketch": {"flip": 0.5}, "pair_flip": pair_flip})
    sampler = PairBatchSampler(ds, "train", 4, "instance", seed=0)
    items = PairDataset.for_sampler(sampler, augment=aug)
    agree = []
    for seed in range(40):
        item = items[(0, 0, seed)]
        left = [float(item[side][:, :, :10].mean()) for side in ("sketch", "photo")]  # dark block on the left?
        agree.append((left[0] < 0.8) == (left[1] < 0.8))
    assert all(agree) if pair_flip == "same" else 5 < sum(not a for a in agree) < 35


def test_augmented_batches_are_a_function_of_seed_and_step_and_differ_between_steps():
    ds = create_dataset("synthetic", num_classes=3, photos_per_class=6, image_size=16, seed=0)
    ctx = SetupContext.for_dataset(ds)
    ctx.data = type(ctx.data)(**{**ctx.data.__dict__, "augment": FULL})
    ctx.train = type(ctx.train)(**{**ctx.train.__dict__, "batch_size": 4})
    source = ctx.pairs("instance")
    plan = next(source.batches(3))
    a, b = source.collate(plan, 3), ctx.pairs("instance").collate(plan, 3)
    assert torch.equal(a["sketch"], b["sketch"]) and torch.equal(a["photo"], b["photo"])  # resumable
    other = source.collate(plan, 4)  # the same pairs a step later: other draws
    assert not torch.equal(a["photo"], other["photo"])
    plain = source.collate(plan)  # no step (an evaluation-style read): no augmentation
    expected = torch.stack([PairDataset.for_sampler(source.sampler)[p]["photo"] for p in plan])
    assert torch.equal(plain["photo"], expected)


def _tiny_augmented_config(*extra):
    from sbirkit.engine.config import apply_overrides, load_preset

    return apply_overrides(load_preset("triplet-synthetic"), [
        "data.options={num_classes: 4, photos_per_class: 8, image_size: 16, seed: 0}", "data.cache_images=true",
        f"data.augment={FULL}", "model.embed_dim=8", "method.classes_per_batch=4", "method.mining=random",
        "train.steps=8", "train.batch_size=8", "train.warmup_steps=0", "train.eval_every=4",
        "train.checkpoint_every=4", "train.progress=false", *extra])


def test_an_interrupted_augmented_run_resumes_to_the_same_weights(tmp_path, monkeypatch, one_torch_thread):
    from sbirkit.engine import Trainer

    config = _tiny_augmented_config()
    Trainer(config, tmp_path / "whole").fit()
    build, calls = Trainer._build, {"n": 0}

    def build_then_fail_at_step_6(self, *args, **kwargs):
        build(self, *args, **kwargs)
        step = self.method.training_step

        def training_step(batch, ctx=None):
            calls["n"] += 1
            if calls["n"] == 6:
                raise KeyboardInterrupt  # killed after the step-4 checkpoint
            return step(batch, ctx)

        self.method.training_step = training_step

    monkeypatch.setattr(Trainer, "_build", build_then_fail_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "split").fit()
    monkeypatch.setattr(Trainer, "_build", build)
    Trainer(config, tmp_path / "split").fit()
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_augmentation_is_applied_in_training_only(tmp_path, monkeypatch, one_torch_thread):
    from sbirkit.data import augment as augment_module
    from sbirkit.engine import Trainer, embedding, evaluate_run

    seen = {"train": 0, "eval": 0}
    phase = {"now": "train"}
    original_load = augment_module.load_augmented

    def counting(*args, **kwargs):
        seen[phase["now"]] += 1
        return original_load(*args, **kwargs)

    monkeypatch.setattr(augment_module, "load_augmented", counting)
    original_embed = embedding.embed_samples  # what the evaluator calls

    def embed_in_eval_phase(*args, **kwargs):
        before, phase["now"] = phase["now"], "eval"
        try:
            return original_embed(*args, **kwargs)
        finally:
            phase["now"] = before

    monkeypatch.setattr(embedding, "embed_samples", embed_in_eval_phase)
    Trainer(_tiny_augmented_config(), tmp_path / "run").fit()
    evaluate_run(tmp_path / "run", device="cpu")
    assert seen["train"] == 8 * 8 * 2 and seen["eval"] == 0  # every training image, no evaluation image
