"""``benchmarks/gpu_dfl.sh`` in its CPU dry run (``GPU_DFL_DRY_RUN=1``): the teachers train one
step and every other command checks its resolved config with ``--dry-run``, so an override the
GPU run would reject (one once lost its teacher to word splitting) fails here, not on the GPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("timeout") is None, reason="the script runs each command under timeout(1)")
def test_gpu_dfl_dry_run_checks_every_command(shared_data, tmp_path):
    if not (shared_data / "doodlenet" / "doodleNet-model.h5").is_file():
        pytest.skip("the real-teacher rows need the DoodleNet weights in the shared data")
    env = {**os.environ, "GPU_DFL_DRY_RUN": "1", "OMP_NUM_THREADS": "1", "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_dfl.sh"), str(shared_data), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dry run: every command checked" in done.stdout
    steps = [json.loads(line) for line in (tmp_path / "gpu_dfl.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == ["teacher-photo", "teacher-sketch", "paper-crossx", "paper-classifier-only",
                                          "real-crossx", "real-classifier-only"]
    assert all(s["rc"] == 0 for s in steps)
    crossx = (tmp_path / "paper-crossx.log").read_text()
    assert "# dry run: nothing trained or written" in crossx and "steps: 2000" in crossx
    assert f"run: {tmp_path}/runs/classifier-cifar9-photo" in crossx  # the teacher override arrived whole
