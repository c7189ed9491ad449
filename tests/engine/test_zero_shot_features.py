"""Cached backbone features: the store extracts each sample once, its rows equal the backbone's
output, heads on cached features embed exactly as the full encoder on images, and a cached-feature
run (any method) trains the heads while the backbones keep their weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sbirkit.data import create_dataset
from sbirkit.engine import Trainer, evaluate_run, feature_cache, inference, load_run
from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.methods import create_method
from sbirkit.models import create_encoder

DATA = {"name": "synthetic", "root": None,
        "options": {"num_classes": 4, "photos_per_class": 6, "image_size": 16, "seed": 0}}


@pytest.fixture()
def setting():
    torch.manual_seed(0)
    ds = create_dataset("synthetic", **DATA["options"])
    encoder = create_encoder("tiny_cnn", embed_dim=8, shared=False).eval()
    return ds, encoder


def test_store_extracts_once_and_rows_are_backbone_features(tmp_path, setting):
    ds, encoder = setting
    branch = encoder.branch("photo")
    store = feature_cache.FeatureStore(tmp_path, DATA)
    photos = ds.photos()
    first = store.features(branch, ds, photos[:10])
    assert isinstance(first, np.memmap) and first.shape == (10, 64) and store.extracted == 10
    with torch.no_grad():
        direct = branch.features(torch.stack([torch.from_numpy(np.asarray(ds.load_image(p), np.float32) / 255)
                                              .permute(2, 0, 1) for p in photos[:10]]))
    np.testing.assert_allclose(first, direct.numpy(), rtol=1e-5, atol=1e-6)
    again = feature_cache.FeatureStore(tmp_path, DATA).features(branch, ds, list(reversed(photos[:10])))
    np.testing.assert_array_equal(again, np.asarray(first)[::-1])  # from disk, in the order asked
    more = store.features(branch, ds, photos)  # only the 14 new ones are extracted
    assert store.extracted == 10 + 14 and len(more) == len(photos)
    np.testing.assert_array_equal(np.asarray(more)[:10], np.asarray(first))


def test_entries_are_keyed_by_what_decides_the_features(tmp_path, setting):
    ds, encoder = setting
    store = feature_cache.FeatureStore(tmp_path, DATA)
    photo, sketch = encoder.branch("photo"), encoder.branch("sketch")
    base = store.entry(ds, "photo", photo)
    assert store.entry(ds, "sketch", sketch) != base  # modality (and the other branch's weights)
    assert feature_cache.FeatureStore(tmp_path, {**DATA, "options": {**DATA["options"], "seed": 1}}).entry(
        ds, "photo", photo) != base
    with torch.no_grad():
        next(photo.backbone.parameters()).add_(1.0)
    assert store.entry(ds, "photo", photo) != base  # other weights, other entry


def test_heads_on_cached_features_embed_like_the_encoder_on_images(tmp_path, setting):
    ds, encoder = setting
    embed = feature_cache.FeatureStore(tmp_path, DATA).embedder(encoder, ds)
    for samples in (ds.sketches(), ds.photos()):
        cached, labels, _ = embed(samples)
        direct, direct_labels, _ = inference.embed_samples(encoder, ds, samples)
        np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-6)
        assert np.array_equal(labels, direct_labels)


def test_encode_features_is_the_head_of_the_backbone_features():
    # the replacement of the features_as_inputs switch: cached features go through the head only
    torch.manual_seed(0)
    encoder = create_encoder("tiny_cnn", embed_dim=8, shared=False).eval()
    x = torch.rand(2, 3, 16, 16)
    for modality in ("sketch", "photo"):
        features = encoder.branch(modality).features(x)
        assert torch.equal(encoder.encode_features(features, modality), encoder.encode(x, modality))
    with pytest.raises(RuntimeError):
        encoder.encode(torch.randn(2, 64), "sketch")  # a (2, 64) matrix is no image for the backbone


@pytest.mark.parametrize("preset", ["triplet-synthetic-zs", "zscmr-synthetic"])
def test_cached_run_trains_heads_and_keeps_backbones(tmp_path, preset):
    extra = ["method.semantic=onehot"] if preset.startswith("zscmr") else []
    config = apply_overrides(load_preset(preset), [
        "data.options={num_classes: 5, photos_per_class: 8, image_size: 16, seed: 0}", "data.zero_shot=random:1:0",
        "data.zero_shot_val_classes=0", "model.backbone=tiny_cnn", "model.pretrained=false", "model.embed_dim=8", "model.hidden=null",
        *extra, "method.classes_per_batch=null", "train.steps=5", "train.batch_size=8", "train.warmup_steps=0",
        "train.eval_every=5", "train.progress=false", "eval.binary_bits=0", "train.cached_features=true"])
    torch.manual_seed(0)
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    method, _ = load_run(tmp_path / "run", "last")
    torch.manual_seed(0)  # the trainer seeds with config seed 0 before building: same initial weights
    fresh = create_method(config["method"]["name"], config).state_dict()
    trained = method.state_dict()
    backbone = [k for k in trained if ".backbone." in k and "num_batches" not in k]
    head = [k for k in trained if ".head." in k]
    assert backbone and head
    assert all(torch.equal(trained[k], fresh[k]) for k in backbone)  # frozen, BatchNorm statistics too
    assert any(not torch.equal(trained[k], fresh[k]) for k in head)
    feats = list((tmp_path / "run" / "features").glob("*/features.npy"))
    assert len(feats) == 2  # one entry per modality
    report = evaluate_run(tmp_path / "run", device="cpu")  # embeds unseen classes from the cache
    assert report["protocol"]["setting"] == "zsl" and set(report["results"]) == {
        "sketch2photo", "photo2sketch", "sketch2sketch", "photo2photo"}


def test_a_cold_and_a_warm_cache_train_the_same_weights(tmp_path):
    """Extraction must not touch the global RNG, or a run would depend on the cache's state."""
    config = apply_overrides(load_preset("zscmr-synthetic"), [
        "data.options={num_classes: 5, photos_per_class: 8, image_size: 16, seed: 0}", "data.zero_shot=random:1:0",
        "data.zero_shot_val_classes=1", "model.backbone=tiny_cnn", "model.pretrained=false", "model.embed_dim=8",
        "method.semantic=onehot", "method.classes_per_batch=null", "train.steps=6", "train.batch_size=8",
        "train.warmup_steps=0", "train.eval_every=3", "train.progress=false", "eval.binary_bits=0",
        f"train.feature_cache={tmp_path / 'cache'}"])
    cold = Trainer(config, tmp_path / "cold")
    cold.fit()
    warm = Trainer(config, tmp_path / "warm")
    warm.fit()
    assert cold.features.extracted > 0 and warm.features.extracted == 0
    a, b = cold.method.state_dict(), warm.method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_interrupted_cached_zscmr_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    config = apply_overrides(load_preset("zscmr-synthetic"), [
        "data.options={num_classes: 5, photos_per_class: 8, image_size: 16, seed: 0}", "data.zero_shot=random:1:0",
        "data.zero_shot_val_classes=1", "model.backbone=tiny_cnn", "model.pretrained=false", "model.embed_dim=8",
        "method.semantic=onehot", "method.mining=random", "method.classes_per_batch=null", "train.steps=8",
        "train.batch_size=8", "train.warmup_steps=0", "train.eval_every=4", "train.checkpoint_every=4",
        "train.progress=false", "eval.binary_bits=0"])
    Trainer(config, tmp_path / "whole").fit()
    build = Trainer._build
    calls = {"n": 0}

    def build_then_fail_at_step_6(self):
        build(self)
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
    meta = json.loads((tmp_path / "split" / "meta.json").read_text())
    assert [r["step"] for r in meta["resumed"]] == [4]  # resumed from last.pt, not started over
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    assert set(whole) == set(split) and all(torch.equal(whole[k], split[k]) for k in whole)
