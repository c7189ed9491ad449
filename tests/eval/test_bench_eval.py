"""Smoke run of the evaluation benchmark (``--quick``); slow, so behind the ``slow`` marker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_eval.py"


@pytest.mark.slow
def test_bench_eval_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--sklearn-queries", "20",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "| ours: evaluate_retrieval" in proc.stdout
    summary = json.loads(out.read_text())
    assert set(summary["runs"]) == {"ours", "sklearn", "floor"}
    assert summary["config"]["queries"] == 1000 and summary["config"]["gallery"] == 10000
    # the sampled per-query APs agree with scikit-learn (float32 vs float64 similarities)
    assert summary["max_abs_ap_diff_vs_sklearn"] < 1e-4
    for run in summary["runs"].values():
        assert run["seconds"] > 0 and run["peak_extra_mib"] >= 0
