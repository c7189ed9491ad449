"""Methods from outside the package, one per training-source kind (pairs, episodes, generated data
with two optimisers in alternation), train, get killed, resume and evaluate through the normal
command line with no change to the engine; the resumed run ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from sbirkit.cli import app
from sbirkit.engine import Trainer, load_run
from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.engine.runlog import read_metrics

HERE = Path(__file__).resolve().parent
DATA = "data.options={num_classes: 4, photos_per_class: 8, image_size: 16, seed: 0}"
COMMON = ["model.backbone=tiny_cnn", "model.embed_dim=16", "model.shared=false", "train.batch_size=8",
          "train.steps=24", "train.checkpoint_every=4", "train.eval_every=8", "train.log_every=2",
          "train.warmup_steps=2", "train.lr=0.003", "train.progress=false", "train.deterministic=true",
          "eval.batch_size=64"]
KINDS = {
    "pairs": ["method.name=plugin_methods:PairsPlugin", "data.name=synthetic", DATA],
    "episodes": ["method.name=plugin_methods:EpisodesPlugin", "data.name=synthetic", DATA],
    "generated": ["method.name=plugin_methods:GeneratedPlugin", "data.name=null", "eval.select=generated/agreement"],
}


def _config(kind: str) -> dict:
    return apply_overrides(load_preset("triplet-synthetic"), [*COMMON, *KINDS[kind]])


def _env(sleep: float = 0.0) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "PLUGIN_STEP_SLEEP": str(sleep)}
    return env


def _cli_train(preset: Path, run_dir: Path, sleep: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sbirkit", "train", str(preset), "--run-dir", str(run_dir)],
                            env=_env(sleep), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_plugin_method_trains_resumes_and_evaluates_through_the_cli(kind, tmp_path):
    config = _config(kind)
    whole = Trainer(config, tmp_path / "whole")  # uninterrupted, in this process
    whole.fit()
    assert whole.source.kind == kind

    preset = tmp_path / f"{kind}.yaml"
    preset.write_text(yaml.safe_dump({k: v for k, v in config.items() if k not in ("run_dir", "name")}))
    run = tmp_path / "killed"
    child = _cli_train(preset, run, sleep=0.15)
    deadline = time.time() + 120
    while _logged_step(run) < 10 and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, child.stdout.read()
    child.send_signal(signal.SIGKILL)
    child.wait()
    stopped = torch.load(run / "last.pt", weights_only=True)["step"]
    assert 4 <= stopped < 24

    resumed = _cli_train(preset, run)
    out, _ = resumed.communicate(timeout=600)  # a hang guard: under heavy load 180 s expired
    assert resumed.returncode == 0, out
    assert "trained 24 steps" in out and "run:" in out
    meta = json.loads((run / "meta.json").read_text())
    assert [r["step"] for r in meta["resumed"]] == [stopped]
    assert meta["source"]["kind"] == kind
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    assert set(a["model"]) == set(b["model"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), kind
    assert set(a["optimizer"]) == set(b["optimizer"]) == set(whole.optimizers)
    logged = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "event" not in r and "split" not in r]
    assert logged == list(range(2, 25, 2))  # the records redone after the kill replaced the lost ones

    eval_args = ["eval", str(run), "--split", "test"]
    if kind == "generated":  # a dataset-free run is evaluated on any real dataset named here
        eval_args += ["--data", "name=synthetic", "--data", "options={num_classes: 4, photos_per_class: 8, "
                      "image_size: 16, seed: 0}"]
    sys.path.insert(0, str(HERE))
    try:
        result = CliRunner().invoke(app, eval_args)
    finally:
        sys.path.remove(str(HERE))
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "eval-test-best.json").read_text())
    assert saved["protocol"]["queries"] == {"sketch": 8, "photo": 8}
    assert 0.0 <= saved["results"]["sketch2photo"]["metrics"]["map"] <= 1.0
    method, cfg = load_run(run)
    assert cfg["method"]["name"] == KINDS[kind][0].split("=", 1)[1] and type(method).__name__.endswith("Plugin")


def test_the_generated_plugin_alternates_two_optimisers_and_selects_on_its_own_validation(tmp_path):
    trainer = Trainer(_config("generated"), tmp_path / "run")
    trainer.fit()
    assert trainer.dataset is None and set(trainer.optimizers) == {"student", "generator"}
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train_rows = [r for r in rows if "loss_student" in r]
    assert all("lr" in r and "lr/generator" in r for r in train_rows)
    assert all(r["lr/generator"] == pytest.approx(1e-3) for r in train_rows)  # its own constant schedule
    vals = [r for r in rows if r.get("split") == "method"]
    assert [r["step"] for r in vals] == [8, 16, 24]
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["value"] == pytest.approx(max(r["generated/agreement"] for r in vals))
    assert "method's own validation" in best["selection"]
    gen = [k for k in best["model"] if k.startswith("generator.")]
    fresh = Trainer(_config("generated"), tmp_path / "fresh")
    torch.manual_seed(0)
    from sbirkit.methods import create_method

    initial = create_method(fresh.config["method"]["name"], fresh.config).state_dict()
    assert gen and any(not torch.equal(trainer.method.state_dict()[k], initial[k]) for k in gen)
