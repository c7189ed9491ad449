"""The tie-policy benchmark's arithmetic: its tie count and table on codes with known ties."""

from __future__ import annotations

import numpy as np
import pytest
from bench_scripts import load_benchmark


def test_tied_items_scores_and_table():
    bench = load_benchmark("bench_tie_policies")
    q = np.array([[1, 1, 1], [1, -1, 1]], dtype=np.float32)
    g = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, -1, -1]], dtype=np.float32)
    # query 0: distances 0, 1, 1, 3 (two tied); query 1: 1, 2, 0, 2 (two tied)
    assert bench.tied_items(q, g, "hamming") == pytest.approx(2.0)
    assert bench.tied_items(np.eye(3), np.eye(3) + 0.1 * np.arange(9).reshape(3, 3), "cosine") == 0.0
    scores = bench.score(q, g, [0, 1], [0, 1, 1, 0], ("p@1", "map"), "hamming")
    assert list(scores) == ["pessimistic", "expected", "optimistic"]
    # query 0: relevant at distances 0 and 3 (ranks 1, 4): AP 3/4; query 1: relevant at distance 0
    # (rank 1) and 2, tied with a non-relevant item (rank 3 or 4): AP (1 + 2/4)/2, (1 + 2/3)/2, or their mean
    maps = {t: scores[t]["metrics"]["map"] for t in scores}
    assert maps == pytest.approx({"pessimistic": (0.75 + 0.75) / 2, "expected": (0.75 + 19 / 24) / 2,
                                  "optimistic": (0.75 + 5 / 6) / 2})
    table = bench.format_markdown("codes", {"queries": 2, "gallery": 4, "embeddings": {
        "itq3": {"distance": "hamming", "tied_items_per_query": 2.0, "class": scores}}})
    assert "| itq3 (hamming; 2.0 tied items per query) | p@1 | 1.0000 | 1.0000 | 1.0000 |" in table
