"""Registry-wide checks (the timm pattern): every registered method and every registered backbone
trains on tiny data through the one trainer: finite losses, gradients reach every parameter an
optimiser holds, and the run folder round-trips through load_run to the same embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sbirkit.engine import StepContext, Trainer, inference, load_run
from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.engine.runlog import read_metrics
from sbirkit.engine.sources import step_loader
from sbirkit.methods import list_methods
from sbirkit.models import list_backbones

TINY = ["data.name=synthetic", "data.options={num_classes: 4, photos_per_class: 6, image_size: 32, seed: 0}",
        "model.backbone=tiny_cnn", "model.embed_dim=8", "model.shared=false", "model.pretrained=false",
        "train.steps=3", "train.batch_size=8", "train.log_every=1", "train.eval_every=3", "train.progress=false",
        "train.warmup_steps=0", "eval.batch_size=64"]
# what a method needs beyond the tiny defaults (a new method with special needs adds its line here)
METHOD_OVERRIDES = {
    "zscmr": ["method.semantic=onehot", "method.terms=[cmd,triplet,rcs,class]"],
    "classifier": ["eval.select=classifier/accuracy"],
    "modality_discriminator": ["eval.select=discriminator/accuracy"],
    "crossx_dfl": [f"method.{slot}={{preset: {preset}, overrides: [train.steps=2, train.batch_size=8, train.eval_every=2, "
                   f"train.progress=false, 'data.options={{{classes}, photos_per_class: 6, image_size: 32, seed: 0}}']}}"
                   for slot, preset, classes in (("photo_teacher", "classifier-synthetic-photo", "num_classes: 4"),
                                                 ("sketch_teacher", "classifier-synthetic-sketch", "num_classes: 4"),
                                                 ("discriminator", "modality_discriminator-synthetic",
                                                  "classes: [kite, bottle]"))]
                  + ["method.estimator_batch=8", "method.estimator_steps=1", "method.pool_size=16", "method.queue_size=8",
                     "method.validation_size=8"],
    "adaptive_fg": ["model.shared=true", "method.k_support=1", "method.k_query=1", "method.semantic=onehot",
                    "eval.select=sketch2photo/acc@1"],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def _check_trains_and_round_trips(config, run_dir):
    trainer = Trainer(config, run_dir)
    torch.manual_seed(0)
    trainer._build()
    batch = next(iter(step_loader(trainer.source, 0, 1)))
    ctx = StepContext(0, trainer.device, trainer.optimizers)
    trainer.method.train_mode(trainer.train_opts)
    out = trainer.method.training_step(batch, ctx)
    if not trainer.method.manual_optimization:
        out["loss"].backward()
    params = [p for o in trainer.optimizers.values() for p in o.parameters()]
    if getattr(trainer.method, "training_free", False):  # fusion: nothing learns, no optimiser, no loss
        assert trainer.optimizers == {} and out.get("loss") is None
        assert not any(p.requires_grad for p in trainer.method.parameters())
    else:
        assert params
    missing = [n for n, p in trainer.method.named_parameters() if any(p is q for q in params) and p.grad is None]
    assert not missing, f"no gradient reached {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in params)
    assert not params or sum(float(p.grad.abs().sum()) for p in params) > 0

    trainer = Trainer(config, run_dir)
    trainer.fit()
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "split" not in r and "event" not in r]
    assert len(rows) == 3
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if k.startswith("loss"))
    method, _ = load_run(run_dir, "last")
    ds = trainer.dataset if trainer.dataset is not None else inference.build_dataset(config["data"])
    for samples in (ds.sketches("test"), ds.photos("test")):
        a = inference.embed_samples(trainer.method.encoder, ds, samples)[0]
        b = inference.embed_samples(method.encoder, ds, samples)[0]
        assert np.array_equal(a, b) and np.isfinite(a).all()


@pytest.mark.parametrize("name", list_methods())
def test_every_registered_method_trains_and_round_trips(name, tmp_path):
    config = apply_overrides(load_preset("triplet-synthetic"), TINY)
    config["method"] = {"name": name}  # the method's own defaults, nothing of the preset's method
    config = apply_overrides(config, METHOD_OVERRIDES.get(name, []))
    if name == "fusion":  # fuses two finished runs: two tiny triplet runs first
        parts = [Trainer(apply_overrides(load_preset("triplet-synthetic"), [*TINY, f"seed={i}", "method.classes_per_batch=4"]),
                         tmp_path / f"part{i}").fit() for i in range(2)]
        config = apply_overrides(config, [f"method.runs=[{parts[0]}, {parts[1]}]"])
    _check_trains_and_round_trips(config, tmp_path / "run")


@pytest.mark.parametrize("backbone", [*list_backbones(), "timm/resnet18", "tv/resnet18"])
def test_every_registered_backbone_trains_and_round_trips(backbone, tmp_path):
    config = apply_overrides(load_preset("triplet-synthetic"), [*TINY, f"model.backbone={backbone}", "model.shared=true"])
    config["method"] = {"name": "triplet"}
    _check_trains_and_round_trips(config, tmp_path / "run")
