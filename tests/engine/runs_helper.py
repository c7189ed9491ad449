"""Tiny run configs for engine tests (the tiny_pairs dataset, a 16-px tiny_cnn)."""

from __future__ import annotations

from sbirkit.engine.config import apply_overrides, load_preset


def tiny_config(*overrides: str) -> dict:
    """A seconds-long triplet run: 4 classes, 16-px images, batch 8 (P=4 x K=2)."""
    base = [
        "data.name=tiny_pairs",
        "data.options={num_classes: 4, photos_per_class: 8, image_size: 16}",
        "model.embed_dim=16",
        "method.mining=random",
        "method.classes_per_batch=4",
        "train.steps=24",
        "train.batch_size=8",
        "train.lr=0.003",
        "train.warmup_steps=3",
        "train.log_every=2",
        "train.eval_every=8",
        "train.checkpoint_every=4",
        "train.progress=false",
        "eval.batch_size=64",
    ]
    return apply_overrides(load_preset("triplet-synthetic"), [*base, *overrides])
