"""Precision-recall curves and per-class AP charts for reports (matplotlib, headless).

The curve is the mean over queries of each query's *interpolated* precision at fixed recall
levels (precision at recall r = the best precision at any recall >= r), the usual way SBIR
papers draw PR curves. Queries are processed in blocks, so the query × gallery matrix is
never held whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def precision_recall_curve(query_emb: np.ndarray, gallery_emb: np.ndarray, query_labels: np.ndarray,
                           gallery_labels: np.ndarray, levels: int = 21, block: int = 256,
                           exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(recall levels, mean interpolated precision) ranking the gallery by cosine similarity.

    Queries with no relevant gallery item are left out of the mean.
    """
    q = np.asarray(query_emb, np.float32)
    g = np.asarray(gallery_emb, np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    ql, gl = np.asarray(query_labels), np.asarray(gallery_labels)
    recall_levels = np.linspace(0.0, 1.0, levels)
    total, used = np.zeros(levels), 0
    for start in range(0, len(q), block):
        sims = q[start:start + block] @ g.T
        if exclude_self:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + start] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")
        if exclude_self:  # the query itself sorts last (similarity -inf): drop that column
            order = order[:, :-1]
        rel = gl[order] == ql[start:start + block, None]
        n_rel = rel.sum(axis=1)
        keep = n_rel > 0
        if not keep.any():
            continue
        rel, n_rel = rel[keep], n_rel[keep]
        tp = np.cumsum(rel, axis=1)
        precision = tp / np.arange(1, rel.shape[1] + 1)
        recall = tp / n_rel[:, None]
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        for i in range(len(rel)):
            idx = np.searchsorted(recall[i], recall_levels, side="left")
            vals = np.where(idx < rel.shape[1], envelope[i, np.minimum(idx, rel.shape[1] - 1)], 0.0)
            total += vals
        used += len(rel)
    return recall_levels, total / max(used, 1)


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], out: str | Path, title: str = "") -> Path:
    """One line per named curve (e.g. 'triplet' vs 'pixel baseline'), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for name, (r, p) in curves.items():
        ax.plot(r, p, marker=".", label=name)
    ax.set(xlabel="recall", ylabel="interpolated precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_per_class(values: dict[str, float], out: str | Path, title: str = "", xlabel: str = "AP",
                   chance: float | None = None) -> Path:
    """Horizontal bar chart of a per-class value (sorted), with an optional chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(values, key=values.get)
    fig, ax = plt.subplots(figsize=(5, 0.25 * len(names) + 1.2), dpi=100)
    ax.barh(names, [values[n] for n in names], color="#4c72b0")
    if chance is not None:
        ax.axvline(chance, color="#c44e52", linestyle="--", label=f"chance {chance:.3f}")
        ax.legend(loc="lower right")
    ax.set(xlabel=xlabel, xlim=(0, 1), title=title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def per_class_mean(values: Sequence[float], labels: Sequence[int], class_names: Sequence[str]) -> dict[str, float]:
    """Mean of per-query values grouped by the query's class (NaN values left out)."""
    vals, labs = np.asarray(values, float), np.asarray(labels)
    out = {}
    for c in np.unique(labs):
        v = vals[(labs == c) & ~np.isnan(vals)]
        if len(v):
            out[class_names[int(c)]] = float(v.mean())
    return out
