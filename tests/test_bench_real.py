"""The real-data benchmark script: a ``--quick`` smoke run (slow; its chance level: tests/eval/test_eval_chance.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_real.py"


@pytest.mark.slow
def test_bench_real_quick(shared_data, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shared", str(shared_data), "--out", str(tmp_path),
                           "--quick"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "### QMUL-V1" in proc.stdout and "### Quick, Draw! → CIFAR-10" in proc.stdout
    result = json.loads((tmp_path / "bench_real.json").read_text())
    assert (tmp_path / "bench_real.md").read_text().startswith("### QMUL-V1")
    for cat, n_test in (("shoes", 115), ("chairs", 97)):
        r = result["qmul_v1"][cat]
        assert (r["pixel"]["queries"], r["pixel"]["gallery"]) == (n_test, n_test)
        for key in ("engine", "engine_cached"):
            assert (r[key]["queries"], r[key]["gallery"]) == (n_test, n_test)
        assert r["engine_cached"]["cached_features"] and not r["engine"]["cached_features"]
        train, val = r["frozen"]["pairs"]["train"], r["frozen"]["pairs"]["val"]
        assert train + val == {"shoes": 304, "chairs": 200}[cat] and val > 0 and r["frozen"]["pairs"]["test"] == n_test
        for row in (r["pixel"], r["frozen"]["trained"], r["engine"], r["engine_cached"]):
            assert 0 <= row["acc@1"] <= row["acc@10"] <= 1
    # the pixel baseline clears chance (1/115, 1/97) by far, in the range the data README reports
    assert 0.12 < result["qmul_v1"]["shoes"]["pixel"]["acc@1"] < 0.35
    assert 0.30 < result["qmul_v1"]["chairs"]["pixel"]["acc@1"] < 0.55
    qd = result["quickdraw_cifar10"]
    assert qd["dataset"]["dropped_photo_classes"] == ["deer"]
    assert qd["dataset"]["matched"]["ship"] == ["cruise ship", "sailboat", "speedboat"]
    assert len(qd["classes"]) == 9
    assert qd["counts"]["test"]["photos"] == 9 * 20  # --quick: 20 test photos a class
    assert qd["chance"]["p@100"] == pytest.approx(1 / 9)
    for row in qd["rows"].values():
        assert 0 < row["map"] <= 1 and row["queries"] == qd["counts"]["test"]["sketches"]
    assert math.isfinite(qd["engine"]["last_loss"]) and qd["engine"]["steps"] == 2
