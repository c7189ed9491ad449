"""``sbirkit train``: every ordinary mistake is one line (exit 2) found before the first step and
leaves nothing behind; --dry-run checks and prints without writing; one process per run folder;
a summary line at the end."""

from __future__ import annotations

import json

import pytest
from cli_helpers import invoke, ok, one_line_error

from sbirkit.engine.run_lock import run_lock

TINY = ["train.steps=2", "train.eval_every=2", "train.warmup_steps=0", "train.progress=false",
        "data.options.num_classes=4", "data.options.photos_per_class=6", "data.options.image_size=32",
        "method.classes_per_batch=4", "train.batch_size=8", "model.embed_dim=16"]


@pytest.mark.parametrize("override, needles", [
    ("train.lr=-1", ["train.lr", "expected a number >= 0", "-1"]),
    ("train.steps=0", ["train.steps", "expected an integer >= 1", "0"]),
    ("train.optimizer=adamx", ["train.optimizer", "adamw", "adamx"]),
    ("model.backbone=nope", ["model.backbone", "unknown backbone 'nope'"]),
    ("data.name=nope", ["data.name", "unknown dataset format 'nope'"]),
    ("method.name=nope", ["method.name", "unknown method 'nope'"]),
    ("data.options.bogus=1", ["data.options.bogus", "synthetic"]),
    ("train.device=cuda", ["train.device", "CUDA is not available"]),
    ("eval.select=foo/bar", ["eval.select", "'foo/bar'", "sketch2photo/map"]),
    ("eval.select=nope", ["eval.select", "<direction>/<metric>"]),
    ("model.embed_dim=0", ["model.embed_dim", "expected an integer >= 1"]),
    ("method.margn=0.3", ["method.margn", "unknown option", "margin"]),
    ("train.head_init=pcaa", ["train.head_init", "'default' or 'pca'"]),
    ("data.val_fraction=1.5", ["data.val_fraction", "< 1"]),
    ("eval.directions=[sketch2photo,up]", ["eval.directions", "photo2sketch"]),
])
def test_a_bad_setting_is_one_line_before_the_first_step(override, needles, tmp_path):
    import torch

    if override == "train.device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = tmp_path / "run"
    one_line_error(invoke("train", "triplet-synthetic", "--run-dir", run, *TINY, override), *needles)
    assert not run.exists()  # nothing written: the corrected command starts a fresh run


def test_a_corrected_run_starts_where_the_refused_one_would_have(tmp_path):
    run = tmp_path / "run"
    one_line_error(invoke("train", "triplet-synthetic", "--run-dir", run, *TINY, "eval.select=sketch2photo/nope"),
                   "eval.select")
    result = ok("train", "triplet-synthetic", "--run-dir", run, *TINY)
    assert "trained 2 steps in" in result.output and "best sketch2photo/map" in result.output
    assert (run / "best.pt").is_file()


def test_dry_run_checks_everything_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    result = ok("train", "triplet-synthetic", "--run-dir", run, "--dry-run", *TINY)
    assert "dry run: nothing trained or written" in result.output
    assert "steps: 2" in result.output and "# source: {'kind': 'pairs'" in result.output
    assert "# validation: data: val" in result.output
    assert not run.exists()
    one_line_error(invoke("train", "triplet-synthetic", "--run-dir", run, "--dry-run", *TINY,
                          "eval.select=photo2sketch/map"), "eval.select", "sketch2photo/map")
    assert not run.exists()


def test_a_folder_named_like_the_preset_does_not_shadow_it(tmp_path, monkeypatch):
    """`sbirkit train NAME` in a folder holding ./NAME/ (an earlier --run-dir NAME) reads the preset;
    `NAME/` (a path) is a one-line error naming the folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "triplet-synthetic").mkdir()
    result = ok("train", "triplet-synthetic", "--run-dir", tmp_path / "run", "--dry-run", *TINY)
    assert "dry run: nothing trained or written" in result.output
    one_line_error(invoke("train", "triplet-synthetic/", "--dry-run", *TINY),
                   "triplet-synthetic: expected a preset YAML file, found a folder")


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):  # as a training process holds it
        line = one_line_error(invoke("train", "triplet-synthetic", "--run-dir", run, *TINY), "run folder in use")
        assert "pid" in line
        assert not (run / "metrics.jsonl").exists()
    ok("train", "triplet-synthetic", "--run-dir", run, *TINY)  # released: it trains


def test_rerunning_a_finished_run_with_another_progress_setting_keeps_its_indexes_valid(tmp_path):
    run = tmp_path / "run"
    ok("train", "triplet-synthetic", "--run-dir", run, *TINY)
    photos = tmp_path / "synth"
    ok("data", "synth", "--out", photos, "--num-classes", "2", "--photos-per-class", "2", "--image-size", "32")
    ok("index", "build", run, photos / "photo", "--out", tmp_path / "idx")
    before = json.loads((run / "meta.json").read_text())
    ok("train", "triplet-synthetic", "--run-dir", run, *[o for o in TINY if "progress" not in o],
       "train.progress=true")  # finished: resumes at the last step, rewrites config.yaml
    assert json.loads((run / "meta.json").read_text())["resumed"][-1]["step"] == 2 and before
    sketch = next((photos / "sketch").rglob("*.png"))
    ok("search", "--index", tmp_path / "idx", "--sketch", sketch, "-k", "2")  # same fingerprint: accepted
