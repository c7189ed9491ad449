"""``sbirkit eval --ties`` and ``--as <paper>``: the policy and the paper's metrics reach the table,
the record and the paper-style line; each combination keeps a record of its own."""

from __future__ import annotations

import json

import pytest
from cli_helpers import invoke, ok, one_line_error

from sbirkit.eval import PRESETS, RetrievalResult
from sbirkit.eval.presets import format_preset


def test_eval_names_the_tie_policy_and_keeps_a_record_per_policy(cli_run):
    run, _, _ = cli_run
    default = ok("eval", run, "--split", "test", "-d", "sketch2photo").output
    assert "- ties: expected: the exact expectation" in default  # the config default
    out = ok("eval", run, "--split", "test", "-d", "sketch2photo", "--ties", "pessimistic").output
    assert "- ties: pessimistic: inside a tie the relevant items rank after" in out
    record = json.loads((run / "eval-test-best-ties-pessimistic.json").read_text())
    assert record["results"]["sketch2photo"]["ties"] == "pessimistic"
    assert json.loads((run / "eval-test-best.json").read_text())["results"]["sketch2photo"]["ties"] == "expected"


@pytest.mark.parametrize("name", list(PRESETS))
def test_eval_as_a_paper_prints_its_metrics_and_line(cli_run, name):
    run, _, _ = cli_run
    preset = PRESETS[name]
    out = ok("eval", run, "--split", "test", "-d", "sketch2photo", "--as", name).output
    record = json.loads((run / f"eval-test-best-as-{name}.json").read_text())
    result = record["results"]["sketch2photo"]
    assert list(result["metrics"]) == list(preset.metrics)
    assert result["no_relevant"] == preset.no_relevant and record["preset"] == name
    assert preset.repository in out
    assert all(line in out for line in preset.format(RetrievalResult(**result)).splitlines())
    assert format_preset(name, {"sketch2photo": RetrievalResult(**result)}).splitlines()[0] in out


def test_presets_fill_the_paper_lines():
    result = RetrievalResult(metrics={"map:voc": 0.51234, "map@200:sake": 0.4, "p@100:zse": 0.3, "p@200:zse": 0.2},
                             undefined={}, conventions={}, num_queries=1, gallery_size=1, distance="cosine",
                             exclude_self=False, average="query")
    assert PRESETS["zse"].format(result) == "map_all:0.5123 map_200:0.4000 precision_100:0.3000 precision_200:0.2000"
    sem = RetrievalResult(metrics={"p@100": 0.1, "map:sklearn": 0.2, "p@200": 0.3, "map@200:sem-pcyc": 0.4},
                          undefined={}, conventions={}, num_queries=1, gallery_size=1, distance="cosine",
                          exclude_self=False, average="query")
    assert PRESETS["sem-pcyc"].format(sem) == "Prec@100 = 0.1000, mAP@all = 0.2000, Prec@200 = 0.3000, mAP@200 = 0.4000"


def test_eval_convention_errors_are_one_line(cli_run):
    run, _, _ = cli_run
    one_line_error(invoke("eval", run, "--ties", "random"), "--ties", "pessimistic, expected, optimistic")
    one_line_error(invoke("eval", run, "--as", "mine"), "--as", "sake, zse, sem-pcyc")
