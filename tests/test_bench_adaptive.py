"""The adaptive benchmark script's own bookkeeping: the ablation rows follow the preset's
regulariser set, "ours without L_D" keeps the preset's other regularisers, and the collapse
monitors read back from a run's metrics.jsonl (first and last validation, best step)."""

from __future__ import annotations

import json

import pytest
from bench_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_adaptive")


def test_ablation_rows_remove_each_regulariser_of_the_preset(bench, monkeypatch):
    monkeypatch.setattr(bench, "preset_regularizers", lambda preset: ["d", "c"])
    rows = dict(bench.ablation_rows("any"))
    assert rows["- L_D"] == ["method.regularizers=[c]"] and rows["- L_C"] == ["method.regularizers=[d]"]
    assert next(iter(rows)).startswith("ours (L_D + L_C") and rows["no regulariser"] == ["method.regularizers=[]"]
    assert ["method.inner_steps=0"] in rows.values() and ["method.margin=fixed"] in rows.values()
    assert bench.variant_overrides(bench.VARIANTS["ours_no_d"], "any") == ["method.regularizers=[c]"]
    assert bench.variant_overrides(bench.VARIANTS["anil"], "any") == bench.VARIANTS["anil"]["overrides"]
    monkeypatch.setattr(bench, "preset_regularizers", lambda preset: [])
    rows = bench.ablation_rows("any")
    assert rows[0][0].startswith("ours (no regulariser") and "no regulariser" not in dict(rows)


def test_monitors_read_the_first_and_last_validation(bench, tmp_path):
    records = [{"step": 0, "split": "val", "sketch2photo/acc@1": 0.3, "monitor/effective_rank": 20.0,
                "monitor/photo_spread": 1.2, "monitor/feature_spread": 0.5, "monitor/modality_cosine": 0.9},
               {"step": 50, "loss": 0.1},
               {"step": 100, "split": "val", "sketch2photo/acc@1": 0.5, "monitor/effective_rank": 15.0,
                "monitor/photo_spread": 0.8, "monitor/feature_spread": 0.4, "monitor/modality_cosine": 0.95},
               {"step": 200, "split": "val", "sketch2photo/acc@1": 0.4, "monitor/effective_rank": 5.0,
                "monitor/photo_spread": 0.3, "monitor/feature_spread": 0.2, "monitor/modality_cosine": 0.99,
                "warning": "collapse"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    m = bench.monitors(tmp_path)
    assert m["start"]["effective_rank"] == 20.0 and m["final"]["photo_spread"] == 0.3
    assert m["best_step"] == 100 and m["best_val_acc@1"] == 0.5 and m["warnings"] == 1
    assert bench.monitor_cells([m, m]) == "20.0 → 5.0 | 0.30"
    assert bench.monitor_cells([{}]) == "- | -" and bench.monitors(tmp_path / "none") == {}


def test_paper_rows_take_the_paper_twins_regularisers_and_duplicates_of_ours_are_dropped(bench):
    paper = bench.paper_overrides("adaptive_fg-synthetic")
    assert "method.regularizers=[d, c, s]" in paper and "method.c_mode=linear" in paper
    assert "method.regularizers=[d, c, s, ud]" in bench.paper_overrides("adaptive_fg-synthetic_users")
    # the shipped presets have no regulariser: "ours without regularisers / without L_D" is ours itself
    rows = bench.distinct_variants(["ours", "ours_no_reg", "ours_no_d", "ours_paper", "ours_without_step"],
                                   "adaptive_fg-synthetic")
    assert rows == ["ours", "ours_paper", "ours_without_step"]
