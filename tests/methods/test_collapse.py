"""Collapse monitors: effective rank, spread, modality cosine and gradient norms by hand; the
one-line warning below a third of the starting rank (also after a resume); the protocol wrapper
adds the monitors to validation without changing what it scores."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sbirkit.engine.protocols import Protocol
from sbirkit.methods.collapse import (
    CollapseWatch,
    MonitoredProtocol,
    effective_rank,
    gradient_norms,
    mean_feature_cosine,
    mean_pairwise_distance,
)


def test_effective_rank_by_hand():
    # orthonormal rows: equal singular values, rank = n
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0)
    # every row along one direction (any lengths): rank 1
    assert effective_rank(torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.5, 0.0]])) == pytest.approx(1.0)
    # rows normalised first: singular values of [[1, 0], [0, 1], [0, 1]] are sqrt(2) and 1
    s = torch.tensor([math.sqrt(2.0), 1.0])
    p = s / s.sum()
    expected = math.exp(-float((p * p.log()).sum()))
    assert effective_rank(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 5.0]])) == pytest.approx(expected)
    assert math.isnan(effective_rank(torch.zeros(0, 3)))


def test_spread_and_modality_cosine_by_hand():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # distances: sqrt 2, 2, sqrt 2
    assert mean_pairwise_distance(e) == pytest.approx((2 * math.sqrt(2.0) + 2.0) / 3)
    assert mean_pairwise_distance(torch.ones(4, 3)) == pytest.approx(0.0)
    assert math.isnan(mean_pairwise_distance(torch.ones(1, 3)))
    sketches = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # mean (1, 1)
    photos = torch.tensor([[2.0, 0.0], [0.0, 0.0]])  # mean (1, 0)
    assert mean_feature_cosine(sketches, photos) == pytest.approx(1 / math.sqrt(2.0))


def test_gradient_norms_by_hand():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    other = nn.Parameter(torch.tensor([3.0]))
    terms = {"a": (w * torch.tensor([3.0, 4.0])).sum(), "b": (other * 2).sum(), "c": torch.tensor(1.0)}
    out = gradient_norms(terms, [w])
    assert out == {"a": pytest.approx(5.0), "b": 0.0, "c": 0.0}
    assert math.isnan(gradient_norms({"a": (w * 2).sum()}, [])["a"])


def test_collapse_watch_warns_below_a_third_of_the_start_and_recovers_the_start_from_the_log(tmp_path):
    watch = CollapseWatch()
    assert watch.check(12.0, step=0) is None  # the start
    assert watch.check(4.5, step=100) is None
    message = watch.check(3.9, step=200)
    assert message is not None and "\n" not in message
    assert "step 200" in message and "3.90" in message and "12.00" in message
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"step": 0, "split": "val", "monitor/effective_rank": 12.0}) + "\n"
                   + json.dumps({"step": 100, "split": "val", "monitor/effective_rank": 9.0}) + "\n")
    resumed = CollapseWatch(log=log)
    assert resumed.check(3.0, step=300) is not None and resumed.start == 12.0
    assert CollapseWatch().check(float("nan")) is None


class _Fixed(Protocol):
    name = "fixed"

    def validate(self, evaluator, split, ev):
        return {"sketch2photo/acc@1": 0.5}


def test_monitored_protocol_adds_monitors_and_a_warning_line():
    ranks = iter([10.0, 2.0])
    protocol = MonitoredProtocol(_Fixed({"name": "x"}), lambda ev, split: {"effective_rank": next(ranks),
                                                                            "value/outer": 0.1},
                                 CollapseWatch(), step=lambda: 7)
    first = protocol.validate(None, "val", None)
    assert first == {"sketch2photo/acc@1": 0.5, "monitor/effective_rank": 10.0, "monitor/value/outer": 0.1}
    with pytest.warns(UserWarning, match="feature collapse"):
        second = protocol.validate(None, "val", None)
    assert second["sketch2photo/acc@1"] == 0.5 and "step 7" in second["warning"]
    assert protocol.metric_names(["sketch2photo"], True) == _Fixed({}).metric_names(["sketch2photo"], True)
