"""Tie policies: ``expected`` is the mean over random orders inside ties (every tie order on small
cases, 20,000 sampled orders on larger tie-heavy ones, of the metric with the ties shuffled),
``optimistic >= expected >= pessimistic`` everywhere, and all three equal the tie-free values when
nothing ties; then the peer conventions on hand-computed cases."""

from __future__ import annotations

import itertools
import math

import eval_reference as ref
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from sbirkit.eval import metrics as M
from sbirkit.eval import ties as T
from sbirkit.eval.metric_names import parse_metric
from sbirkit.eval.retrieval import score_metric

# every ranked metric, by (function, keyword arguments); K small enough to cut through ties
RANKED = {
    "map": (M.average_precision, {}),
    "map:voc": (M.average_precision, {"interpolation": "voc"}),
    "map:sklearn": (M.average_precision, {"interpolation": "sklearn"}),
    "map@3:sake": (M.average_precision_at_k, {"k": 3, "convention": "sake"}),
    "map@3:standard": (M.average_precision_at_k, {"k": 3, "convention": "standard"}),
    "map@3:yelamarthi": (M.average_precision_at_k, {"k": 3, "convention": "yelamarthi"}),
    "map@3:sem-pcyc": (M.average_precision_at_k, {"k": 3, "convention": "sem-pcyc"}),
    "p@2": (M.precision_at_k, {"k": 2}),
    "p@3:zse": (M.precision_at_k, {"k": 3, "convention": "zse"}),
    "p@4:doodle2search": (M.precision_at_k, {"k": 4, "convention": "doodle2search"}),
}
SAMPLED = {"map:voc", "map@3:sake"}  # no closed form: estimated from random tie orders


def _value(name, dist, rel, ties, samples=T.TIE_SAMPLES, variance=False):
    fn, kw = RANKED[name]
    ranked = M.rank_relevant(torch.as_tensor(dist), torch.as_tensor(rel))
    extra = {"samples": samples, "return_variance": True} if fn is not M.precision_at_k else {}
    out = fn(ranked, ties=ties, **kw, **extra)
    values, var = out if isinstance(out, tuple) else (out, torch.zeros_like(out))
    return (values.numpy(), var.numpy()) if variance else values.numpy()


def _all_orders_mean(name, dist, rel):
    """Mean over every permutation of the gallery (a stable sort then orders each tie that way,
    each tie order equally often) of the metric at that order."""
    values = []
    for perm in itertools.permutations(range(len(dist))):
        tiebreak = np.empty(len(dist))
        tiebreak[list(perm)] = np.arange(len(dist))
        values.append(ref.per_query(name, dist, rel, None, "order", tiebreak))
    return np.mean(values)


HAND_CASES = [  # (distances, relevance): small enough to enumerate every order
    ([0.0, 1.0, 1.0, 1.0, 2.0], [1, 1, 0, 0, 1]),
    ([1.0, 1.0, 1.0, 0.0], [1, 1, 0, 0]),
    ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0, 1, 0, 0, 1, 0]),
    ([2.0, 1.0, 1.0, 2.0, 1.0, 2.0], [1, 0, 1, 1, 0, 0]),
    ([0.5, 0.5, 0.7, 0.7, 0.7], [0, 1, 1, 0, 1]),
]


@pytest.mark.parametrize("case", range(len(HAND_CASES)))
def test_expected_equals_the_mean_over_every_tie_order(case):
    dist = np.array(HAND_CASES[case][0])
    rel = np.array(HAND_CASES[case][1], dtype=bool)
    for name in RANKED:
        exact = _all_orders_mean(name, dist, rel)
        if name in SAMPLED:
            got, var = _value(name, dist[None], rel[None], "expected", samples=20_000, variance=True)
            assert abs(got[0] - exact) <= 3 * math.sqrt(var[0]) + 1e-12, name
        else:
            assert _value(name, dist[None], rel[None], "expected")[0] == pytest.approx(exact, abs=1e-12), name


def test_expected_with_a_few_ties_among_many_distinct_distances():
    """Few tied items among many distinct distances (the closed form is then applied to the tied
    items alone; tie-heavy rows take a per-group path, checked above): every order of the two tie
    groups, averaged, gives the expected value."""
    rng = np.random.default_rng(7)
    dist = rng.permutation(60).astype(np.float64)[None].repeat(2, axis=0)
    rel = np.zeros((2, 60), dtype=bool)
    rel[:, ::2] = True  # 30 relevant items per row
    first, second = [0, 1, 3, 5], [10, 11, 13]  # one relevant item in each group
    dist[0, first] = dist[0, 0]
    dist[0, second] = 25.5
    orders = []
    for a in itertools.permutations(first):
        for b in itertools.permutations(second):
            tiebreak = np.arange(60, dtype=np.float64)
            tiebreak[first], tiebreak[second] = tiebreak[list(a)], tiebreak[list(b)]
            orders.append(tiebreak)
    ranked = M.rank_relevant(torch.from_numpy(dist), torch.from_numpy(rel))
    for name in ("map", "map@20:standard", "map@20:yelamarthi", "map@20:sem-pcyc", "p@20", "p@25:zse"):
        got = score_metric(parse_metric(name), ranked, "expected")[0].numpy()
        exact = np.mean([ref.per_query(name, dist[0], rel[0], None, "order", o) for o in orders])
        assert got[0] == pytest.approx(exact, abs=1e-12), name
        assert got[1] == pytest.approx(ref.per_query(name, dist[1], rel[1], None), abs=1e-12), name
    tied = ranked.at_or_below - ranked.below > 1
    assert 0 < int(tied.sum()) * 8 < tied[:, :30].numel()  # the sparse path was taken


def test_a_hand_computed_expected_value():
    # ranks 1 and 5 fixed; the tie's one relevant item at rank 2, 3 or 4 with probability 1/3 each
    dist, rel = np.array([[0.0, 1.0, 1.0, 1.0, 2.0]]), np.array([[1, 1, 0, 0, 1]], dtype=bool)
    assert _value("map", dist, rel, "expected")[0] == pytest.approx((1 + (1 + 2 / 3 + 2 / 4) / 3 + 3 / 5) / 3)
    assert _value("map", dist, rel, "pessimistic")[0] == pytest.approx((1 + 2 / 4 + 3 / 5) / 3)
    assert _value("map", dist, rel, "optimistic")[0] == pytest.approx((1 + 2 / 2 + 3 / 5) / 3)
    assert _value("p@2", dist, rel, "expected")[0] == pytest.approx((1 + 1 / 3) / 2)


def _tie_heavy(seed, rows, cols, levels):
    rng = np.random.default_rng(seed)
    dist = rng.integers(0, levels, size=(rows, cols)).astype(np.float64)
    rel = rng.random((rows, cols)) < rng.uniform(0.1, 0.6, size=(rows, 1))
    rel[0] = False
    return dist, rel


def _sampled_reference(dist_row, rel_row, samples, seed):
    """Per sample (tie order drawn uniformly by a random tiebreak), every metric of RANKED,
    computed from its definition, vectorised over the samples."""
    rng = np.random.default_rng(seed)
    n = len(dist_row)
    order = np.lexsort((rng.random((samples, n)), np.broadcast_to(dist_row, (samples, n))), axis=1)
    rel = rel_row[order].astype(np.float64)  # (samples, n) relevance in rank order
    d = np.sort(dist_row)  # the same distance at each rank in every sample
    npos = rel_row.sum()
    ranks = np.arange(1, n + 1)
    hits = np.cumsum(rel, axis=1)
    prec = hits / ranks
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["map"] = (prec * rel).sum(1) / npos
        env = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
        out["map:voc"] = (env * rel).sum(1) / npos
        out["map:sklearn"] = np.full(samples, ref.ap_sklearn(dist_row, rel_row))
        k = 3
        top, tprec = rel[:, :k], prec[:, :k]
        out["map@3:standard"] = (top * tprec).sum(1) / min(k, npos)
        out["map@3:yelamarthi"] = (top * tprec).sum(1) / k
        # the envelope of SAKE's VOCap over the top k only reaches relevant ranks within it
        tenv = np.where(top.any(1, keepdims=True), np.maximum.accumulate((tprec * top)[:, ::-1], axis=1)[:, ::-1], 0)
        out["map@3:sake"] = (tenv * top).sum(1) / min(k, npos)
        dk = d[:k]
        end = np.array([np.flatnonzero(dk == v).max() for v in dk])  # each rank's tie end in the list
        found = top.sum(1)
        grouped = (top * (hits[:, :k][:, end] / (end + 1))).sum(1)
        out["map@3:sem-pcyc"] = np.where(found > 0, grouped / np.maximum(found, 1), 0.0)
        out["p@2"] = rel[:, :2].sum(1) / min(2, n)
        cut = min(3, npos)
        out["p@3:zse"] = rel[:, :cut].sum(1) / cut if cut else np.full(samples, np.nan)
        out["p@4:doodle2search"] = rel[:, :4].sum(1) / min(npos, min(4, n))
    if npos == 0:
        out = {name: np.full(samples, np.nan) for name in out}
    return out


@pytest.mark.parametrize("seed,levels", [(0, 3), (1, 5), (2, 2)])
def test_expected_matches_20000_sampled_tie_orders(seed, levels):
    dist, rel = _tie_heavy(seed, rows=4, cols=24, levels=levels)
    samples = 20_000
    for i in range(1, len(dist)):
        reference = _sampled_reference(dist[i], rel[i], samples, seed=100 * seed + i)
        for name in RANKED:
            got, var = _value(name, dist[i:i + 1], rel[i:i + 1], "expected", samples=20_000, variance=True)
            mean, sd = reference[name].mean(), reference[name].std(ddof=1)
            se = math.sqrt(sd**2 / samples + var[0])  # the sampled VOC estimates carry their own error
            assert abs(got[0] - mean) <= 3 * se + 1e-12, (name, i, got[0], mean, se)


def test_sampled_reference_agrees_with_sklearn_on_the_sem_pcyc_list():
    # the vectorised reference above against sklearn itself, one order at a time
    dist, rel = _tie_heavy(9, rows=2, cols=12, levels=3)
    samples = 50
    vec = _sampled_reference(dist[1], rel[1], samples, seed=3)["map@3:sem-pcyc"]
    rng = np.random.default_rng(3)
    keys = rng.random((samples, 12))
    for s in range(samples):
        order = np.lexsort((keys[s], dist[1]))
        top = rel[1][order][:3]
        expected = average_precision_score(top.astype(int), -dist[1][order][:3]) if top.any() else 0.0
        assert vec[s] == pytest.approx(expected, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cols=st.integers(1, 30), levels=st.integers(1, 6))
def test_optimistic_at_least_expected_at_least_pessimistic(seed, cols, levels):
    dist, rel = _tie_heavy(seed, rows=4, cols=cols, levels=levels)
    for name in RANKED:
        lo, mid, hi = (_value(name, dist, rel, t, samples=50) for t in ("pessimistic", "expected", "optimistic"))
        defined = ~np.isnan(mid)
        assert np.array_equal(defined, ~np.isnan(lo)) and np.array_equal(defined, ~np.isnan(hi))
        assert np.all(lo[defined] <= mid[defined] + 1e-12), name
        assert np.all(mid[defined] <= hi[defined] + 1e-12), name
    ranked = M.rank_relevant(torch.from_numpy(dist), torch.from_numpy(rel))
    for k in (1, 2, 5):
        counts = [T.count_in_top(ranked, k, t) for t in ("pessimistic", "expected", "optimistic")]
        assert torch.all(counts[0] <= counts[1] + 1e-12) and torch.all(counts[1] <= counts[2] + 1e-12)


def test_without_ties_every_policy_gives_the_tie_free_value():
    rng = np.random.default_rng(4)
    dist = rng.random((6, 50))
    rel = rng.random((6, 50)) < 0.3
    rel[0] = False
    for name in RANKED:
        values = [_value(name, dist, rel, t) for t in M.TIE_POLICIES]
        reference = np.array([ref.per_query(name, d, r, None) for d, r in zip(dist, rel)])
        for v in values:
            np.testing.assert_array_equal(np.isnan(v), np.isnan(reference))
            np.testing.assert_allclose(v, reference, atol=1e-12, rtol=0, err_msg=name)
        # bit for bit the same numbers under every policy
        assert all(np.array_equal(v, values[0], equal_nan=True) for v in values), name


def test_sampled_estimates_report_their_error_and_exactness():
    # mixed ties: a positive error; ties that are all relevant or all not: exact, no error
    dist = np.array([[0.0, 1.0, 1.0, 1.0, 2.0], [0.0, 1.0, 1.0, 2.0, 2.0]])
    rel = np.array([[1, 1, 0, 0, 1], [1, 1, 1, 0, 0]], dtype=bool)
    values, var = _value("map:voc", dist, rel, "expected", samples=200, variance=True)
    assert var[0] > 0 and var[1] == 0
    assert values[1] == pytest.approx(1.0)
    again, _ = _value("map:voc", dist, rel, "expected", samples=200, variance=True)
    assert np.array_equal(values, again)  # seeded


# ---- the peer conventions, each on a case computed by hand from its definition ---------------------

def _one(dist, rel):
    return M.rank_relevant(torch.tensor([dist], dtype=torch.float64), torch.tensor([rel], dtype=torch.bool))


def test_sem_pcyc_map_at_k_is_ap_of_the_top_k_list_normalised_by_its_hits():
    # ranking: rel 0, 1, 0, 1, 1 (3 relevant); the top 3 holds one hit, at rank 2: AP 1/2
    ranked = _one([0.1, 0.2, 0.3, 0.4, 0.5], [0, 1, 0, 1, 1])
    assert M.average_precision_at_k(ranked, 3, convention="sem-pcyc").item() == pytest.approx(1 / 2)
    assert M.average_precision_at_k(ranked, 3, convention="standard").item() == pytest.approx(1 / 2 / 3)
    assert M.average_precision_at_k(ranked, 3, convention="yelamarthi").item() == pytest.approx(1 / 2 / 3)
    # no hit in the top 1: 0 (defined), while a query with no relevant item at all is undefined
    assert M.average_precision_at_k(ranked, 1, convention="sem-pcyc").item() == 0.0
    assert math.isnan(M.average_precision_at_k(_one([0.1, 0.2], [0, 0]), 1, convention="sem-pcyc").item())
    # a tie inside the list is one threshold (sklearn): ranks 1-2 tied, one of them relevant
    tied = _one([0.1, 0.1, 0.3, 0.4], [0, 1, 1, 0])
    assert M.average_precision_at_k(tied, 3, convention="sem-pcyc").item() == pytest.approx((1 / 2 + 2 / 3) / 2)
    # a tie cut by rank 2: items 2-4 tied, two relevant; h relevant enter with P(h=0)=1/3, P(h=1)=2/3;
    # h=0: AP 1; h=1: (1 + 2/2)/2 = 1 (one threshold at rank 2 holding 2 hits of 2)
    cut = _one([0.0, 0.5, 0.5, 0.5], [1, 1, 0, 1])
    for ties in M.TIE_POLICIES:
        assert M.average_precision_at_k(cut, 2, convention="sem-pcyc", ties=ties).item() == pytest.approx(1.0)
    cut = _one([0.0, 0.5, 0.5, 0.5], [0, 1, 0, 1])  # h=0: 0 hits -> 0; h=1: one hit at rank 2 -> 1/2
    got = {t: M.average_precision_at_k(cut, 2, convention="sem-pcyc", ties=t).item() for t in M.TIE_POLICIES}
    assert got == pytest.approx({"pessimistic": 0.0, "expected": 2 / 3 * 1 / 2, "optimistic": 1 / 2})


def test_sem_pcyc_pessimistic_is_the_least_value_even_when_more_hits_lower_it():
    # rank 1 relevant (P=1); ranks 2-3 tied, one relevant: with it in the top 2 the hit-normalised AP
    # is (1 + 2/2)/2 = 1 as well -- use rank 1 relevant, ranks 2-4 tied with 1 relevant of 3, K=3:
    # h=0: AP 1; h=1: the tie is one threshold at rank 3 with 2 hits: (1 + 2/3)/2 = 5/6
    ranked = _one([0.0, 0.5, 0.5, 0.5], [1, 0, 1, 0])
    got = {t: M.average_precision_at_k(ranked, 3, convention="sem-pcyc", ties=t).item() for t in M.TIE_POLICIES}
    # h = 0 with probability C(2,2)/C(3,2) = 1/3, h = 1 with 2/3
    assert got == pytest.approx({"pessimistic": 5 / 6, "expected": 1 / 3 + 2 / 3 * 5 / 6, "optimistic": 1.0})


def test_zse_precision_uses_the_top_min_k_relevant():
    ranked = _one([0.1, 0.2, 0.3, 0.4, 0.5], [0, 1, 0, 1, 1])  # 3 relevant
    assert M.precision_at_k(ranked, 5, convention="zse").item() == pytest.approx(1 / 3)  # P@3
    assert M.precision_at_k(ranked, 2, convention="zse").item() == pytest.approx(1 / 2)  # P@2
    assert M.precision_at_k(ranked, 5).item() == pytest.approx(3 / 5)
    assert math.isnan(M.precision_at_k(_one([0.1, 0.2], [0, 0]), 2, convention="zse").item())


def test_doodle2search_precision_divides_by_min_k_relevant():
    ranked = _one([0.1, 0.2, 0.3, 0.4, 0.5], [0, 1, 0, 1, 1])  # 3 relevant
    assert M.precision_at_k(ranked, 2, convention="doodle2search").item() == pytest.approx(1 / 2)
    assert M.precision_at_k(ranked, 4, convention="doodle2search").item() == pytest.approx(2 / 3)
    assert M.precision_at_k(ranked, 5, convention="doodle2search").item() == pytest.approx(1.0)
    short = _one([0.1, 0.2], [1, 0])  # the list is the whole gallery: min(1 relevant, 2 shown)
    assert M.precision_at_k(short, 100, convention="doodle2search").item() == pytest.approx(1.0)


def test_no_relevant_rule_excludes_or_scores_zero():
    values = torch.tensor([1.0, 0.5, float("nan"), 0.0], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    assert M.mean_defined(values, "exclude") == (pytest.approx(0.5), 1)
    assert M.mean_defined(values, "zero") == (pytest.approx(1.5 / 4), 1)
    assert M.class_mean(values, labels, "exclude") == (pytest.approx((0.75 + 0.0) / 2), 1)
    assert M.class_mean(values, labels, "zero") == (pytest.approx((0.75 + 0.0) / 2), 1)
    weights = M.mean_weights(values, labels, "exclude")
    assert weights.tolist() == pytest.approx([0.25, 0.25, 0.0, 0.5])


# ---- Acc@K (fine-grained: the first true item within K) ------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_expected_accuracy_is_the_mean_over_every_and_over_20000_sampled_tie_orders(seed):
    rng = np.random.default_rng(seed)
    dist = rng.integers(0, 3, size=(6, 6)).astype(np.float64)  # small: every order of the gallery
    true = rng.random((6, 6)) < 0.35
    true[0] = False
    match = M.true_match(torch.from_numpy(dist), torch.from_numpy(true))
    for k in (1, 2, 3):
        got = M.accuracy_at_k(match, k, "expected").numpy()
        assert math.isnan(got[0])
        for i in range(1, 6):
            if not true[i].any():
                continue
            values = []
            for perm in itertools.permutations(range(6)):
                tiebreak = np.empty(6)
                tiebreak[list(perm)] = np.arange(6)
                values.append(ref.acc_at(dist[i], true[i], k, "order", tiebreak))
            assert got[i] == pytest.approx(np.mean(values), abs=1e-12), (i, k)
    dist = rng.integers(0, 4, size=(5, 40)).astype(np.float64)  # larger: 20,000 sampled orders
    true = rng.random((5, 40)) < 0.1
    true[:, 0] = True
    match = M.true_match(torch.from_numpy(dist), torch.from_numpy(true))
    samples = 20_000
    for i in range(5):
        order = np.lexsort((rng.random((samples, 40)), np.broadcast_to(dist[i], (samples, 40))), axis=1)
        first = np.argmax(true[i][order], axis=1) + 1  # rank of the first true item, per order
        for k in (1, 5, 12):
            hits = (first <= k).astype(np.float64)
            got = M.accuracy_at_k(match, k, "expected")[i].item()
            se = hits.std(ddof=1) / math.sqrt(samples)
            assert abs(got - hits.mean()) <= 3 * se + 1e-12, (i, k, got, hits.mean())


def test_accuracy_without_ties_is_the_same_under_every_policy():
    rng = np.random.default_rng(3)
    dist = rng.random((8, 30))
    true = rng.random((8, 30)) < 0.1
    match = M.true_match(torch.from_numpy(dist), torch.from_numpy(true))
    for k in (1, 3, 10):
        reference = np.array([ref.acc_at(d, t, k) for d, t in zip(dist, true)])
        for ties in M.TIE_POLICIES:
            np.testing.assert_array_equal(M.accuracy_at_k(match, k, ties).numpy(), reference)
