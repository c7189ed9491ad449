"""The shipped zero-shot presets trained in full (slow: about a minute; run with -m slow): ZSCMR
beats the triplet baseline on unseen classes in all four directions, and both beat chance."""

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
    # seed 0 (BENCHMARKS.md): ZSCMR ahead by 0.059 / 0.049 cross-modal and 0.045 / 0.034 within a
    # modality; the five-seed mean lead is 0.057-0.060 and 0.016-0.025
    for direction in ("sketch2photo", "photo2sketch"):
        assert zscmr[direction] > triplet[direction] + 0.03
    for direction in ("sketch2sketch", "photo2photo"):
        assert zscmr[direction] > triplet[direction] + 0.01
    for direction in ("sketch2photo", "photo2sketch", "sketch2sketch", "photo2photo"):
        assert zscmr[direction] > 3 * chance[direction] and triplet[direction] > 2 * chance[direction]
        assert f"{direction} (64-bit ITQ, Hamming)" in zscmr
