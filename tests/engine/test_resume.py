"""Resume after SIGKILL ends with the weights of an uninterrupted run; checkpoint writes are atomic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny_pairs  # noqa: F401  (registers the tiny_pairs dataset)
import torch
from runs_helper import tiny_config

from sbirkit.engine import CheckpointError, atomic_save, checkpoint, load_checkpoint, train
from sbirkit.engine.config import save_config
from sbirkit.engine.runlog import read_metrics

HERE = Path(__file__).resolve().parent

# Runs train() in a fresh interpreter, slowed per item so the test can kill it mid-run.
CHILD = """
import sys, time, torch, yaml
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[3])
import tiny_pairs
from sbirkit.data.samplers import PairDataset
_get = PairDataset.__getitem__
def slow(self, item):
    time.sleep(0.02)
    return _get(self, item)
PairDataset.__getitem__ = slow
from sbirkit.engine import train
train(yaml.safe_load(open(sys.argv[1])), sys.argv[2])
"""


def _config():
    # random negatives draw from torch's RNG, so a wrongly restored RNG state changes the result
    return tiny_config("train.steps=24", "train.checkpoint_every=4", "train.eval_every=12",
                       "method.mining=random", "train.deterministic=true")


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def _logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    config = _config()
    cfg_path = tmp_path / "config.yaml"
    save_config(config, cfg_path)
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg_path), str(killed), str(HERE)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not ((killed / "last.pt").exists() and _logged_step(killed) >= 6):
            if proc.poll() is not None:
                pytest.fail(f"training subprocess exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("training subprocess wrote no checkpoint in time")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step_at_kill = load_checkpoint(killed / "last.pt")["step"]
    assert 4 <= step_at_kill < 24  # really interrupted, after a checkpoint

    train(config, killed)  # resumes from last.pt
    reference = train(config, tmp_path / "uninterrupted")

    a, b = _weights(killed), _weights(reference)
    assert torch.load(killed / "last.pt", weights_only=True)["step"] == 24
    assert set(a) == set(b)
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=0, atol=1e-6), key
    # the log has each step once: the killed run's records after its checkpoint were dropped
    logged = [r for r in read_metrics(killed / "metrics.jsonl") if "loss" in r]
    ref_logged = [r for r in read_metrics(reference / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in logged] == [r["step"] for r in ref_logged] == list(range(2, 25, 2))
    assert [r["loss"] for r in logged] == pytest.approx([r["loss"] for r in ref_logged], abs=1e-6)
    meta = json.loads((killed / "meta.json").read_text())
    assert [r["step"] for r in meta["resumed"]] == [step_at_kill]


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.ones(3)}, "step": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"model": {"w": torch.zeros(3)}, "step": 2}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 1 and torch.equal(ckpt["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_crash_while_checkpointing_then_resume(tmp_path, monkeypatch):
    config = tiny_config("train.steps=8", "train.checkpoint_every=4", "train.eval_every=0")
    real_save = torch.save

    def fail_at_step_8(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj and obj["step"] == 8:
            f.write(b"\x00" * 100)
            raise KeyboardInterrupt  # as if killed mid-write
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", fail_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    train(config, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 8


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="last.pt: could not load checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
