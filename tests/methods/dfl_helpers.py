"""Tiny data-free SBIR configs for the fast suite: teachers and discriminator trained for a few
steps on 4 synthetic classes at 16 px (seconds), estimators and students at 16 px."""

from __future__ import annotations

from sbirkit.engine.config import apply_overrides, load_preset

DATA = "{num_classes: 4, photos_per_class: 8, image_size: 16, seed: 0}"
TEACHER_OVERRIDES = ("[train.steps=4, train.batch_size=8, train.eval_every=4, train.log_every=2, "
                     f"train.progress=false, 'data.options={DATA}']")


def teacher(modality: str) -> str:
    return f"{{preset: classifier-synthetic-{modality}, overrides: {TEACHER_OVERRIDES}}}"


DISCRIMINATOR = ("{preset: modality_discriminator-synthetic, overrides: [train.steps=4, train.batch_size=8, "
                 "train.eval_every=4, train.progress=false, "
                 "'data.options={classes: [lightning, mushroom], photos_per_class: 6, image_size: 16, seed: 0}']}")

TINY = [f"data.options={DATA}", "model.embed_dim=16",
        f"method.photo_teacher={teacher('photo')}", f"method.sketch_teacher={teacher('sketch')}",
        f"method.discriminator={DISCRIMINATOR}",
        "method.image_size=16", "method.estimator_batch=8", "method.estimator_every=2", "method.estimator_steps=2",
        "method.pool_size=24", "method.queue_size=12", "method.validation_size=16",
        "train.steps=12", "train.batch_size=8", "train.eval_every=6", "train.log_every=2", "train.checkpoint_every=4",
        "train.progress=false", "train.warmup_steps=0", "train.deterministic=true", "eval.batch_size=64"]


def tiny_config(*extra: str, preset: str = "crossx_dfl-synthetic") -> dict:
    return apply_overrides(load_preset(preset), [*TINY, *extra])


def warm_root(tmp_path_factory, name: str):
    """A fresh folder whose tiny teachers were trained once (a 2-step run in ``<root>/warmup``):
    module fixtures of the data-free tests start from it."""
    from sbirkit.engine import Trainer

    root = tmp_path_factory.mktemp(name)
    Trainer(tiny_config("train.steps=2"), root / "warmup").fit()
    return root
