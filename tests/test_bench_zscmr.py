"""The zero-shot benchmark script's own arithmetic: the paired per-seed differences it reports, and
the validation value it reads back for the checkpoint model selection kept."""

from __future__ import annotations

import json

import pytest
import torch
from bench_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_zscmr")


def test_paired_table_differences_are_per_seed(bench):
    a = {"sketch2photo": {"map": [0.70, 0.60, 0.50]}, "photo2sketch": {"map": [0.1, 0.2, 0.3]}}
    b = {"sketch2photo": {"map": [0.65, 0.62, 0.40]}, "photo2sketch": {"map": [0.1, 0.3, 0.2]}}
    lines = bench.paired_table(a, b, ["sketch2photo", "photo2sketch"]).splitlines()
    # differences +0.05, -0.02, +0.10 (mean +0.0433, sample std 0.0603) and 0, -0.1, +0.1
    assert lines[2] == "| mean ± std of the difference | +0.043 ± 0.060 | +0.000 ± 0.100 |"
    assert lines[3] == "| seeds where ZSCMR is higher | 2 of 3 | 1 of 3 |"


def test_validation_at_best_reads_the_kept_step(bench, tmp_path):
    torch.save({"step": 50}, tmp_path / "best.pt")
    rows = [{"step": 25, "split": "val", "s2p/map": 0.4}, {"step": 50, "loss": 1.0},
            {"step": 50, "split": "val", "s2p/map": 0.6}, {"step": 75, "split": "val", "s2p/map": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench.validation_at_best(tmp_path, "s2p/map") == 0.6
