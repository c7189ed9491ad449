"""Chance levels: the expected scores of a uniformly random ranking, exactly.

A table's "− chance" column needs the score a model with no signal would get. For P@K that is
the fraction of relevant gallery items, R/N. For average precision it is not: a relevant item at
rank r has, in expectation, 1 + (R - 1)(r - 1)/(N - 1) relevant items at or above it, and averaging
their precision over the R relevant ranks gives

    E[AP] = (R - 1)/(N - 1) + H_N (N - R) / (N (N - 1)),   H_N = 1 + 1/2 + ... + 1/N,

which lies above R/N (1,000 relevant of 9,000 give 0.1120, not 0.1111; 5 of 60 give 0.143).
``sbirkit.engine.zero_shot.chance_levels`` reports R/N, the P@K chance, beside its tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np


def expected_ap(relevant: int, gallery: int) -> float:
    """Expected average precision of a uniformly random ranking of ``gallery`` items of which
    ``relevant`` are relevant (module docstring). ``relevant`` must be 1..``gallery``: AP is
    undefined without a relevant item."""
    relevant, gallery = int(relevant), int(gallery)
    if not 1 <= relevant <= gallery:
        raise ValueError(f"expected_ap: need 1 <= relevant <= gallery, got relevant={relevant}, gallery={gallery}")
    if gallery == 1:
        return 1.0
    harmonic = float(np.sum(1.0 / np.arange(1, gallery + 1)))
    return (relevant - 1) / (gallery - 1) + harmonic * (gallery - relevant) / (gallery * (gallery - 1))


def random_ranking_scores(query_labels: Iterable, gallery_labels: Iterable, k: int = 100) -> dict[str, float]:
    """The expected mAP and P@``k`` of uniformly random rankings, averaged over the queries (a
    query whose class has no gallery item is left out of the mAP, as the metric leaves it
    undefined). E[P@k] is R/N for every k up to N. Returns ``{"map", "p@<k>", "queries", "gallery"}``."""
    gallery_labels = [int(c) for c in gallery_labels]
    counts = Counter(gallery_labels)
    n = len(gallery_labels)
    if n == 0:
        raise ValueError("random_ranking_scores: the gallery is empty")
    if not 1 <= k <= n:
        raise ValueError(f"random_ranking_scores: need 1 <= k <= {n} (the gallery's size), got k={k}")
    per_count: dict[int, float] = {}  # expected_ap sums N terms: once per distinct relevant count
    aps, precisions = [], []
    for c in query_labels:
        r = counts.get(int(c), 0)
        if r:
            if r not in per_count:
                per_count[r] = expected_ap(r, n)
            aps.append(per_count[r])
        precisions.append(r / n)
    return {"map": float(np.mean(aps)) if aps else float("nan"), f"p@{k}": float(np.mean(precisions)),
            "queries": len(precisions), "gallery": n}
