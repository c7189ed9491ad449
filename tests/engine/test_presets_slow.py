"""The shipped demo preset, trained in full (slow: about a minute or two; run with -m slow)."""

from __future__ import annotations

import pytest

from sbirkit.engine import evaluate_run, load_preset, train


@pytest.mark.slow
def test_triplet_synthetic_preset_beats_chance_and_pixels(tmp_path):
    run_dir = train(load_preset("triplet-synthetic"), tmp_path / "demo")
    s2p = evaluate_run(run_dir, split="test")["results"]["sketch2photo"]["metrics"]
    # 16 balanced classes: a random ranking scores ~0.07; the pixel baseline ~0.37
    assert s2p["map"] > 0.45
