"""The pure metric functions against sklearn and plain per-query references (ties included)."""

from __future__ import annotations

import math

import eval_reference as ref
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sbirkit.eval import metrics as M


def _ranked(dist: np.ndarray, rel: np.ndarray):
    return M.rank_relevant(torch.from_numpy(dist), torch.from_numpy(rel))


def _block(draw_seed: int, rows: int, cols: int, levels: int):
    rng = np.random.default_rng(draw_seed)
    dist = rng.integers(0, levels, size=(rows, cols)).astype(np.float32)  # integer scores: ties
    rel = rng.random((rows, cols)) < rng.uniform(0.05, 0.6)
    rel[0] = False  # one query with no relevant item
    return dist, rel


@pytest.mark.parametrize("levels", [2, 5, 1000])
@pytest.mark.parametrize("seed", range(3))
def test_average_precision_equals_sklearn_with_ties(seed, levels):
    dist, rel = _block(seed, rows=9, cols=57, levels=levels)
    ap = M.average_precision(_ranked(dist, rel)).numpy()
    expected = np.array([ref.ap_sklearn(d, r) for d, r in zip(dist, rel)])
    assert np.isnan(ap[0]) and np.isnan(expected[0])
    np.testing.assert_allclose(ap, expected, atol=1e-6, rtol=0)
    if levels == 2:  # the tie-grouped value differs from a position-based AP here
        positional = np.array([ref.map_at_k_standard(d, r, 57) for d, r in zip(dist, rel)])
        assert np.nanmax(np.abs(positional - expected)) > 1e-3


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.int8, st.tuples(st.integers(1, 4), st.integers(1, 30)), elements=st.integers(0, 3)),
    st.integers(0, 2**31 - 1),
)
def test_average_precision_property_matches_sklearn(scores, seed):
    rel = np.random.default_rng(seed).random(scores.shape) < 0.4
    dist = scores.astype(np.float64)
    ap = M.average_precision(_ranked(dist, rel)).numpy()
    expected = np.array([ref.ap_sklearn(d, r) for d, r in zip(dist, rel)])
    np.testing.assert_allclose(ap, expected, atol=1e-6, rtol=0)
    voc = M.average_precision(_ranked(dist, rel), interpolation="voc").numpy()
    expected_voc = np.array([ref.ap_threshold_groups(d, r, voc=True) for d, r in zip(dist, rel)])
    np.testing.assert_allclose(voc, expected_voc, atol=1e-6, rtol=0)
    assert np.all(voc[~np.isnan(voc)] >= ap[~np.isnan(ap)] - 1e-6)  # the envelope only raises


def test_average_precision_does_not_depend_on_tied_order():
    dist = torch.tensor([[0.0, 1.0, 1.0, 1.0, 2.0]])
    a = torch.tensor([[True, True, False, False, True]])
    b = torch.tensor([[True, False, False, True, True]])  # same tie group, other order
    ap_a = M.average_precision(M.rank_relevant(dist, a))
    ap_b = M.average_precision(M.rank_relevant(dist, b))
    assert torch.equal(ap_a, ap_b)
    # thresholds 0, 1, 2: (1/3)*1 + (1/3)*(2/4) + (1/3)*(3/5)
    assert ap_a.item() == pytest.approx((1 + 0.5 + 0.6) / 3, abs=1e-7)


def test_voc_interpolation_matches_threshold_reference_without_ties():
    rng = np.random.default_rng(7)
    dist = rng.random((6, 40))
    rel = rng.random((6, 40)) < 0.3
    voc = M.average_precision(_ranked(dist, rel), interpolation="voc").numpy()
    expected = [ref.ap_threshold_groups(d, r, voc=True) for d, r in zip(dist, rel)]
    np.testing.assert_allclose(voc, expected, atol=1e-6)
    # with no ties the per-threshold VOC AP equals SAKE's VOC AP over the whole ranking
    sake_all = [ref.map_at_k_sake(d, r, 40) for d, r in zip(dist, rel)]
    np.testing.assert_allclose(voc, sake_all, atol=1e-6)


def test_map_at_k_conventions_on_a_hand_example():
    # ranked relevance 0, 1, 1, 0 with 2 relevant in all: P@2 = 1/2, P@3 = 2/3
    ranked = M.rank_relevant(torch.tensor([[0.0, 1.0, 2.0, 3.0]]),
                             torch.tensor([[False, True, True, False]]))
    got = {c: M.average_precision_at_k(ranked, 3, convention=c).item()
           for c in M.MAP_AT_K_CONVENTIONS}
    assert got["standard"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got["yelamarthi"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert got["sake"] == pytest.approx(2 / 3)  # envelope lifts P at recall 1/2 to 2/3


@pytest.mark.parametrize("k", [1, 3, 10, 57, 200])
@pytest.mark.parametrize("convention", ["sake", "yelamarthi", "standard"])
def test_map_at_k_matches_reference(k, convention):
    dist, rel = _block(11, rows=12, cols=57, levels=6)
    got = M.average_precision_at_k(_ranked(dist, rel), k, convention=convention).numpy()
    fn = {"sake": ref.map_at_k_sake, "yelamarthi": ref.map_at_k_yelamarthi,
          "standard": ref.map_at_k_standard}[convention]
    expected = np.array([fn(d, r, k) for d, r in zip(dist, rel)])
    assert np.isnan(got[0]) and np.isnan(expected[0])  # no relevant item: undefined, not 0
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("k", [1, 5, 57, 100])
def test_precision_at_k_matches_reference(k):
    dist, rel = _block(3, rows=10, cols=57, levels=4)
    got = M.precision_at_k(_ranked(dist, rel), k).numpy()
    expected = [ref.precision_at(d, r, k) for d, r in zip(dist, rel)]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got[0] == 0.0  # defined (0) for the query with no relevant item


def test_top_k_ties_count_against_the_query():
    dist = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    rel = torch.tensor([[True, True, False, False], [False, True, True, False]])
    ranked = M.rank_relevant(dist, rel)
    # item 3 first; in the tie the non-relevant item comes before the two relevant ones,
    # whatever the gallery order
    assert M.precision_at_k(ranked, 2).tolist() == [0.0, 0.0]
    assert M.precision_at_k(ranked, 3).tolist() == pytest.approx([1 / 3, 1 / 3])
    assert M.average_precision_at_k(ranked, 4, convention="standard").tolist() == pytest.approx(
        [(1 / 3 + 2 / 4) / 2] * 2)


def test_true_match_rank_counts_ties_against_the_query():
    dist = torch.tensor([[0.5, 0.5, 0.2, 0.9], [0.1, 0.3, 0.3, 0.3], [0.4, 0.1, 0.2, 0.3]])
    true = torch.tensor([[False, True, False, False], [False, False, False, False],
                         [True, False, True, False]])
    ranks = M.true_match_rank(dist, true)
    assert ranks.tolist() == [3, 0, 2]  # tie with item 0 counts; no true item -> 0; best true
    acc1 = M.accuracy_at_k(ranks, 1)
    acc3 = M.accuracy_at_k(ranks, 3)
    assert acc1[0] == 0 and math.isnan(acc1[1]) and acc1[2] == 0
    assert acc3[0] == 1 and math.isnan(acc3[1]) and acc3[2] == 1


def test_true_match_rank_matches_reference():
    rng = np.random.default_rng(5)
    dist = rng.integers(0, 4, size=(15, 30)).astype(np.float32)
    true = rng.random((15, 30)) < 0.06
    ranks = M.true_match_rank(torch.from_numpy(dist), torch.from_numpy(true))
    for k in (1, 2, 5, 30):
        got = M.accuracy_at_k(ranks, k).numpy()
        expected = [ref.acc_at(d, t, k) for d, t in zip(dist, true)]
        np.testing.assert_array_equal(got, expected)


def test_mean_and_class_mean_count_undefined_queries():
    values = torch.tensor([1.0, 0.5, float("nan"), 0.0, 0.2], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 2])
    mean, undefined = M.mean_defined(values)
    assert mean == pytest.approx(1.7 / 4) and undefined == 1
    per_class, undefined = M.class_mean(values, labels)
    assert per_class == pytest.approx((0.75 + 0.1) / 2) and undefined == 1  # class 1 left out
    assert math.isnan(M.mean_defined(torch.tensor([float("nan")]))[0])


def test_bad_arguments_are_named():
    ranked = M.rank_relevant(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="convention"):
        M.average_precision_at_k(ranked, 2, convention="trec")
    with pytest.raises(ValueError, match="k: expected"):
        M.precision_at_k(ranked, 0)
    with pytest.raises(ValueError, match="interpolation"):
        M.average_precision(ranked, interpolation="11pt")
    with pytest.raises(ValueError, match="shape"):
        M.rank_relevant(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="finite"):
        M.rank_relevant(torch.tensor([[0.0, float("nan")]]), torch.ones(1, 2, dtype=torch.bool))
