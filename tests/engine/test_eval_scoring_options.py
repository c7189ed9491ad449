"""The ``eval`` section's scoring keys (``ties``, ``no_relevant``, ``metrics``): checked when the
config is read, and handed to the retrieval engine by the protocols."""

from __future__ import annotations

import pytest

from sbirkit.engine.evaluator import scoring_options
from sbirkit.engine.options import EvalOptions, check_section
from sbirkit.errors import ConfigError


def test_defaults_and_checks():
    ev = check_section("eval", {})
    assert (ev.ties, ev.no_relevant, ev.metrics) == ("expected", "exclude", None)
    assert scoring_options(ev) == {"ties": "expected", "no_relevant": "exclude"}
    with pytest.raises(ConfigError, match=r"eval\.ties: expected one of 'pessimistic', 'expected', 'optimistic'"):
        check_section("eval", {"ties": "random"})
    with pytest.raises(ConfigError, match=r"eval\.no_relevant: expected 'exclude' or 'zero'"):
        check_section("eval", {"no_relevant": "drop"})
    with pytest.raises(ConfigError, match=r"eval\.metrics: .*unknown metric 'mrr'"):
        check_section("eval", {"metrics": ["map", "mrr"]})


def test_metrics_replace_the_defaults_and_acc_goes_to_the_cross_modal_directions():
    ev = EvalOptions(metrics=["map:voc", "p@100:zse", "acc@1"], ties="optimistic", no_relevant="zero")
    assert scoring_options(ev, ev.metrics) == {"ties": "optimistic", "no_relevant": "zero",
                                               "metrics": ["map:voc", "p@100:zse"], "fine_grained_metrics": ["acc@1"]}
