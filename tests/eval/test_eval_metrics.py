"""The pure metric functions against sklearn and plain per-query references (ties included,
under the fixed tie orders; tests/eval/test_eval_ties.py checks ``expected``)."""

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
def test_sklearn_convention_equals_sklearn_with_ties(seed, levels):
    dist, rel = _block(seed, rows=9, cols=57, levels=levels)
    for ties in M.TIE_POLICIES:  # one threshold per tie: no tie order matters
        ap = M.average_precision(_ranked(dist, rel), interpolation="sklearn", ties=ties).numpy()
        expected = np.array([ref.ap_sklearn(d, r) for d, r in zip(dist, rel)])
        assert np.isnan(ap[0]) and np.isnan(expected[0])
        np.testing.assert_allclose(ap, expected, atol=1e-6, rtol=0)
    if levels == 2:  # the tie-grouped value differs from the position-based AP here
        for ties in ("pessimistic", "optimistic"):
            positional = M.average_precision(_ranked(dist, rel), ties=ties).numpy()
            reference = np.array([ref.map_positional(d, r, ties) for d, r in zip(dist, rel)])
            np.testing.assert_allclose(positional, reference, atol=1e-12, rtol=0)
            assert np.nanmax(np.abs(positional - expected)) > 1e-3


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.int8, st.tuples(st.integers(1, 4), st.integers(1, 30)), elements=st.integers(0, 3)),
    st.integers(0, 2**31 - 1),
)
def test_average_precision_property_matches_references(scores, seed):
    rel = np.random.default_rng(seed).random(scores.shape) < 0.4
    dist = scores.astype(np.float64)
    ap = M.average_precision(_ranked(dist, rel), interpolation="sklearn").numpy()
    expected = np.array([ref.ap_sklearn(d, r) for d, r in zip(dist, rel)])
    np.testing.assert_allclose(ap, expected, atol=1e-6, rtol=0)
    for ties in ("pessimistic", "optimistic"):
        ap = M.average_precision(_ranked(dist, rel), ties=ties).numpy()
        expected = np.array([ref.map_positional(d, r, ties) for d, r in zip(dist, rel)])
        np.testing.assert_allclose(ap, expected, atol=1e-12, rtol=0)
        voc = M.average_precision(_ranked(dist, rel), interpolation="voc", ties=ties).numpy()
        expected_voc = np.array([ref.map_voc(d, r, ties) for d, r in zip(dist, rel)])
        np.testing.assert_allclose(voc, expected_voc, atol=1e-12, rtol=0)
        assert np.all(voc[~np.isnan(voc)] >= ap[~np.isnan(ap)] - 1e-12)  # the envelope only raises


def test_average_precision_does_not_depend_on_gallery_order():
    dist = torch.tensor([[0.0, 1.0, 1.0, 1.0, 2.0]])
    a = torch.tensor([[True, True, False, False, True]])
    b = torch.tensor([[True, False, False, True, True]])  # same tie group, other gallery order
    for interpolation in M.INTERPOLATIONS:
        for ties in M.TIE_POLICIES:
            kw = {"interpolation": interpolation, "ties": ties}
            assert torch.equal(M.average_precision(M.rank_relevant(dist, a), **kw),
                               M.average_precision(M.rank_relevant(dist, b), **kw))
    # sklearn, thresholds 0, 1, 2: (1/3)*1 + (1/3)*(2/4) + (1/3)*(3/5)
    ap = M.average_precision(M.rank_relevant(dist, a), interpolation="sklearn")
    assert ap.item() == pytest.approx((1 + 0.5 + 0.6) / 3, abs=1e-12)
    # ranks 1 and 5 fixed; the tied relevant item at rank 2, 3 or 4 with probability 1/3 each:
    # (1 + (2/2 + 2/3 + 2/4) / 3 + 3/5) / 3
    expected = M.average_precision(M.rank_relevant(dist, a), ties="expected")
    assert expected.item() == pytest.approx((1 + (1 + 2 / 3 + 1 / 2) / 3 + 0.6) / 3, abs=1e-12)


def test_voc_interpolation_matches_threshold_reference_without_ties():
    rng = np.random.default_rng(7)
    dist = rng.random((6, 40))
    rel = rng.random((6, 40)) < 0.3
    for ties in M.TIE_POLICIES:
        voc = M.average_precision(_ranked(dist, rel), interpolation="voc", ties=ties).numpy()
        expected = [ref.ap_threshold_groups(d, r, voc=True) for d, r in zip(dist, rel)]
        np.testing.assert_allclose(voc, expected, atol=1e-12)
        # with no ties the per-threshold VOC AP equals SAKE's VOC AP over the whole ranking
        sake_all = [ref.map_at_k_sake(d, r, 40) for d, r in zip(dist, rel)]
        np.testing.assert_allclose(voc, sake_all, atol=1e-12)


def test_map_at_k_conventions_on_a_hand_example():
    # ranked relevance 0, 1, 1, 0 with 2 relevant in all: P@2 = 1/2, P@3 = 2/3
    ranked = M.rank_relevant(torch.tensor([[0.0, 1.0, 2.0, 3.0]]),
                             torch.tensor([[False, True, True, False]]))
    got = {c: M.average_precision_at_k(ranked, 3, convention=c).item()
           for c in M.MAP_AT_K_CONVENTIONS}
    assert got["standard"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got["yelamarthi"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert got["sake"] == pytest.approx(2 / 3)  # envelope lifts P at recall 1/2 to 2/3
    assert got["sem-pcyc"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # both relevant items are in the top 3


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("k", [1, 3, 10, 57, 200])
@pytest.mark.parametrize("convention", ["sake", "yelamarthi", "standard", "sem-pcyc"])
def test_map_at_k_matches_reference(k, convention, ties):
    dist, rel = _block(11, rows=12, cols=57, levels=6)
    got = M.average_precision_at_k(_ranked(dist, rel), k, convention=convention, ties=ties).numpy()
    fn = {"sake": ref.map_at_k_sake, "yelamarthi": ref.map_at_k_yelamarthi,
          "standard": ref.map_at_k_standard, "sem-pcyc": ref.map_at_k_sem_pcyc}[convention]
    expected = np.array([fn(d, r, k, ties) for d, r in zip(dist, rel)])
    assert np.isnan(got[0]) and np.isnan(expected[0])  # no relevant item: undefined, not 0
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("convention", ["standard", "zse", "doodle2search"])
@pytest.mark.parametrize("k", [1, 5, 57, 100])
def test_precision_at_k_matches_reference(k, convention, ties):
    dist, rel = _block(3, rows=10, cols=57, levels=4)
    got = M.precision_at_k(_ranked(dist, rel), k, convention=convention, ties=ties).numpy()
    fn = {"standard": ref.precision_at, "zse": ref.precision_zse,
          "doodle2search": ref.precision_doodle2search}[convention]
    expected = [fn(d, r, k, ties) for d, r in zip(dist, rel)]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    if convention == "standard":
        assert got[0] == 0.0  # defined (0) for the query with no relevant item
    else:
        assert np.isnan(got[0])  # ZSE and Doodle2Search divide by #relevant: undefined


def test_top_k_ties_under_each_policy():
    dist = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    rel = torch.tensor([[True, True, False, False], [False, True, True, False]])
    ranked = M.rank_relevant(dist, rel)
    # item 3 first, then a tie of three items, two of them relevant, whatever the gallery order
    p2 = {t: M.precision_at_k(ranked, 2, ties=t).tolist() for t in M.TIE_POLICIES}
    assert p2["pessimistic"] == [0.0, 0.0]  # the non-relevant one first inside the tie
    assert p2["optimistic"] == [0.5, 0.5]
    assert p2["expected"] == pytest.approx([1 / 3, 1 / 3])  # rank 2 is relevant with probability 2/3
    assert M.precision_at_k(ranked, 3, ties="pessimistic").tolist() == pytest.approx([1 / 3, 1 / 3])
    assert M.average_precision_at_k(ranked, 4, convention="standard", ties="pessimistic").tolist() == \
        pytest.approx([(1 / 3 + 2 / 4) / 2] * 2)
    assert M.average_precision_at_k(ranked, 4, convention="standard", ties="optimistic").tolist() == \
        pytest.approx([(1 / 2 + 2 / 3) / 2] * 2)
    # orders (rel at ranks 2,3), (2,4), (3,4) equally likely: mean of (1/2+2/3), (1/2+2/4), (1/3+2/4), over 2
    mean = ((1 / 2 + 2 / 3) + (1 / 2 + 2 / 4) + (1 / 3 + 2 / 4)) / 3 / 2
    assert M.average_precision_at_k(ranked, 4, convention="standard", ties="expected").tolist() == \
        pytest.approx([mean] * 2)


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
    match = M.true_match(dist, true)
    assert match.rank("optimistic").tolist() == [2, 0, 2]
    acc2 = {t: M.accuracy_at_k(match, 2, t)[0].item() for t in M.TIE_POLICIES}
    assert acc2 == {"pessimistic": 0.0, "optimistic": 1.0, "expected": 0.5}  # rank 2 or 3, equally likely


def test_expected_accuracy_with_several_true_items_in_a_tie():
    # four items tied at the top, two of them true: the best true one is first with probability
    # 1 - C(2,1)/C(4,1) = 1/2 and within 2 with probability 1 - C(2,2)/C(4,2) = 5/6
    dist = torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0]])
    true = torch.tensor([[True, False, True, False, False]])
    match = M.true_match(dist, true)
    assert M.accuracy_at_k(match, 1, "expected").item() == pytest.approx(0.5)
    assert M.accuracy_at_k(match, 2, "expected").item() == pytest.approx(5 / 6)
    assert M.accuracy_at_k(match, 3, "expected").item() == pytest.approx(1.0)
    assert match.rank("pessimistic").item() == 3 and match.rank("optimistic").item() == 1


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_true_match_rank_matches_reference(ties):
    rng = np.random.default_rng(5)
    dist = rng.integers(0, 4, size=(15, 30)).astype(np.float32)
    true = rng.random((15, 30)) < 0.06
    match = M.true_match(torch.from_numpy(dist), torch.from_numpy(true))
    for k in (1, 2, 5, 30):
        got = M.accuracy_at_k(match, k, ties).numpy()
        expected = [ref.acc_at(d, t, k, ties) for d, t in zip(dist, true)]
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
    with pytest.raises(ValueError, match="ties: expected one of"):
        M.average_precision(ranked, ties="random")
    with pytest.raises(ValueError, match="convention: expected one of"):
        M.precision_at_k(ranked, 2, convention="sake")
    with pytest.raises(ValueError, match="no_relevant"):
        M.mean_defined(torch.zeros(3), "drop")
    with pytest.raises(ValueError, match="below/relevant_below were not computed"):
        M.precision_at_k(M.rank_relevant(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool),
                                         with_below=False), 2, ties="optimistic")
    with pytest.raises(ValueError, match="shape"):
        M.rank_relevant(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="finite"):
        M.rank_relevant(torch.tensor([[0.0, float("nan")]]), torch.ones(1, 2, dtype=torch.bool))
