"""The demo (`./dev demo`, `sbirkit demo`): every stage runs and its report agrees with `sbirkit eval`."""

from __future__ import annotations

import json

import pytest

from sbirkit.demo import run_demo


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, quick=True)


def test_demo_writes_every_artefact(quick_demo):
    out, numbers = quick_demo
    for name in ("report.md", "results.json", "retrieval_grid.png", "pr_curve.png", "per_class_ap.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "index").is_dir()
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(numbers))
    assert numbers["saved_index_matches_live"] is True


def test_the_quick_report_says_it_is_a_smoke_test(quick_demo):
    out, _ = quick_demo
    assert "Smoke test" in (out / "report.md").read_text()


def test_the_report_names_its_tie_policy(quick_demo):
    out, numbers = quick_demo
    report = (out / "report.md").read_text()
    assert numbers["trained"]["sketch2photo"]["ties"] == "expected"  # the default
    assert "Ties (items at equal distance): `expected`, the exact expectation" in report
    assert "- ties: expected:" in report  # the table's own line


def test_demo_numbers_match_the_saved_evaluation(quick_demo):
    out, numbers = quick_demo
    saved = json.loads((out / "run" / "eval.json").read_text())
    assert numbers["checkpoint"] == saved["checkpoint"]
    s2p = numbers["trained"]["sketch2photo"]
    assert s2p["metrics"]["map"] == pytest.approx(saved["results"]["sketch2photo"]["metrics"]["map"], abs=1e-6)
    # the quick demo's test split: 6 balanced classes, so a random ranking has mAP ~ 1/6
    assert numbers["chance_map"] == pytest.approx(1 / 6, abs=0.02)
    assert s2p["num_queries"] == saved["results"]["sketch2photo"]["num_queries"] > 0
