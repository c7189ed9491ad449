"""The drawn-query benchmark's arithmetic (benchmarks/bench_drawn_query.py): its metrics from a
score matrix agree with the project's evaluator, and the index-based score matrix is the cosine
matrix of the embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bench_scripts import load_benchmark

from sbirkit.eval import evaluate_retrieval
from sbirkit.index.gallery import GalleryIndex

bench = load_benchmark("bench_drawn_query")


def _data(seed=0, q=30, g=200, d=16, classes=5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    ql, gl = rng.integers(0, classes, q), rng.integers(0, classes, g)
    s = (centres[ql] + 1.5 * rng.normal(size=(q, d))).astype(np.float32)
    p = (centres[gl] + 1.5 * rng.normal(size=(g, d))).astype(np.float32)
    return s, p, ql, gl


def test_metrics_of_a_score_matrix_match_the_evaluator():
    s, p, ql, gl = _data()
    ref = evaluate_retrieval(torch.from_numpy(s), torch.from_numpy(p), torch.from_numpy(ql), torch.from_numpy(gl),
                             metrics=["map", "p@24"], distance="cosine").metrics
    sn, pn = s / np.linalg.norm(s, axis=1, keepdims=True), p / np.linalg.norm(p, axis=1, keepdims=True)
    got = bench.scores_to_metrics(sn @ pn.T, ql[:, None] == gl[None, :])
    assert 0.2 < ref["map"] < 0.95  # neither trivial nor random
    assert got["map"] == pytest.approx(ref["map"], abs=1e-6)
    assert got["p@24"] == pytest.approx(ref["p@24"], abs=1e-6)


def test_the_index_scores_every_row_in_row_order():
    s, p, _, gl = _data(seed=1)
    sn, pn = s / np.linalg.norm(s, axis=1, keepdims=True), p / np.linalg.norm(p, axis=1, keepdims=True)
    gallery = GalleryIndex.build(pn, [{"id": f"{i:04d}", "class_name": str(c)} for i, c in enumerate(gl)],
                                 progress=False)
    scores = bench.all_scores(gallery, sn)
    np.testing.assert_allclose(scores, sn @ pn.T, atol=1e-5)
    # a metric with the rows shuffled would differ: the order matters and is kept
    assert not np.allclose(scores, (sn @ pn.T)[:, ::-1], atol=1e-3)
