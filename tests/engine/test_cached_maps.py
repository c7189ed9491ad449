"""Partial fine-tuning on cached maps (train.trainable_stages) and cached augmented views
(train.cache_views): what trains, what stays frozen, that the cache embeds like the images do, and
that an interrupted run resumes to the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sbirkit.engine import ConfigError, Trainer, evaluate_run, inference, load_run
from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.engine.runlog import read_metrics

AUG = "{photo: {flip: 0.5, crop: [0.8, 1.0]}, sketch: {flip: 0.5, rotate: 5}, pair_flip: same}"


def _config(*extra):
    return apply_overrides(load_preset("triplet_sn-synthetic"), [
        "data.options={num_classes: 3, photos_per_class: 8, image_size: 32, seed: 0}", "data.cache_images=true",
        "model.backbone=tiny_cnn", "model.pretrained=false", "model.embed_dim=8", "model.shared=false",
        "method.classes_per_batch=null", "train.cached_features=true", "train.trainable_stages=1",
        "train.steps=8", "train.batch_size=8", "train.warmup_steps=0", "train.eval_every=4",
        "train.checkpoint_every=4", "train.progress=false", "train.lr=0.01", *extra])


def test_the_last_stages_train_on_cached_maps_and_the_early_ones_stay(tmp_path):
    config = _config("model.attention=true")
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    assert trainer.features.stage == 3 and trainer.source.feature_stage == 3  # tiny_cnn: 4 stages, 1 trains
    ds = trainer.dataset
    once = sum(len(f(split)) for f in (ds.sketches, ds.photos) for split in ("train", "val"))
    assert trainer.features.extracted == once  # the trained later stages do not invalidate the cached maps
    maps = trainer.source.items.features_of("sketch")
    assert maps.ndim == 4 and maps.shape[1:] == (32, 4, 4)  # the map after three stride-2 stages of 32 px
    torch.manual_seed(0)
    from sbirkit.methods import create_method

    fresh, trained = create_method("triplet_sn", trainer.config).state_dict(), trainer.method.state_dict()
    for key in trained:
        if ".backbone.features." in key and "num_batches" not in key:
            layer = int(key.split(".backbone.features.")[1].split(".")[0])
            same = torch.equal(trained[key], fresh[key])
            assert same if layer < 9 else True, key  # stages 0-2 (layers 0-8) frozen
    moved = [k for k in trained if ".backbone.features.9." in k and k.endswith("weight")
             and not torch.equal(trained[k], fresh[k])]
    assert moved  # the last stage trained
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained if ".attention." in k)
    # the cache embeds the test split exactly as the images do through the whole model
    method, _ = load_run(tmp_path / "run")
    embed = trainer.features.embedder(method.encoder, trainer.dataset)
    for samples in (trainer.dataset.sketches("test"), trainer.dataset.photos("test")):
        cached = embed(samples)[0]
        direct = inference.embed_samples(method.encoder, trainer.dataset, samples)[0]
        np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)
    report = evaluate_run(tmp_path / "run", device="cpu")
    assert 0 <= report["results"]["sketch2photo"]["metrics"]["acc@1"] <= 1


def test_augmented_views_are_extracted_once_and_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    config = _config(f"data.augment={AUG}", "train.cache_views=4", "train.trainable_stages=0",
                     "train.feature_cache=" + str(tmp_path / "cache"))
    whole = Trainer(config, tmp_path / "whole")
    whole.fit()
    pairs = whole.source.items
    n_s, n_p = len(pairs.sketches), len(pairs.photos)
    assert pairs._features["sketch"].shape[:2] == (n_s, 4) and pairs._features["photo"].shape[:2] == (n_p, 4)
    n_val = sum(len(f("val")) for f in (whole.dataset.sketches, whole.dataset.photos))
    assert whole.features.extracted == 4 * (n_s + n_p) + n_val  # the training views + the val split's view 0
    views = pairs._features["photo"]
    assert not np.allclose(views[:, 0], views[:, 1])  # augmented views differ from the plain one
    build, calls = Trainer._build, {"n": 0}

    def build_then_fail_at_step_6(self, *args, **kwargs):
        build(self, *args, **kwargs)
        step = self.method.training_step

        def training_step(batch, ctx=None):
            calls["n"] += 1
            if calls["n"] == 6:
                raise KeyboardInterrupt
            return step(batch, ctx)

        self.method.training_step = training_step

    monkeypatch.setattr(Trainer, "_build", build_then_fail_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "split").fit()
    monkeypatch.setattr(Trainer, "_build", build)
    again = Trainer(config, tmp_path / "split")
    again.fit()
    assert again.features.extracted == 0  # the shared cache already held every view
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "split" / "meta.json").read_text())["resumed"][0]["step"] == 4


@pytest.mark.parametrize("extra, needle", [
    ([f"data.augment={AUG}"], "train.cache_views"),
    (["train.cache_views=3"], "expected data.augment"),
    (["train.trainable_stages=4"], "expected 0..3"),
    (["model.backbone=doodlenet", "train.trainable_stages=1"], "not split into stages"),
])
def test_what_the_cache_cannot_serve_is_refused_before_extraction(extra, needle, tmp_path):
    with pytest.raises(ConfigError, match=needle):
        Trainer(_config(*extra), tmp_path / "run").fit()
    assert not (tmp_path / "run" / "features").exists()


@pytest.mark.parametrize("trainable", [0, 1])
def test_cut_backbone_with_grid_pooling_trains_on_the_cache_and_embeds_like_the_images(tmp_path, trainable):
    config = _config("model.backbone_stages=3", "model.pool=grid", "model.pool_grid=2",
                     f"train.trainable_stages={trainable}")
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    assert trainer.features.stage == (2 if trainable else None)  # stages counted within the cut backbone
    assert trainer.method.encoder.branch("sketch").head.in_dim == 32 * 4
    method, _ = load_run(tmp_path / "run")
    embed = trainer.features.embedder(method.encoder, trainer.dataset)
    samples = trainer.dataset.photos("test")
    np.testing.assert_allclose(embed(samples)[0], inference.embed_samples(method.encoder, trainer.dataset, samples)[0],
                               rtol=1e-5, atol=1e-5)


def test_pooled_feature_cache_is_keyed_by_the_pooling(tmp_path):
    from sbirkit.engine.feature_cache import branch_identity
    from sbirkit.models import create_encoder

    ids = [branch_identity(create_encoder("tiny_cnn", pool=p, pool_grid=g).branch("sketch"))
           for p, g in (("avg", 2), ("max", 2), ("gem", 2), ("grid", 2), ("grid", 3))]
    assert len({json.dumps(i, sort_keys=True) for i in ids}) == len(ids)
    assert "pool" not in ids[0]  # average pooling keeps the key it always had (existing caches stay valid)


def test_bad_pooling_options_are_config_errors(tmp_path):
    for bad in ("model.pool=median", "model.pool_grid=0", "model.backbone_stages=0"):
        with pytest.raises(ConfigError):
            Trainer(_config(bad), tmp_path / "run").check()


def test_feature_cache_key_resolves_the_data_root(tmp_path, monkeypatch):
    from sbirkit.engine.feature_cache import data_identity

    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "b" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    relative, absolute = data_identity({"name": "x", "root": "data"}), data_identity({"name": "x", "root": str(tmp_path / "a" / "data")})
    assert relative == absolute  # one folder, two spellings: one cache
    monkeypatch.chdir(tmp_path / "b")
    assert data_identity({"name": "x", "root": "data"}) != relative  # one spelling, two folders: two caches
    assert data_identity({"name": "x", "root": None})["root"] is None


def test_a_classifier_trains_on_cached_augmented_views(tmp_path):
    """A sample source (the classifier method) reads cached augmented views too: each item of a
    step picks one of its views from its seed, the same on every run."""
    config = apply_overrides(load_preset("classifier-synthetic-photo"), [
        "data.options={num_classes: 3, photos_per_class: 8, image_size: 32, seed: 0}", "model.backbone=tiny_cnn",
        "model.embed_dim=8", "train.cached_features=true", "train.trainable_stages=1", "train.cache_views=3",
        "data.augment={photo: {flip: 0.5, crop: [0.7, 1.0]}}", "train.steps=4", "train.batch_size=8",
        "train.warmup_steps=0", "train.eval_every=4", "train.progress=false",
        "train.feature_cache=" + str(tmp_path / "cache")])
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    source, items = trainer.source, trainer.source.items
    assert items.views == 3 and items._features.shape[:2] == (len(source.sample_list), 3)
    np.testing.assert_array_equal(source.cached_features("photo"), items._features[:, 0])
    plan = next(iter(source.batches(2)))
    batch = source.collate(plan, step=2)
    assert batch["feature_stage"] == 3 and _same_batch(batch, source.collate(plan, step=2))
    picked = [next(v for v in range(3) if np.array_equal(batch["image"][j].numpy(), items._features[i][v]))
              for j, i in enumerate(plan)]
    assert len(set(picked)) > 1  # not always the plain view
    val = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("split") == "val"]
    assert val and 0 <= val[-1]["classifier/accuracy"] <= 1


def _same_batch(a, b):
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)
