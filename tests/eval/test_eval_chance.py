"""Chance levels (``sbirkit.eval.chance``): exact against every ranking, and against the metric on
random embeddings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sbirkit.eval import evaluate_retrieval
from sbirkit.eval.chance import expected_ap, random_ranking_scores


def _average_precision(relevant: tuple[bool, ...]) -> float:
    """AP of one ranking, written out: the mean over the relevant ranks of the precision there."""
    hits = np.cumsum(relevant)
    return float(np.sum(hits[np.array(relevant)] / (np.nonzero(relevant)[0] + 1)) / hits[-1])


@pytest.mark.parametrize("relevant,gallery", [(1, 1), (1, 4), (2, 5), (3, 6), (6, 6), (4, 9)])
def test_expected_ap_is_the_mean_ap_over_every_ranking(relevant, gallery):
    rankings = {tuple(i in pos for i in range(gallery)) for pos in itertools.combinations(range(gallery), relevant)}
    exact = np.mean([_average_precision(r) for r in rankings])
    assert expected_ap(relevant, gallery) == pytest.approx(exact)


def test_expected_ap_is_above_the_relevant_fraction():
    # the Quick, Draw! -> CIFAR-10 benchmarks' gallery: 1,000 of 9,000 photos relevant (1/9 is 0.1111)
    assert expected_ap(1000, 9000) == pytest.approx(0.11197, abs=1e-5)
    assert expected_ap(5, 60) > 5 / 60 + 0.03


@pytest.mark.parametrize("relevant,gallery", [(0, 5), (6, 5), (-1, 3)])
def test_expected_ap_refuses_an_undefined_ap(relevant, gallery):
    with pytest.raises(ValueError, match="relevant"):
        expected_ap(relevant, gallery)


def test_random_ranking_scores_match_the_metric_on_random_embeddings():
    """4,500 random rankings through the evaluation engine land on the analytic E[AP] and E[P@k]."""
    gallery_labels = np.array([0] * 5 + [1] * 15 + [2] * 40)  # N = 60, R = 5 / 15 / 40
    query_labels = np.repeat([0, 1, 2], 1500)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((len(query_labels), 16)).astype(np.float32)
    gallery = rng.standard_normal((len(gallery_labels), 16)).astype(np.float32)
    want = random_ranking_scores(query_labels, gallery_labels, k=10)
    got = evaluate_retrieval(queries, gallery, query_labels, gallery_labels, metrics=["map", "p@10"])
    assert want["p@10"] == pytest.approx((5 + 15 + 40) / 3 / 60)  # mean R/N over the queries
    assert want["map"] == pytest.approx(np.mean([expected_ap(r, 60) for r in (5, 15, 40)]))
    assert got["map"] == pytest.approx(want["map"], abs=0.01)
    assert got["p@10"] == pytest.approx(want["p@10"], abs=0.01)
    assert (want["queries"], want["gallery"]) == (4500, 60)


def test_random_ranking_scores_leave_out_queries_without_a_relevant_item():
    scores = random_ranking_scores([0, 7], [0, 0, 1, 1], k=2)
    assert scores["map"] == pytest.approx(expected_ap(2, 4))  # class 7 has no gallery item: AP undefined
    assert scores["p@2"] == pytest.approx((0.5 + 0.0) / 2)  # but its P@k is 0
    with pytest.raises(ValueError, match="k=5"):
        random_ranking_scores([0], [0, 1], k=5)
    with pytest.raises(ValueError, match="empty"):
        random_ranking_scores([0], [])
