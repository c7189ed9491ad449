"""The blocked engine, the four directions, the stateful wrapper and the table, against plain
per-query references on small data built so that every distance is exact (and often tied)."""

from __future__ import annotations

import math

import eval_reference as ref
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sbirkit.data import DataError
from sbirkit.eval import (
    RetrievalMetric,
    evaluate_directions,
    evaluate_retrieval,
    format_table,
)

METRICS = (
    "map", "map:voc", "map:sklearn", "map@5:sake", "map@5:yelamarthi", "map@5:standard", "map@5:sem-pcyc",
    "map@500", "p@1", "p@10", "p@500", "p@10:zse", "p@10:doodle2search", "acc@1", "acc@3",
)


def tied_embeddings(rng: np.random.Generator, rows: int, distance: str) -> np.ndarray:
    """Cosine: 4 entries of +-1 in 8 dims (unit rows of +-0.5, dot products exact multiples of 1/4).
    Euclidean: integers in [-2, 2] in 4 dims (exact integer squared distances). Many ties."""
    if distance == "cosine":
        out = np.zeros((rows, 8), dtype=np.float32)
        for row in out:
            cols = rng.choice(8, size=4, replace=False)
            row[cols] = rng.choice([-1.0, 1.0], size=4)
        return out
    return rng.integers(-2, 3, size=(rows, 4)).astype(np.float32)


def make_case(seed: int, queries: int, gallery: int, distance: str, same_set: bool):
    rng = np.random.default_rng(seed)
    g_emb = tied_embeddings(rng, gallery, distance)
    g_lab = rng.integers(0, 4, size=gallery)
    g_inst = rng.integers(0, gallery // 2 + 1, size=gallery)
    if same_set:
        return g_emb, g_emb, g_lab, g_lab, g_inst, g_inst
    q_emb = tied_embeddings(rng, queries, distance)
    q_lab = rng.integers(0, 5, size=queries)  # class 4 is never in the gallery: undefined AP
    q_inst = rng.integers(0, gallery // 2 + 3, size=queries)  # some have no true item
    return q_emb, g_emb, q_lab, g_lab, q_inst, g_inst


def check_against_reference(case, distance, exclude_self, block_size, metrics=METRICS, ties="pessimistic"):
    q_emb, g_emb, q_lab, g_lab, q_inst, g_inst = case
    result = evaluate_retrieval(
        torch.from_numpy(q_emb), torch.from_numpy(g_emb), torch.from_numpy(q_lab),
        torch.from_numpy(g_lab), query_instances=torch.from_numpy(q_inst),
        gallery_instances=torch.from_numpy(g_inst), metrics=metrics, distance=distance,
        exclude_self=exclude_self, block_size=block_size, return_per_query=True, ties=ties,
    )
    expected = ref.evaluate(q_emb, g_emb, q_lab, g_lab, metrics, distance=distance,
                            exclude_self=exclude_self, q_inst=q_inst, g_inst=g_inst, ties=ties)
    assert result.ties == ties and result.tie_policy.startswith(ties)
    for m in metrics:
        got = result.per_query[m].numpy()
        np.testing.assert_allclose(got, expected[m], atol=1e-6, rtol=0, err_msg=m)
        mean, undefined = ref.mean_defined(expected[m])
        assert result.undefined[m] == undefined, m
        assert result.metrics[m] == pytest.approx(mean, abs=1e-6, nan_ok=True), m
    return result


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("block_size", [1, 7, None])
def test_engine_matches_reference_grid(distance, exclude_self, block_size, ties):
    case = make_case(1, queries=23, gallery=41, distance=distance, same_set=exclude_self)
    result = check_against_reference(case, distance, exclude_self, block_size, ties=ties)
    assert result.gallery_size == 41 - int(exclude_self)
    if not exclude_self:  # the grid really covers undefined queries
        assert result.undefined["map"] > 0 and result.undefined["acc@1"] > 0
        assert result.undefined["p@10"] == 0


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_engine_torch_backend_matches_reference(monkeypatch, exclude_self, ties):
    """The path GPUs take (torch.sort + torch.searchsorted), forced on CPU."""
    from sbirkit.eval import ranking

    monkeypatch.setattr(ranking, "_numpy_backend", lambda t: False)
    case = make_case(14, queries=21, gallery=37, distance="euclidean", same_set=exclude_self)
    check_against_reference(case, "euclidean", exclude_self, block_size=6, ties=ties)


def test_torch_backend_equals_numpy_backend_under_expected(monkeypatch):
    from sbirkit.eval import ranking

    case = make_case(15, queries=19, gallery=33, distance="cosine", same_set=False)
    q_emb, g_emb, q_lab, g_lab, q_inst, g_inst = case
    kwargs = {"query_instances": q_inst, "gallery_instances": g_inst, "metrics": METRICS, "block_size": 5,
              "ties": "expected", "return_per_query": True}
    fast = evaluate_retrieval(q_emb, g_emb, q_lab, g_lab, **kwargs)
    monkeypatch.setattr(ranking, "_numpy_backend", lambda t: False)
    slow = evaluate_retrieval(q_emb, g_emb, q_lab, g_lab, **kwargs)
    for m in METRICS:
        assert torch.equal(fast.per_query[m].nan_to_num(-1), slow.per_query[m].nan_to_num(-1)), m


def test_engine_matches_sklearn_directly():
    q_emb, g_emb, q_lab, g_lab, _, _ = make_case(2, 19, 33, "euclidean", same_set=False)
    result = evaluate_retrieval(q_emb, g_emb, q_lab, g_lab, metrics=["map:sklearn"], distance="euclidean",
                                block_size=4, return_per_query=True)
    full = ref.distances(q_emb, g_emb, "euclidean")
    expected = [ref.ap_sklearn(full[i], g_lab == q_lab[i]) for i in range(len(q_emb))]
    np.testing.assert_allclose(result.per_query["map:sklearn"].numpy(), expected, atol=1e-6)


def test_engine_on_continuous_float64_data():
    rng = np.random.default_rng(3)
    q, g = rng.standard_normal((17, 6)), rng.standard_normal((29, 6))
    g[5] = g[2]  # an exact duplicate: a tie in every row
    case = (q, g, rng.integers(0, 3, 17), rng.integers(0, 3, 29), rng.integers(0, 9, 17),
            rng.integers(0, 9, 29))
    for distance in ("cosine", "euclidean"):
        for ties in ("pessimistic", "optimistic"):
            check_against_reference(case, distance, exclude_self=False, block_size=5, ties=ties)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    queries=st.integers(1, 20),
    gallery=st.integers(2, 30),
    distance=st.sampled_from(["cosine", "euclidean"]),
    exclude_self=st.booleans(),
    block_size=st.integers(1, 25),
    ties=st.sampled_from(["pessimistic", "optimistic"]),
)
def test_engine_property_matches_reference(seed, queries, gallery, distance, exclude_self, block_size, ties):
    case = make_case(seed, queries, gallery, distance, same_set=exclude_self)
    check_against_reference(case, distance, exclude_self, block_size, ties=ties)


@pytest.mark.parametrize("ties", ["pessimistic", "expected", "optimistic"])
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_block_size_changes_no_value(distance, ties):
    rng = np.random.default_rng(4)
    q = torch.from_numpy(rng.standard_normal((37, 16)).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal((90, 16)).astype(np.float32))
    g[10:20] = g[0]  # duplicates give ties in every row
    q_lab, g_lab = rng.integers(0, 6, 37), rng.integers(0, 6, 90)
    q_inst, g_inst = rng.integers(0, 40, 37), rng.integers(0, 40, 90)
    runs = [
        evaluate_retrieval(q, g, q_lab, g_lab, query_instances=q_inst, gallery_instances=g_inst,
                           metrics=METRICS, distance=distance, block_size=b, return_per_query=True, ties=ties,
                           tie_samples=20)
        for b in (1, 5, 36, 37, 1000, None)
    ]
    # the sampled VOC estimates are seeded per query, so they too repeat exactly
    assert ties != "expected" or runs[0].tie_stderr
    for other in runs[1:]:
        assert other.metrics == runs[0].metrics
        for m in METRICS:
            assert torch.equal(other.per_query[m].nan_to_num(-1), runs[0].per_query[m].nan_to_num(-1))


def test_per_class_map_is_mean_of_class_means():
    case = make_case(6, 40, 50, "euclidean", same_set=False)
    q_emb, g_emb, q_lab, g_lab, _, _ = case
    q_lab = np.where(np.arange(40) < 25, 0, q_lab)  # class 0 dominates the queries
    metrics = ("map", "map@5:standard", "p@10")
    by_query = evaluate_retrieval(q_emb, g_emb, q_lab, g_lab, metrics=metrics, distance="euclidean",
                                  ties="pessimistic")
    by_class = evaluate_retrieval(q_emb, g_emb, q_lab, g_lab, metrics=metrics, distance="euclidean",
                                  average="class", ties="pessimistic")
    expected = ref.evaluate(q_emb, g_emb, q_lab, g_lab, metrics, distance="euclidean")
    for m in ("map", "map@5:standard"):
        assert by_class.metrics[m] == pytest.approx(ref.class_mean(expected[m], q_lab), abs=1e-6)
        assert abs(by_class.metrics[m] - by_query.metrics[m]) > 1e-4
    assert by_class.metrics["p@10"] == by_query.metrics["p@10"]  # P@K stays a per-query mean
    assert by_class.average == "class"


def test_string_labels_and_instances_equal_integer_ones():
    q_emb, g_emb, q_lab, g_lab, q_inst, g_inst = make_case(8, 15, 25, "cosine", same_set=False)
    names = np.array(["airplane", "cat", "dog", "shoe", "zebra"])
    a = evaluate_retrieval(q_emb, g_emb, q_lab, g_lab, query_instances=q_inst,
                           gallery_instances=g_inst, metrics=METRICS)
    b = evaluate_retrieval(q_emb, g_emb, list(names[q_lab]), list(names[g_lab]),
                           query_instances=[f"p{i}" for i in q_inst],
                           gallery_instances=[f"p{i}" for i in g_inst], metrics=METRICS)
    assert a.metrics == b.metrics
    # a missing instance id (None) matches nothing: that query's Acc@K is undefined
    c = evaluate_retrieval(q_emb, g_emb, q_lab, g_lab,
                           query_instances=[None] + [f"p{i}" for i in q_inst[1:]],
                           gallery_instances=[None] * 3 + [f"p{i}" for i in g_inst[3:]],
                           metrics=["acc@1"], return_per_query=True)
    assert math.isnan(c.per_query["acc@1"][0])


def test_four_directions():
    rng = np.random.default_rng(9)
    sk = tied_embeddings(rng, 21, "cosine")
    ph = tied_embeddings(rng, 13, "cosine")
    sk_lab, ph_lab = rng.integers(0, 3, 21), rng.integers(0, 3, 13)
    sk_inst, ph_inst = rng.integers(0, 13, 21), np.arange(13)
    metrics = ("map", "p@5")
    out = evaluate_directions(sk, sk_lab, ph, ph_lab, sketch_instances=sk_inst,
                              photo_instances=ph_inst, metrics=metrics,
                              fine_grained_metrics=("acc@1", "acc@5"), block_size=4, ties="pessimistic")
    assert list(out) == ["sketch2photo", "photo2sketch", "sketch2sketch", "photo2photo"]
    assert set(out["sketch2photo"].metrics) == {"map", "p@5", "acc@1", "acc@5"}
    assert set(out["photo2photo"].metrics) == {"map", "p@5"}
    assert out["sketch2sketch"].exclude_self and not out["photo2sketch"].exclude_self
    pairs = {"sketch2photo": (sk, ph, sk_lab, ph_lab, sk_inst, ph_inst, False),
             "photo2sketch": (ph, sk, ph_lab, sk_lab, ph_inst, sk_inst, False),
             "sketch2sketch": (sk, sk, sk_lab, sk_lab, None, None, True),
             "photo2photo": (ph, ph, ph_lab, ph_lab, None, None, True)}
    for direction, (q, g, ql, gl, qi, gi, same) in pairs.items():
        names = metrics if same else metrics + ("acc@1", "acc@5")
        expected = ref.evaluate(q, g, ql, gl, names, exclude_self=same, q_inst=qi, g_inst=gi)
        for m in names:
            assert out[direction].metrics[m] == pytest.approx(ref.mean_defined(expected[m])[0],
                                                              abs=1e-6), (direction, m)
    without = evaluate_directions(sk, sk_lab, ph, ph_lab, ["sketch2photo"], metrics=metrics)
    assert set(without["sketch2photo"].metrics) == {"map", "p@5"}  # no instances, no Acc@K


def test_retrieval_metric_batches_equal_one_call():
    rng = np.random.default_rng(10)
    sk, ph = tied_embeddings(rng, 30, "cosine"), tied_embeddings(rng, 20, "cosine")
    sk_lab, ph_lab = rng.integers(0, 3, 30), rng.integers(0, 3, 20)
    sk_inst, ph_inst = rng.integers(0, 20, 30), np.arange(20)
    metric = RetrievalMetric(metrics=("map", "map@10", "p@5"), block_size=3)
    for lo in range(0, 30, 8):
        metric.update(torch.from_numpy(sk[lo:lo + 8]), sk_lab[lo:lo + 8], sk_inst[lo:lo + 8],
                      modality="sketch")
    for lo in range(0, 20, 6):
        metric.update(ph[lo:lo + 6], torch.from_numpy(ph_lab[lo:lo + 6]), ph_inst[lo:lo + 6],
                      modality="photo")
    got = metric.compute()
    expected = evaluate_directions(sk, sk_lab, ph, ph_lab, sketch_instances=sk_inst,
                                   photo_instances=ph_inst, metrics=("map", "map@10", "p@5"))
    for direction in expected:
        assert got[direction].metrics == pytest.approx(expected[direction].metrics, abs=1e-12)
    metric.reset()
    with pytest.raises(ValueError, match="needs sketch embeddings"):
        metric.compute()
    metric.update(sk[:4], sk_lab[:4], modality="sketch")
    with pytest.raises(ValueError, match="instance ids"):
        metric.update(sk[:4], sk_lab[:4], sk_inst[:4], modality="sketch")


def test_format_table_names_conventions_and_values():
    rng = np.random.default_rng(12)
    sk, ph = tied_embeddings(rng, 12, "cosine"), tied_embeddings(rng, 10, "cosine")
    sk_lab = np.r_[rng.integers(0, 2, 11), 7]  # one sketch of a class with no photo
    out = evaluate_directions(sk, sk_lab, ph, rng.integers(0, 2, 10),
                              metrics=("map", "map@200:yelamarthi", "p@100"))
    table = format_table(out)
    assert "| sketch2photo | 12 | 10 | " + f"{out['sketch2photo']['map']:.4f}" in table
    assert "mAP@200 (yelamarthi)" in table and "Yelamarthi et al. (ECCV 2018)" in table
    assert "distance: cosine" in table and "ties: expected: the exact expectation" in table
    assert "sketch2photo map: 1" in table  # the undefined query is reported
    single = format_table(out["photo2photo"])
    assert [line.split(" | ")[0] for line in single.splitlines() if line.startswith("| ")] == [
        "| direction", "| retrieval"]


def test_bad_inputs_raise_one_line_errors():
    q = torch.randn(4, 3)
    g = torch.randn(6, 3)
    lab_q, lab_g = [0, 1, 0, 1], [0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="unknown metric 'mrr'"):
        evaluate_retrieval(q, g, lab_q, lab_g, metrics=["mrr"])
    with pytest.raises(ValueError, match="convention 'voc'"):
        evaluate_retrieval(q, g, lab_q, lab_g, metrics=["map@10:voc"])
    with pytest.raises(ValueError, match="P@K convention 'sake'"):
        evaluate_retrieval(q, g, lab_q, lab_g, metrics=["p@10:sake"])
    with pytest.raises(ValueError, match="ties: expected one of"):
        evaluate_retrieval(q, g, lab_q, lab_g, ties="random")
    with pytest.raises(ValueError, match="no_relevant: expected one of"):
        evaluate_retrieval(q, g, lab_q, lab_g, no_relevant="drop")
    with pytest.raises(ValueError, match="gallery_labels: expected 6 entries"):
        evaluate_retrieval(q, g, lab_q, lab_g[:5])
    with pytest.raises(ValueError, match="exclude_self"):
        evaluate_retrieval(q, g, lab_q, lab_g, exclude_self=True)
    with pytest.raises(ValueError, match="acc@K needs instance ids"):
        evaluate_retrieval(q, g, lab_q, lab_g, metrics=["acc@1"])
    with pytest.raises(ValueError, match="float"):
        evaluate_retrieval(q, g, torch.rand(4), lab_g)
    bad = g.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(DataError, match="gallery_emb: row 2 has non-finite"):
        evaluate_retrieval(q, bad, lab_q, lab_g)
    bad[2] = 0
    with pytest.raises(DataError, match="gallery_emb: row 2 is all zeros"):
        evaluate_retrieval(q, bad, lab_q, lab_g)
    huge = torch.full((4, 3), 3e38)
    with pytest.raises(DataError, match="non-finite distances"):
        evaluate_retrieval(huge, -huge[:4], lab_q, lab_q, distance="euclidean")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu():
    case = make_case(13, 50, 80, "cosine", same_set=False)
    q_emb, g_emb, q_lab, g_lab, q_inst, g_inst = case
    for ties in ("pessimistic", "expected", "optimistic"):
        kwargs = {"query_instances": q_inst, "gallery_instances": g_inst, "metrics": METRICS,
                  "block_size": 16, "ties": ties}
        cpu = evaluate_retrieval(q_emb, g_emb, q_lab, g_lab, **kwargs)
        gpu = evaluate_retrieval(torch.from_numpy(q_emb).cuda(), torch.from_numpy(g_emb).cuda(),
                                 q_lab, g_lab, **kwargs)
        assert gpu.metrics == pytest.approx(cpu.metrics, abs=1e-6), ties
    codes_q = np.packbits(q_emb > 0, axis=1)
    codes_g = np.packbits(g_emb > 0, axis=1)
    cpu = evaluate_retrieval(codes_q, codes_g, q_lab, g_lab, metrics=METRICS[:-2], distance="hamming")
    gpu = evaluate_retrieval(codes_q, codes_g, q_lab, g_lab, metrics=METRICS[:-2], distance="hamming",
                             device="cuda")
    assert gpu.metrics == pytest.approx(cpu.metrics, abs=1e-9)


def test_a_query_with_no_relevant_item_is_excluded_from_map_but_scores_zero_in_p_at_k():
    # the README's convention: AP is undefined without a relevant item (excluded, counted); P@K is 0
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    g = np.array([[1.0, 0.0], [0.9, 0.1]], dtype=np.float32)
    result = evaluate_retrieval(q, g, np.array([0, 1]), np.array([0, 0]), metrics=("map", "p@1"))
    assert result.metrics["map"] == pytest.approx(1.0) and result.undefined["map"] == 1
    assert result.metrics["p@1"] == pytest.approx(0.5) and result.undefined["p@1"] == 0
    # no_relevant="zero" (Sem-PCYC, Doodle2Search, Yelamarthi): the same query scores 0 in the AP mean
    zero = evaluate_retrieval(q, g, np.array([0, 1]), np.array([0, 0]), metrics=("map", "p@1", "p@1:zse"),
                              no_relevant="zero")
    assert zero.metrics["map"] == pytest.approx(0.5) and zero.undefined["map"] == 1
    assert zero.metrics["p@1"] == pytest.approx(0.5) and zero.metrics["p@1:zse"] == pytest.approx(0.5)
    assert "scored 0" in format_table(zero) and zero.no_relevant == "zero"


def test_every_result_names_its_tie_policy_and_sampled_errors():
    rng = np.random.default_rng(21)
    q, g = tied_embeddings(rng, 15, "cosine"), tied_embeddings(rng, 30, "cosine")
    q_lab, g_lab = rng.integers(0, 3, 15), rng.integers(0, 3, 30)
    results = {t: evaluate_retrieval(q, g, q_lab, g_lab, metrics=("map", "map:voc", "p@5"), ties=t)
               for t in ("pessimistic", "expected", "optimistic")}
    for t, r in results.items():
        assert r.ties == t and r.as_dict()["ties"] == t
        assert f"- ties: {t}: " in format_table(r)
    assert results["pessimistic"].metrics["map"] < results["expected"].metrics["map"] < \
        results["optimistic"].metrics["map"]  # tied embeddings: the policies differ
    assert set(results["expected"].tie_stderr) == {"map:voc"}
    assert "standard error: retrieval map:voc" in format_table(results["expected"])
    old = {k: v for k, v in results["expected"].as_dict().items() if k not in ("ties", "no_relevant", "tie_stderr")}
    assert format_table(type(results["expected"])(**old))  # a record written before tie policies had names
