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


def ranked(dist: np.ndarray, rel: np.ndarray, ties: str = "pessimistic", tiebreak: np.ndarray | None = None):
    """Relevance in ascending-distance order. Inside a tie: non-relevant items first
    (pessimistic), relevant first (optimistic), or by ``tiebreak`` (a random order: ``ties="order"``)."""
    if ties == "order":
        return rel[np.lexsort((tiebreak, dist))]
    return rel[np.lexsort((rel if ties == "pessimistic" else ~rel, dist))]


def _voc_top(order: np.ndarray, npos: int, k: int) -> float:
    """SAKE's eval_AP_inner/VOCap on a ranked relevance vector, top=k."""
    top = order[:k]
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


def _precision_sum(order: np.ndarray, k: int) -> float:
    total, hits = 0.0, 0
    for i, r in enumerate(order[:k], start=1):
        if r:
            hits += 1
            total += hits / i
    return total


def map_at_k_sake(dist, rel, k, ties="pessimistic", tiebreak=None) -> float:
    """SAKE: VOC AP over the top K with recall normalised by min(K, #relevant)."""
    npos = int(rel.sum())
    return NAN if npos == 0 else _voc_top(ranked(dist, rel, ties, tiebreak), npos, k)


def map_voc(dist, rel, ties="pessimistic", tiebreak=None) -> float:
    """VOC AP over the full ranking (SAKE's eval_AP_inner with top=None)."""
    return map_at_k_sake(dist, rel, len(dist), ties, tiebreak)


def map_at_k_yelamarthi(dist, rel, k, ties="pessimistic", tiebreak=None) -> float:
    """(1/K) * sum_{i<=K} rel_i * P@i."""
    if not rel.any():
        return NAN
    return _precision_sum(ranked(dist, rel, ties, tiebreak), k) / k


def map_at_k_standard(dist, rel, k, ties="pessimistic", tiebreak=None) -> float:
    """sum_{i<=K} rel_i * P@i / min(K, #relevant)."""
    npos = int(rel.sum())
    if npos == 0:
        return NAN
    return _precision_sum(ranked(dist, rel, ties, tiebreak), k) / min(k, npos)


def map_positional(dist, rel, ties="pessimistic", tiebreak=None) -> float:
    """Non-interpolated AP over the full ranking: sum of P@rank at the relevant items / #relevant."""
    return map_at_k_standard(dist, rel, len(dist), ties, tiebreak)


def _sem_pcyc_of_order(dist_sorted: np.ndarray, rel_sorted: np.ndarray, k: int) -> float:
    top = rel_sorted[:k]
    if not top.any():
        return 0.0
    return float(average_precision_score(top.astype(int), -dist_sorted[:k]))


def map_at_k_sem_pcyc(dist, rel, k, ties="pessimistic", tiebreak=None) -> float:
    """Sem-PCYC's apsak: sklearn AP on the top-k list (one threshold per tie inside it), 0 without
    a hit. Pessimistic/optimistic: the least/greatest value over every order of the tie at rank k
    (the value depends on the order only through how many of its relevant items enter the list)."""
    if not rel.any():
        return NAN
    if ties == "order":
        order = np.lexsort((tiebreak, dist))
        return _sem_pcyc_of_order(dist[order], rel[order], k)
    at_k = np.sort(dist)[min(k, len(dist)) - 1]
    group = dist == at_k
    values = []
    for h in range(int((rel & group).sum()) + 1):  # h relevant items of that tie first, then the rest
        key = np.zeros(len(dist))
        key[group & ~rel] = 1
        key[np.flatnonzero(group & rel)[h:]] = 2
        order = np.lexsort((key, dist))
        values.append(_sem_pcyc_of_order(dist[order], rel[order], k))
    return min(values) if ties == "pessimistic" else max(values)


def precision_at(dist, rel, k, ties="pessimistic", tiebreak=None) -> float:
    top = ranked(dist, rel, ties, tiebreak)[:k]
    return float(top.sum()) / len(top)


def precision_zse(dist, rel, k, ties="pessimistic", tiebreak=None) -> float:
    """ZSE-SBIR's precision_eval: mean relevance of the top min(K, #relevant); NaN without one."""
    npos = int(rel.sum())
    if npos == 0:
        return NAN
    return float(ranked(dist, rel, ties, tiebreak)[: min(k, npos)].mean())


def precision_doodle2search(dist, rel, k, ties="pessimistic", tiebreak=None) -> float:
    """Doodle2Search's prec: hits in the top K / min(#relevant, len(top K)); NaN without one."""
    npos = int(rel.sum())
    if npos == 0:
        return NAN
    top = ranked(dist, rel, ties, tiebreak)[:k]
    return float(top.sum()) / min(npos, len(top))


def acc_at(dist, true, k, ties="pessimistic", tiebreak=None) -> float:
    """1 if the first true item of the ranking is within k."""
    if not true.any():
        return NAN
    rank = int(np.argmax(ranked(dist, true, ties, tiebreak))) + 1
    return 1.0 if rank <= k else 0.0


def per_query(name: str, dist: np.ndarray, rel: np.ndarray, true: np.ndarray | None,
              ties: str = "pessimistic", tiebreak: np.ndarray | None = None) -> float:
    """Reference value of metric ``name`` for one query's distance row under a fixed tie order."""
    base, _, convention = name.partition(":")
    kind, _, k = base.partition("@")
    args = (ties, tiebreak)
    if kind == "map" and not k:
        if convention == "sklearn":
            return ap_sklearn(dist, rel)
        return map_voc(dist, rel, *args) if convention == "voc" else map_positional(dist, rel, *args)
    if kind == "map":
        fn = {"sake": map_at_k_sake, "yelamarthi": map_at_k_yelamarthi, "standard": map_at_k_standard,
              "sem-pcyc": map_at_k_sem_pcyc}
        return fn[convention or "sake"](dist, rel, int(k), *args)
    if kind == "p":
        fn = {"": precision_at, "zse": precision_zse, "doodle2search": precision_doodle2search}[convention]
        return fn(dist, rel, int(k), *args)
    return acc_at(dist, true, int(k), *args)


def distances(query: np.ndarray, gallery: np.ndarray, distance: str) -> np.ndarray:
    """Full float64 distance matrix (cosine: negated similarity; euclidean: squared)."""
    q = query.astype(np.float64)
    g = gallery.astype(np.float64)
    if distance == "hamming":
        return (q[:, None, :] != g[None, :, :]).sum(-1).astype(np.float64)
    if distance == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        return -(q @ g.T)
    return ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)


def evaluate(query, gallery, q_labels, g_labels, metrics, *, distance="cosine", exclude_self=False,
             q_inst=None, g_inst=None, ties="pessimistic"):
    """Per-query reference values {metric: array}, one query at a time, under a fixed tie order."""
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
            out[m][i] = per_query(m, dist, rel, true, ties)
    return out


def mean_defined(values: np.ndarray, no_relevant: str = "exclude") -> tuple[float, int]:
    undefined = int(np.isnan(values).sum())
    if no_relevant == "zero":
        return float(np.nan_to_num(values).mean()), undefined
    defined = values[~np.isnan(values)]
    return (float(defined.mean()) if len(defined) else NAN), int(np.isnan(values).sum())


def class_mean(values: np.ndarray, labels: np.ndarray) -> float:
    means = []
    for c in np.unique(labels):
        v = values[(labels == c) & ~np.isnan(values)]
        if len(v):
            means.append(v.mean())
    return float(np.mean(means)) if means else math.nan
