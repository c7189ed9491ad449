"""The shipped zero-shot presets trained in full (slow: about a minute; run with -m slow): ZSCMR
beats the triplet baseline on unseen classes in the cross-modal directions, and both beat chance."""

from __future__ import annotations

import pytest

from sbirkit.engine import apply_overrides, evaluate_run, load_preset, train


@pytest.mark.slow
def test_zscmr_synthetic_beats_the_triplet_baseline_on_unseen_classes(tmp_path):
    results, chance = {}, None
    for preset in ("zscmr-synthetic", "triplet-synthetic-zs"):
        config = apply_overrides(load_preset(preset), [f"train.feature_cache={tmp_path / 'features'}",
                                                       "train.progress=false"])
        report = evaluate_run(train(config, tmp_path / preset), device="cpu")
        results[preset] = {d: r["metrics"]["map"] for d, r in report["results"].items()}
        chance = report["protocol"]["chance"]
    zscmr, triplet = results["zscmr-synthetic"], results["triplet-synthetic-zs"]
    # seed 0 on this machine: ZSCMR 0.593 / 0.625 vs triplet 0.484 / 0.530 (BENCHMARKS.md)
    for direction in ("sketch2photo", "photo2sketch"):
        assert zscmr[direction] > triplet[direction] + 0.05
    for direction in ("sketch2photo", "photo2sketch", "sketch2sketch", "photo2photo"):
        assert zscmr[direction] > 3 * chance[direction] and triplet[direction] > 2 * chance[direction]
        assert f"{direction} (64-bit ITQ, Hamming)" in zscmr
