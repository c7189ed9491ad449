"""Hamming ranking of binary codes: exact integer distances (32 and 64 bits, every accepted code
form) against an XOR-popcount reference, and metrics equal to the reference computed from them."""

from __future__ import annotations

import eval_reference as ref
import numpy as np
import pytest
import torch

from sbirkit.eval import evaluate_retrieval, pairwise_hamming
from sbirkit.eval.hamming import sign_codes


def _codes(rng, rows, bits, classes=None):
    """0/1 codes; with ``classes``, codes that lean towards a class pattern (so ranking means something)."""
    if classes is None:
        return rng.integers(0, 2, size=(rows, bits)).astype(np.uint8), None
    labels = rng.integers(0, len(classes), rows)
    flip = rng.random((rows, bits)) < 0.3
    return (classes[labels] ^ flip).astype(np.uint8), labels


def _popcount_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact Hamming distances: each code as one Python integer, XOR, count the set bits."""
    ints_a = [int("".join(map(str, row)), 2) for row in a]
    ints_b = [int("".join(map(str, row)), 2) for row in b]
    return np.array([[(x ^ y).bit_count() for y in ints_b] for x in ints_a], dtype=np.int64)


@pytest.mark.parametrize("bits", [32, 64])
def test_distances_are_exact_integers_in_every_code_form(bits):
    rng = np.random.default_rng(bits)
    a, _ = _codes(rng, 23, bits)
    b, _ = _codes(rng, 41, bits)
    expected = _popcount_reference(a, b)
    forms = {
        "zero_one": (a.astype(np.float32), b.astype(np.float32)),
        "signs": (a.astype(np.float32) * 2 - 1, b.astype(np.float32) * 2 - 1),
        "bool": (a.astype(bool), b.astype(bool)),
        "int": (a.astype(np.int64), b.astype(np.int64)),
        "packed": (np.packbits(a, axis=1), np.packbits(b, axis=1)),
        "torch": (torch.from_numpy(a.astype(np.float64) * 2 - 1), torch.from_numpy(b.astype(np.float64) * 2 - 1)),
    }
    for name, (x, y) in forms.items():
        got = pairwise_hamming(x, y)
        assert got.dtype == torch.float32, name
        assert torch.equal(got, got.round()), name  # integers
        np.testing.assert_array_equal(got.numpy().astype(np.int64), expected, err_msg=name)


def test_packed_codes_of_a_length_not_a_multiple_of_8():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, (5, 30)).astype(np.uint8), rng.integers(0, 2, (7, 30)).astype(np.uint8)
    got = pairwise_hamming(np.packbits(a, axis=1), np.packbits(b, axis=1))  # 2 padding bits, equal everywhere
    np.testing.assert_array_equal(got.numpy(), _popcount_reference(a, b))


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("bits", [32, 64])
def test_hamming_ranking_matches_the_integer_reference(bits, ties):
    rng = np.random.default_rng(10 + bits)
    classes = rng.integers(0, 2, size=(4, bits)).astype(np.uint8)
    q, q_lab = _codes(rng, 30, bits, classes)
    g, g_lab = _codes(rng, 300, bits, classes)
    metrics = ("map", "map:voc", "map:sklearn", "map@20:sake", "map@20:sem-pcyc", "p@10", "p@10:zse")
    result = evaluate_retrieval(np.packbits(q, axis=1), np.packbits(g, axis=1), q_lab, g_lab, metrics=metrics,
                                distance="hamming", ties=ties, return_per_query=True, block_size=7)
    expected = ref.evaluate(q, g, q_lab, g_lab, metrics, distance="hamming", ties=ties)
    for m in metrics:
        np.testing.assert_allclose(result.per_query[m].numpy(), expected[m], atol=1e-12, err_msg=m)
    assert result.distance == "hamming" and result.ties == ties


def test_cosine_on_sign_codes_is_not_exact_but_hamming_is():
    # 32-bit +-1 codes: cosine divides by sqrt(32), so equal Hamming distances become unequal floats;
    # the tie policies then see no ties and every policy gives one (arbitrary) order's value
    rng = np.random.default_rng(5)
    classes = rng.integers(0, 2, size=(3, 32)).astype(np.uint8)
    q, q_lab = _codes(rng, 40, 32, classes)
    g, g_lab = _codes(rng, 400, 32, classes)
    signs_q, signs_g = q.astype(np.float32) * 2 - 1, g.astype(np.float32) * 2 - 1
    hamming = {t: evaluate_retrieval(signs_q, signs_g, q_lab, g_lab, metrics=["p@100"], distance="hamming",
                                     ties=t).metrics["p@100"] for t in ("pessimistic", "expected", "optimistic")}
    assert hamming["pessimistic"] < hamming["expected"] < hamming["optimistic"]
    exact = ref.evaluate(q, g, q_lab, g_lab, ["p@100"], distance="hamming", ties="pessimistic")["p@100"].mean()
    assert hamming["pessimistic"] == pytest.approx(exact, abs=1e-12)
    cosine = evaluate_retrieval(signs_q, signs_g, q_lab, g_lab, metrics=["p@100"], distance="cosine",
                                ties="pessimistic").metrics["p@100"]
    assert cosine > hamming["pessimistic"] + 0.01  # rounding broke the exact ties: no longer a lower bound


def test_bad_codes_raise_one_line_errors():
    with pytest.raises(ValueError, match="expects binary codes"):
        evaluate_retrieval(np.array([[0.5, 1.0]]), np.array([[1.0, 0.0]]), [0], [0], distance="hamming")
    with pytest.raises(ValueError, match="both packed"):
        sign_codes(np.zeros((2, 1), np.uint8), np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="codes of 8 bits"):
        sign_codes(np.zeros((2, 8)), np.zeros((2, 9)))
    with pytest.raises(ValueError, match="distance: expected one of"):
        evaluate_retrieval(np.ones((2, 2)), np.ones((2, 2)), [0, 1], [0, 1], distance="jaccard")
