"""Plain per-query numpy references for the eval tests, written from each metric's definition.

Deliberately slow and loop-based: one query at a time, no vectorisation shared with the library.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score

NAN = float("nan")


def ap_sklearn(dist: np.ndarray, rel: np.ndarray) -> float:
    """Non-interpolated AP with sklearn's tie handling (scores = -distance)."""
    if not rel.any():
        return NAN
    return float(average_precision_score(rel.astype(int), -dist))


def ap_threshold_groups(dist: np.ndarray, rel: np.ndarray, voc: bool = False) -> float:
    """AP over distinct distance thresholds; with ``voc`` the precision envelope is used."""
    npos = int(rel.sum())
    if npos == 0:
        return NAN
    recalls, precisions = [], []
    for t in np.unique(dist):
        within = dist <= t
        tp = int(rel[within].sum())
        recalls.append(tp / npos)
        precisions.append(tp / int(within.sum()))
    if voc:
        for i in range(len(precisions) - 2, -1, -1):
            precisions[i] = max(precisions[i], precisions[i + 1])
    ap, previous = 0.0, 0.0
    for r, p in zip(recalls, precisions):
        ap += (r - previous) * p
        previous = r
    return ap


def ranked(dist: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Relevance in ascending-distance order; inside a tie, non-relevant items first."""
    return rel[np.lexsort((rel, dist))]


def map_at_k_sake(dist: np.ndarray, rel: np.ndarray, k: int) -> float:
    """SAKE: VOC AP over the top K with recall normalised by min(K, #relevant)."""
    npos = int(rel.sum())
    if npos == 0:
        return NAN
    top = ranked(dist, rel)[:k]
    tp = np.cumsum(top)
    prec = tp / np.arange(1, len(top) + 1)
    rec = tp / min(k, npos)
    mrec = [0.0, *rec.tolist(), 1.0]
    mpre = [0.0, *prec.tolist(), 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    ap = 0.0
    for i in range(len(mrec) - 1):
        if mrec[i + 1] != mrec[i]:
            ap += (mrec[i + 1] - mrec[i]) * mpre[i + 1]
    return ap


def map_at_k_yelamarthi(dist: np.ndarray, rel: np.ndarray, k: int) -> float:
    """(1/K) * sum_{i<=K} rel_i * P@i."""
    if not rel.any():
        return NAN
    top = ranked(dist, rel)[:k]
    total, hits = 0.0, 0
    for i, r in enumerate(top, start=1):
        if r:
            hits += 1
            total += hits / i
    return total / k


def map_at_k_standard(dist: np.ndarray, rel: np.ndarray, k: int) -> float:
    """sum_{i<=K} rel_i * P@i / min(K, #relevant)."""
    npos = int(rel.sum())
    if npos == 0:
        return NAN
    top = ranked(dist, rel)[:k]
    total, hits = 0.0, 0
    for i, r in enumerate(top, start=1):
        if r:
            hits += 1
            total += hits / i
    return total / min(k, npos)


def precision_at(dist: np.ndarray, rel: np.ndarray, k: int) -> float:
    top = ranked(dist, rel)[:k]
    return float(top.sum()) / len(top)


def acc_at(dist: np.ndarray, true: np.ndarray, k: int) -> float:
    if not true.any():
        return NAN
    best = dist[true].min()
    rank = int((dist <= best).sum())
    return 1.0 if rank <= k else 0.0


def per_query(name: str, dist: np.ndarray, rel: np.ndarray, true: np.ndarray | None) -> float:
    """Reference value of metric ``name`` for one query's distance row."""
    base, _, convention = name.partition(":")
    kind, _, k = base.partition("@")
    if kind == "map" and not k:
        return ap_threshold_groups(dist, rel, voc=convention == "voc")
    if kind == "map":
        fn = {"sake": map_at_k_sake, "yelamarthi": map_at_k_yelamarthi, "standard": map_at_k_standard}
        return fn[convention or "sake"](dist, rel, int(k))
    if kind == "p":
        return precision_at(dist, rel, int(k))
    return acc_at(dist, true, int(k))


def distances(query: np.ndarray, gallery: np.ndarray, distance: str) -> np.ndarray:
    """Full float64 distance matrix (cosine: negated similarity; euclidean: squared)."""
    q = query.astype(np.float64)
    g = gallery.astype(np.float64)
    if distance == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        return -(q @ g.T)
    return ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)


def evaluate(query, gallery, q_labels, g_labels, metrics, *, distance="cosine", exclude_self=False,
             q_inst=None, g_inst=None):
    """Per-query reference values {metric: array}, one query at a time."""
    full = distances(query, gallery, distance)
    out = {m: np.empty(len(query)) for m in metrics}
    for i in range(len(query)):
        keep = np.ones(len(gallery), dtype=bool)
        if exclude_self:
            keep[i] = False
        dist = full[i][keep]
        rel = (g_labels == q_labels[i])[keep]
        true = None if q_inst is None else (g_inst == q_inst[i])[keep]
        for m in metrics:
            out[m][i] = per_query(m, dist, rel, true)
    return out


def mean_defined(values: np.ndarray) -> tuple[float, int]:
    defined = values[~np.isnan(values)]
    return (float(defined.mean()) if len(defined) else NAN), int(np.isnan(values).sum())


def class_mean(values: np.ndarray, labels: np.ndarray) -> float:
    means = []
    for c in np.unique(labels):
        v = values[(labels == c) & ~np.isnan(values)]
        if len(v):
            means.append(v.mean())
    return float(np.mean(means)) if means else math.nan
