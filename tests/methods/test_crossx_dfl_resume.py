"""CrossX-DFL killed with SIGKILL in the middle of a command-line run resumes to exactly the weights,
pool, queue and optimiser states of an uninterrupted run (the shape of tests/engine/test_plugin_methods.py).
The uninterrupted run trains the tiny teachers first; the killed one reuses them, so this also
checks that training the teachers inside a run leaves its random numbers untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from sbirkit.engine import Trainer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dfl_helpers import tiny_config  # noqa: E402


def _logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


def _train(preset: Path, run_dir: Path, sleep: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "DFL_STEP_SLEEP": str(sleep)}
    return subprocess.Popen([sys.executable, "-c", "import dfl_slow; dfl_slow.main()", "train", str(preset),
                             "--run-dir", str(run_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_a_killed_crossx_dfl_run_resumes_exactly(tmp_path):
    config = tiny_config("train.steps=16", "train.eval_every=8")
    whole = Trainer(config, tmp_path / "whole")
    whole.fit()  # trains the teachers and the discriminator into tmp_path, then the run

    preset = tmp_path / "crossx.yaml"
    preset.write_text(yaml.safe_dump({k: v for k, v in config.items() if k not in ("run_dir", "name")}))
    run = tmp_path / "killed"
    child = _train(preset, run, sleep=0.25)
    deadline = time.time() + 180
    while _logged_step(run) < 8 and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, child.stdout.read()
    child.send_signal(signal.SIGKILL)
    child.wait()
    stopped = torch.load(run / "last.pt", weights_only=True)["step"]
    assert 4 <= stopped < 16

    resumed = _train(preset, run)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "trained 16 steps" in out
    assert "later runs reuse it" not in out  # the teachers and the discriminator were reused, not retrained
    meta = json.loads((run / "meta.json").read_text())
    assert [r["step"] for r in meta["resumed"]] == [stopped]
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    assert set(a["model"]) == set(b["model"])
    for key in ("pool_photo", "pool_sketch", "pool_prob_photo", "queue_photo", "queue_sketch", "queue_count",
                "pool_count", "estimator_step_count"):
        assert key in a["model"]
    def same(x, y):  # bit-identical; NaN (a term that is off) equals NaN
        return x.shape == y.shape and x.dtype == y.dtype and (
            torch.equal(x, y) if not x.is_floating_point() else bool(((x == y) | (x.isnan() & y.isnan())).all()))

    different = [k for k in a["model"] if not same(a["model"][k], b["model"][k])]
    assert not different, different[:5]
    assert set(a["optimizer"]) == {"student", "estimator"}
    for name in a["optimizer"]:
        sa, sb = a["optimizer"][name]["state"], b["optimizer"][name]["state"]
        assert set(sa) == set(sb)
        assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i] if isinstance(sa[i][k], torch.Tensor))
    assert int(a["model"]["estimator_step_count"]) == 16  # 8 rounds x 2 steps
