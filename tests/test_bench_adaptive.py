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
    monkeypatch.setattr(bench, "paper_overrides", lambda preset: [])  # no -paper half
    rows = {label: overrides for label, overrides, _ in bench.ablation_rows("any")}
    assert rows["ours − L_D"] == ["method.regularizers=[c]"] and rows["ours − L_C"] == ["method.regularizers=[d]"]
    assert next(iter(rows)).startswith("ours as shipped (L_D + L_C") and rows["ours, no regulariser"] == [
        "method.regularizers=[]"]
    assert ["method.inner_steps=0"] in rows.values() and ["method.margin=fixed"] in rows.values()
    assert bench.variant_overrides(bench.VARIANTS["ours_no_d"], "any") == ["method.regularizers=[c]"]
    assert bench.variant_overrides(bench.VARIANTS["ours_with_d"], "any") == ["method.regularizers=[d, c]"]
    assert bench.variant_overrides(bench.VARIANTS["anil"], "any") == bench.VARIANTS["anil"]["overrides"]
    monkeypatch.setattr(bench, "preset_regularizers", lambda preset: [])
    rows = bench.ablation_rows("any")
    assert rows[0][0].startswith("ours as shipped (no regulariser") and not any("regulariser" in r[0] for r in rows[1:])
    assert bench.variant_overrides(bench.VARIANTS["ours_with_d"], "any") == ["method.regularizers=[d]"]


def test_ablation_both_halves_on_the_shipped_preset(bench):
    """The shipped preset has no regulariser: the regulariser rows come from its -paper twin (the
    paper's set, each removed, all removed = ours), the fixed-margin / inner-step rows from the preset
    as shipped; each half is paired with its own first row, and rows that are other tables' models
    reuse their runs (the same overrides)."""
    rows = bench.ablation_rows("adaptive_fg-synthetic")
    labels = [label for label, _, _ in rows]
    assert labels == ["ours as shipped (no regulariser, learned margin, 1 inner step)", "fixed margin (0.2)",
                      "inner steps 0", "inner steps 2", "inner steps 3", "paper's regularisers (L_D + L_C + L_S)",
                      "paper's − L_D", "paper's − L_C", "paper's − L_S", "paper's − all (= ours as shipped)"]
    by = {label: (overrides, ref) for label, overrides, ref in rows}
    paper = bench.paper_overrides("adaptive_fg-synthetic")
    full = "paper's regularisers (L_D + L_C + L_S)"
    # the paper row is ours_paper's run, the "all removed" row ours' run
    assert sorted(by[full][0]) == sorted(bench.variant_overrides(bench.VARIANTS["ours_paper"], "adaptive_fg-synthetic"))
    assert by["paper's − all (= ours as shipped)"][0] == []
    assert "method.regularizers=[c, s]" in by["paper's − L_D"][0] and "method.c_mode=linear" in by["paper's − L_D"][0]
    assert set(by["paper's − L_D"][0]) - {"method.regularizers=[c, s]"} == set(paper) - {"method.regularizers=[d, c, s]"}
    assert by["inner steps 2"] == (["method.inner_steps=2"], labels[0]) and by["paper's − L_S"][1] == full
    # every row's overrides build a valid config
    for _, overrides, _ in rows:
        bench.apply_overrides(bench.load_preset("adaptive_fg-synthetic"), overrides)


def test_ablation_table_pairs_each_half_with_its_first_row(bench):
    def entry(values, reference, d_acc=None):
        return {"scores": [{"macro": {"acc@1": v, "acc@5": v + 0.3}} for v in values], "reference": reference,
                "monitors": [{"start": {"effective_rank": 30.0}, "final": {"effective_rank": 20.0, "photo_spread": 0.8,
                                                                           "modality_cosine": 0.9, "d_accuracy": d_acc},
                              "warnings": 0}] * len(values)}
    res = {"ours": entry([0.4, 0.5], "ours"), "inner steps 0": entry([0.3, 0.45], "ours"),
           "paper": entry([0.3, 0.3], "paper", 0.6), "paper − L_D": entry([0.35, 0.4], "paper")}
    table = bench.ablation_table(res, [0.2, 0.25]).splitlines()
    row = {line.split(" | ")[0][2:]: line.split(" | ") for line in table if line.startswith("| ") and " | " in line}
    assert row["inner steps 0"][3] == "-0.075 ± 0.035 (0/2 seeds > 0)" and row["ours"][3] == "—"
    assert row["paper − L_D"][3] == "+0.075 ± 0.035 (2/2 seeds > 0)" and row["paper"][4].startswith("+0.075")
    assert row["paper"][8] == "0.60" and row["ours"][8] == "-" and row["ours"][6] == "0.80"


def test_qmul_features_overrides_give_the_paper_presets_f(bench):
    """POOLED turns a QMUL-V1 preset's F into the -paper twin's (pooled final map), and ``common``
    overrides go into both the run's and its baseline's folder names (no clash with the grid runs)."""
    for preset, _ in bench.QMUL_PRESETS:
        pooled = bench.apply_overrides(bench.load_preset(preset), bench.POOLED)
        paper = bench.load_preset(f"{preset}-paper")
        # where a run starts (train.init_from / init_modules) is the bench's to set: it starts every
        # run from its own baseline row (trained() passes train.init_from=null, then the baseline)
        start = ("init_from", "init_modules")
        same = {k: v for k, v in pooled["train"].items() if k not in start}
        assert pooled["model"] == paper["model"] and same == {k: v for k, v in paper["train"].items() if k not in start}
    grid = bench.run_dir(bench.Path("/o"), "p", bench.SUPERVISED, 0)
    assert bench.run_dir(bench.Path("/o"), "p", [*bench.POOLED, *bench.SUPERVISED], 0) != grid


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


def test_suite_table_pairs_k_matched_ours_and_the_k_trained_models_own_step(bench):
    def variant(*values_per_k):
        return {"scores": {str(k): [{"macro": {"acc@1": v, "acc@5": v}} for v in vals]
                           for k, vals in zip((1, 5), values_per_k)}, "train_seconds": [1.0, 1.0], "monitors": []}
    res = {"ks": [1, 5], "variants": {"ours": variant([0.2, 0.3], [0.5, 0.6]), "ours_k1": variant([0.4, 0.4], [0.1, 0.1]),
                                      "ours_k1_without_step": variant([0.3, 0.2], [0.3, 0.3]),
                                      "no_adaptation": variant([0.1, 0.2], [0.4, 0.4])}}
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in bench.suite_table("t", res).splitlines()
            if line.startswith("| ") and "±" in line and "(" in line}
    # k = 1 pairs ours_k1 (k-matched), k = 5 ours (trained at 5)
    assert rows["no_adaptation"][0] == "+0.250 ± 0.071 (2/2 seeds > 0)"
    assert rows["no_adaptation"][1].startswith("+0.150 ± 0.071")
    # the k = 1 model's own step: ours_k1 − ours_k1_without_step at every k
    assert rows["ours_k1_without_step (paired with ours_k1, not k-matched ours)"][0].startswith("+0.150 ± 0.071")
    assert rows["ours_k1_without_step (paired with ours_k1, not k-matched ours)"][1].startswith("-0.200 ± 0.000")


def test_ablation_only_keeps_the_rows_asked_for_and_their_reference(bench, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(bench, "trained", lambda out, preset, overrides, seed, extra, from_baseline: (
        seen.append(tuple(overrides)) or tmp_path, 1.0))
    monkeypatch.setattr(bench, "scored", lambda folder, k, strategy: {"macro": {"acc@1": 0.1, "acc@5": 0.2}})
    res = bench.ablation(tmp_path, [0], [], only=["paper's − L_D"])
    assert list(res) == ["paper's regularisers (L_D + L_C + L_S)", "paper's − L_D"]
    assert len(seen) == 2 and "method.regularizers=[c, s]" in seen[1]
