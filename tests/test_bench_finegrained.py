"""The presets that issue 13's benchmark chose are the configurations it measured."""

from __future__ import annotations

import pytest
from bench_scripts import load_benchmark

from sbirkit.engine import apply_overrides, load_preset


@pytest.mark.parametrize("preset, category, candidate", [
    ("triplet_sn-qmul_v1-grid", "shoes", "grid_cached_long"),
    ("triplet_sn-qmul_v1_chairs-grid", "chairs", "grid_cached_hard"),
    ("triplet-quickdraw_cifar10-views", "quickdraw_cifar10", "qd_s2_views_long"),
    ("triplet_sn-qmul_v1-aug", "shoes", "att_s2"),
    ("triplet_sn-qmul_v1_chairs-aug", "chairs", "att_s1"),
])
def test_shipped_preset_is_the_measured_candidate(preset, category, candidate):
    bench = load_benchmark("bench_finegrained")
    measured = apply_overrides(load_preset(bench.BASE[category]), bench.CANDIDATES[candidate])
    shipped = load_preset(preset)
    for section in ("seed", "data", "model", "method", "train", "eval"):
        assert shipped[section] == measured[section], section
