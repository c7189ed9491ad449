"""ITQ (Gong & Lazebnik, CVPR 2011): orthogonal factors, a quantization loss that never rises,
±1 codes, and Hamming ranking through the evaluation engine (ties included) against sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from sbirkit.eval import evaluate_retrieval
from sbirkit.eval.itq import fit_itq, hamming_distances


def _data(n: int = 300, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + 3.0


def test_factors_are_orthogonal_and_the_loss_never_rises():
    x = _data()
    model = fit_itq(x, bits=8, iterations=30, seed=1)
    assert model.bits == 8 and model.pca.shape == (16, 8)
    np.testing.assert_allclose(model.pca.T @ model.pca, np.eye(8), atol=1e-10)
    np.testing.assert_allclose(model.rotation.T @ model.rotation, np.eye(8), atol=1e-10)
    losses = np.array(model.losses)
    assert np.all(np.diff(losses) <= 1e-9) and losses[-1] < losses[0]
    # the fitted rotation quantizes better than a random one (PCA then random rotation)
    v = (x - x.mean(0)) @ model.pca
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(8, 8)))
    random_loss = np.sum((np.sign(v @ q) - v @ q) ** 2) / len(x)
    assert losses[-1] < random_loss


def test_codes_are_signs_of_the_rotated_projection():
    x = _data()
    model = fit_itq(x, bits=8, seed=0)
    codes = model.encode(x[:20])
    assert codes.dtype == np.float32 and set(np.unique(codes)) <= {-1.0, 1.0}
    expected = np.where((x[:20] - model.mean) @ model.pca @ model.rotation >= 0, 1.0, -1.0)
    np.testing.assert_array_equal(codes, expected)
    assert fit_itq(x, bits=8, seed=0).encode(x[:20]).tolist() == codes.tolist()  # seeded
    with pytest.raises(ValueError, match="bits: expected 1..16"):
        fit_itq(x, bits=17)
    with pytest.raises(ValueError, match="at least bits=8 rows"):
        fit_itq(x[:5], bits=8)
    with pytest.raises(ValueError, match=r"expected shape \(N, 16\)"):
        model.encode(x[:, :4])


def test_hamming_ranking_through_the_evaluation_engine():
    rng = np.random.default_rng(2)
    labels_q, labels_g = rng.integers(0, 3, 15), rng.integers(0, 3, 40)
    q = np.where(rng.normal(size=(15, 6)) + labels_q[:, None] > 1, 1.0, -1.0).astype(np.float32)
    g = np.where(rng.normal(size=(40, 6)) + labels_g[:, None] > 1, 1.0, -1.0).astype(np.float32)
    ham = hamming_distances(q, g)
    assert ham[0, 0] == np.sum(q[0] != g[0])
    res = evaluate_retrieval(q, g, labels_q, labels_g, metrics=("map:sklearn", "p@10"), distance="hamming",
                             ties="pessimistic")
    # 6-bit codes: many ties; sklearn's AP treats a tie as one threshold, like map:sklearn
    expected = np.mean([average_precision_score(labels_g == labels_q[i], -ham[i]) for i in range(15)])
    assert res["map:sklearn"] == pytest.approx(expected)
    # P@10 with ties counted against the query: relevant items go last inside a tie
    p10 = []
    for i in range(15):
        rel = labels_g == labels_q[i]
        order = np.lexsort((rel, ham[i]))
        p10.append(rel[order[:10]].mean())
    assert res["p@10"] == pytest.approx(np.mean(p10))
    # the expected P@10 is the mean over random orders inside the ties (the tie at rank 10 shared out)
    res = evaluate_retrieval(q, g, labels_q, labels_g, metrics=("p@10",), distance="hamming", ties="expected")
    p10 = []
    for i in range(15):
        rel = labels_g == labels_q[i]
        d = ham[i]
        cut = np.sort(d)[9]
        p10.append((rel[d < cut].sum() + (10 - (d < cut).sum()) * rel[d == cut].mean()) / 10)
    assert res["p@10"] == pytest.approx(np.mean(p10))
