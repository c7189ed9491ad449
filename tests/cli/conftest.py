"""Fixtures for the command-line tests: one tiny trained run, a photo folder and some sketches."""

from __future__ import annotations

import pytest
from cli_helpers import ok


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    """(run folder, photo folder, sketch folder): a model trained for a few steps through the CLI."""
    root = tmp_path_factory.mktemp("cli_run")
    run = root / "run"
    ok("train", "triplet-synthetic", "--run-dir", run, "train.steps=4", "train.eval_every=2",
       "train.checkpoint_every=2", "train.warmup_steps=0", "data.options.num_classes=4",
       "data.options.photos_per_class=6", "data.options.image_size=32", "method.classes_per_batch=4",
       "train.batch_size=8", "model.embed_dim=16")
    ok("data", "synth", "--out", root / "synth", "--num-classes", "3", "--photos-per-class", "3",
       "--image-size", "32", "--seed", "3")
    return run, root / "synth" / "photo", root / "synth" / "sketch"


@pytest.fixture(scope="session")
def cli_index(cli_run, tmp_path_factory):
    """An exact index of the fixture's photos."""
    run, photos, _ = cli_run
    out = tmp_path_factory.mktemp("cli_index") / "idx"
    ok("index", "build", run, photos, "--out", out)
    return out
