"""``train.head_init: pca``: heads start at the principal directions of the training features only,
so before the first step the embedding ranks like the centred, PCA-reduced features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbirkit.engine import Trainer, feature_cache
from sbirkit.engine.config import ConfigError, apply_overrides, load_preset
from sbirkit.engine.head_init import init_heads, pca_init_heads, principal_directions
from sbirkit.methods import create_method
from sbirkit.models import create_encoder


def test_principal_directions_match_the_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.1]) + 7.0
    x = x @ np.linalg.qr(rng.normal(size=(6, 6)))[0]  # rotate, so the axes are not the answer
    v, mean = principal_directions(x, 3)
    np.testing.assert_allclose(mean, x.mean(0))
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    reference = vectors[:, ::-1][:, :3].T  # by decreasing variance
    np.testing.assert_allclose(np.abs((v * reference).sum(1)), 1.0, atol=1e-8)  # same lines
    np.testing.assert_allclose(v @ v.T, np.eye(3), atol=1e-10)
    assert (v[np.arange(3), np.abs(v).argmax(1)] > 0).all()  # the sign convention
    with pytest.raises(ValueError, match="k: expected 1..6"):
        principal_directions(x, 7)


def test_pca_heads_embed_the_centred_projection():
    torch.manual_seed(0)
    encoder = create_encoder("tiny_cnn", embed_dim=4, shared=False).eval()
    rng = np.random.default_rng(1)
    sketches, photos = rng.normal(size=(30, 64)) + 2.0, rng.normal(size=(20, 64)) - 1.0
    record = pca_init_heads(encoder, sketches, photos)
    # separately built tiny_cnn branches hold different random weights: one PCA per modality
    assert record == {"method": "pca", "pooled_modalities": False, "components": 4,
                      "fitted_on": {"sketches": 30, "photos": 20}}
    for modality, feats in (("sketch", sketches), ("photo", photos)):
        v, mean = principal_directions(feats, 4)
        with torch.no_grad():
            out = encoder.branch(modality).head(torch.tensor(feats, dtype=torch.float32))
        expected = F.normalize(torch.tensor((feats - mean) @ v.T, dtype=torch.float32), dim=1)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_branches_with_the_same_backbone_weights_share_one_pca():
    torch.manual_seed(0)
    encoder = create_encoder("tiny_cnn", embed_dim=3, shared=False)
    encoder.branch("photo").backbone.load_state_dict(encoder.branch("sketch").backbone.state_dict())
    rng = np.random.default_rng(2)
    sketches, photos = rng.normal(size=(10, 64)), rng.normal(size=(12, 64)) * 3
    assert pca_init_heads(encoder, sketches, photos)["pooled_modalities"]
    v, mean = principal_directions(np.concatenate([sketches, photos]), 3)
    for modality in ("sketch", "photo"):
        layer = encoder.branch(modality).head.proj[-1]
        np.testing.assert_allclose(layer.weight.detach().numpy(), v, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.bias.detach().numpy(), -v @ mean, rtol=1e-5, atol=1e-5)


def test_refusals():
    encoder = create_encoder("tiny_cnn", embed_dim=3, shared=True, hidden=16)
    feats = np.random.default_rng(0).normal(size=(10, 64))
    with pytest.raises(ConfigError, match="model.hidden: null"):
        pca_init_heads(encoder, feats, feats)

    def never(modality):
        raise AssertionError("features extracted for a head that cannot take them")

    with pytest.raises(ConfigError, match="model.hidden: null"):
        init_heads("pca", encoder, never)
    with pytest.raises(ConfigError, match="head_init: expected one of"):
        init_heads("xavier", encoder, never)
    assert init_heads("default", encoder, never) is None
    wide = create_encoder("tiny_cnn", embed_dim=32, shared=False)
    with pytest.raises(ConfigError, match="embed_dim=32 principal directions need at least 32 training samples"):
        pca_init_heads(wide, feats, feats)  # 10 samples per side, separate backbones


def test_a_pca_run_fits_on_seen_training_samples_only(tmp_path, monkeypatch):
    config = apply_overrides(load_preset("triplet-synthetic-zs"), [
        "data.options={num_classes: 6, photos_per_class: 8, image_size: 16, seed: 0}", "data.zero_shot=random:2:0",
        "data.zero_shot_val_classes=1", "model.backbone=tiny_cnn", "model.pretrained=false", "model.embed_dim=8",
        "method.classes_per_batch=null", "train.steps=2", "train.batch_size=8", "train.warmup_steps=0",
        "train.eval_every=2", "train.progress=false", "eval.binary_bits=0", "train.head_init=pca"])
    trainer = Trainer(config, tmp_path / "run")
    seen = []
    fit = pca_init_heads

    def spy(encoder, sketches, photos):
        seen.append((len(sketches), len(photos)))
        return fit(encoder, sketches, photos)

    monkeypatch.setattr("sbirkit.engine.head_init.pca_init_heads", spy)
    trainer.fit()
    training = trainer.dataset.select(split=config["data"]["train_split"])
    classes = {s.class_index for s in training}
    # 6 classes - 2 unseen - 1 held out for model selection = 3 training classes, 6 train photos each
    assert len(classes) == 3 and seen == [(18, 18)] == [(len(trainer.pairs.sketches), len(trainer.pairs.photos))]
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["head_init"]["fitted_on"] == {"sketches": 18, "photos": 18}
    assert set(trainer.class_split.unseen_indices(trainer.dataset)).isdisjoint(classes)


def test_end_to_end_pca_fits_the_initial_backbone_features(tmp_path, monkeypatch):
    config = apply_overrides(load_preset("triplet-synthetic-zs"), [
        "data.options={num_classes: 4, photos_per_class: 4, image_size: 16, seed: 0}", "data.zero_shot=null",
        "data.zero_shot_val_classes=0", "model.backbone=tiny_cnn", "model.pretrained=false", "model.embed_dim=8",
        "model.shared=true", "method.classes_per_batch=null", "train.cached_features=false", "train.steps=1",
        "train.batch_size=4", "train.lr=0", "train.progress=false", "train.head_init=pca", "data.val_split=null"])
    fitted = []
    fit = pca_init_heads

    def spy(encoder, sketches, photos):
        fitted.append(np.concatenate([sketches, photos]))
        return fit(encoder, sketches, photos)

    monkeypatch.setattr("sbirkit.engine.head_init.pca_init_heads", spy)
    trainer = Trainer(config, tmp_path / "run")
    with pytest.warns(UserWarning, match="no model selection"):
        trainer.fit()  # lr 0: the heads stay where the initialisation put them
    torch.manual_seed(0)  # the trainer seeds with config seed 0 before building: the same initial backbone
    fresh = create_method("triplet", config).encoder.branch("sketch")
    expected = np.concatenate([feature_cache.extract_features(fresh, trainer.dataset, samples)
                               for samples in (trainer.sampler.sketches, trainer.sampler.photos)])
    np.testing.assert_allclose(fitted[0], expected, rtol=1e-5, atol=1e-6)
    v, mean = principal_directions(expected, 8)  # shared branch: one pooled PCA
    layer = trainer.method.encoder.branch("sketch").head.proj[-1]
    np.testing.assert_allclose(layer.weight.detach().numpy(), v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.bias.detach().numpy(), -v @ mean, rtol=1e-4, atol=1e-4)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["head_init"]["pooled_modalities"] and meta["head_init"]["fitted_on"]["sketches"] == len(trainer.sampler.sketches) > 0


def test_feature_pairs_expose_the_training_features(tmp_path):
    from sbirkit.data import create_dataset
    from sbirkit.data.samplers import PairBatchSampler

    torch.manual_seed(0)
    ds = create_dataset("synthetic", num_classes=3, photos_per_class=4, image_size=16, seed=0)
    encoder = create_encoder("tiny_cnn", embed_dim=8, shared=False)
    store = feature_cache.FeatureStore(tmp_path, {"name": "synthetic", "options": {"num_classes": 3}})
    from sbirkit.engine.sources import PairSource

    pairs = PairSource(PairBatchSampler(ds, "train", 4, "class", seed=0)).with_features(store, encoder).items
    assert pairs.features_of("sketch").shape == (len(pairs.sketches), 64)
    assert pairs.features_of("photo").shape == (len(pairs.photos), 64)
