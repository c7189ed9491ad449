"""The classifier method (a data-free SBIR teacher) and the modality discriminator, through the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sbirkit.engine import Trainer, load_run
from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.engine.runlog import read_metrics
from sbirkit.methods.classifier import Classifier, decode_names, encode_names

TINY = ["data.options={num_classes: 4, photos_per_class: 10, image_size: 32, seed: 0}",
        "model.backbone=tiny_cnn", "model.embed_dim=16", "train.steps=30", "train.batch_size=8",
        "train.eval_every=15", "train.log_every=5", "train.checkpoint_every=15", "train.progress=false",
        "train.warmup_steps=0", "eval.batch_size=64"]


def _config(*extra):
    return apply_overrides(load_preset("classifier-synthetic-photo"), [*TINY, *extra])


def test_names_round_trip_through_a_buffer():
    names = ["cat", "teddy bear", "ümlaut"]
    assert decode_names(encode_names(names)) == names
    assert decode_names(torch.zeros(0, dtype=torch.uint8)) == []


def test_a_photo_classifier_trains_only_its_branch_saves_its_classes_and_reloads(tmp_path):
    trainer = Trainer(_config("model.shared=false"), tmp_path / "run")
    trainer.fit()
    method = trainer.method
    assert method.class_names == ["house", "tree", "fish", "star"]
    assert method.classifier.out_features == 4
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    vals = [r for r in rows if r.get("split") == "val"]
    assert [r["step"] for r in vals] == [15, 30]
    assert all(0.0 <= r["classifier/accuracy"] <= 1.0 for r in vals)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["value"] == pytest.approx(max(r["classifier/accuracy"] for r in vals))
    assert decode_names(best["model"]["class_names_utf8"]) == method.class_names
    # the sketch branch of a two-branch encoder is not trained
    fresh = Trainer(_config("model.shared=false"), tmp_path / "fresh")
    torch.manual_seed(0)
    from sbirkit.methods import create_method

    initial = create_method("classifier", fresh.config).state_dict()
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    sketch = [k for k in initial if k.startswith("encoder.sketch_encoder.") and initial[k].is_floating_point()]
    photo = [k for k in initial if k.startswith("encoder.photo_encoder.") and initial[k].is_floating_point()]
    assert sketch and all(torch.equal(initial[k], last[k]) for k in sketch)
    assert any(not torch.equal(initial[k], last[k]) for k in photo)
    # load_run rebuilds the class layer from the checkpoint and predicts the same
    loaded, _ = load_run(tmp_path / "run", "last")
    assert isinstance(loaded, Classifier) and loaded.class_names == method.class_names
    x = torch.rand(5, 3, 32, 32)
    method.eval()
    assert torch.allclose(loaded(x), method(x), atol=1e-6)
    assert load_run(tmp_path / "run")[0].class_names == method.class_names  # saved in the checkpoint


def _image_folder(root, counts):
    rng = np.random.default_rng(0)
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                colour = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}[cls]
                arr = np.clip(np.array(colour)[None, None] + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")


def test_a_classifier_on_a_one_modality_dataset_selects_on_its_own_accuracy(tmp_path):
    # 'blue' has no training photo: no output for it, and its validation photos are not counted
    _image_folder(tmp_path / "data", {"train": {"red": 12, "green": 12}, "val": {"red": 4, "green": 4, "blue": 4}})
    config = apply_overrides(load_preset("classifier-synthetic-photo"), [
        "data.name=image-folder", f"data.root={tmp_path / 'data'}", "data.options={image_size: 16}",
        "data.cache_images=false", "data.test_split=val", "model.backbone=tiny_cnn",
        "model.embed_dim=8", "train.steps=40", "train.batch_size=8", "train.eval_every=20", "train.log_every=10",
        "train.progress=false", "train.warmup_steps=0", "train.lr=0.01"])
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    assert trainer.val_kind == "method"  # no sketches: the method's own validation
    assert trainer.method.class_names == ["green", "red"]
    vals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("split") == "method"]
    assert [r["step"] for r in vals] == [20, 40]
    assert vals[-1]["classifier/accuracy"] == pytest.approx(1.0)  # red vs green is easy; blue is not counted


def test_the_modality_discriminator_tells_photos_from_sketches(tmp_path):
    config = apply_overrides(load_preset("modality_discriminator-synthetic"), [
        "data.options={classes: [lightning, mushroom, apple], photos_per_class: 10, image_size: 32, seed: 0}",
        "train.steps=60", "train.batch_size=8", "train.eval_every=60", "train.log_every=10", "train.progress=false",
        "train.warmup_steps=0"])
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    vals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("split") == "val"]
    assert vals[-1]["discriminator/accuracy"] >= 0.9
    method, _ = load_run(tmp_path / "run")
    ds = trainer.dataset
    photo = torch.stack([torch.from_numpy(np.asarray(ds.load_image(s, 32), np.float32) / 255).permute(2, 0, 1)
                         for s in ds.photos("test")[:4]])
    sketch = torch.stack([torch.from_numpy(np.asarray(ds.load_image(s, 32), np.float32) / 255).permute(2, 0, 1)
                          for s in ds.sketches("test")[:4]])
    with torch.no_grad():
        assert (method(photo) > 0).float().mean() >= 0.75 and (method(sketch) < 0).float().mean() >= 0.75
