"""Tiny adaptive_fg configs for the tests (seconds on one core), and a slowed-down subclass so a
test can kill a run in the middle (``ADAPTIVE_STEP_SLEEP`` seconds a step; named in configs as
``adaptive_helpers:SlowAdaptiveFG``)."""

from __future__ import annotations

import os
import time

from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.methods.adaptive_fg import AdaptiveFG

# house, tree, fish, star, cup, umbrella: meta-train on house/tree/fish, validate on star, test cup/umbrella
# train.init_from=null: the presets name their supervised baseline (trained first at full length); a
# test that wants one gives it
TINY = ["train.init_from=null", "data.options={num_classes: 6, photos_per_class: 12, sketches_per_photo: 1, image_size: 32, seed: 0, "
        "splits: {train: 0.5, val: 0.25, test: 0.25}}",
        "model.embed_dim=16", "method.k_support=2", "method.k_query=2", "method.tasks_per_step=2",
        "method.val_groups=[star]", "method.test_groups=[cup, umbrella]", "method.semantic=onehot",
        "method.val_draws=1", "train.steps=12", "train.eval_every=6", "train.checkpoint_every=4",
        "train.log_every=2", "train.warmup_steps=0", "train.progress=false", "eval.batch_size=64"]


def tiny_config(*overrides: str, preset: str = "adaptive_fg-synthetic") -> dict:
    return apply_overrides(load_preset(preset), [*TINY, *overrides])


class SlowAdaptiveFG(AdaptiveFG):
    """AdaptiveFG with a pause before each step (the pause changes nothing it computes)."""

    def training_step(self, batch, ctx=None):
        delay = float(os.environ.get("ADAPTIVE_STEP_SLEEP", "0") or 0)
        if delay:
            time.sleep(delay)
        return super().training_step(batch, ctx)
