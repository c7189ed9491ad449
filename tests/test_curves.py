"""PR curves and per-class charts used in reports."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve as sk_pr

from sbirkit.eval.curves import per_class_mean, plot_per_class, plot_pr_curves, precision_recall_curve


def _interp_precision_at(q, g, ql, gl, levels):
    """Reference: sklearn's PR points per query, interpolated, averaged."""
    out = []
    for i in range(len(q)):
        y = (gl == ql[i]).astype(int)
        p, r, _ = sk_pr(y, g @ q[i])
        p, r = p[:-1], r[:-1]  # drop sklearn's appended (recall 0, precision 1) end point
        out.append([p[r >= lv].max() for lv in levels])
    return np.mean(out, axis=0)


def test_curve_matches_sklearn_reference():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(30, 8)), rng.normal(size=(80, 8))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    ql, gl = rng.integers(0, 4, 30), rng.integers(0, 4, 80)
    levels, prec = precision_recall_curve(q, g, ql, gl, levels=11, block=7)
    np.testing.assert_allclose(prec, _interp_precision_at(q, g, ql, gl, levels), atol=1e-9)


def test_perfect_ranking_has_precision_one_and_exclude_self():
    emb = np.eye(4)[[0, 0, 1, 1]] + 1e-3 * np.arange(4)[:, None]
    labels = np.array([0, 0, 1, 1])
    _, prec = precision_recall_curve(emb, emb, labels, labels, exclude_self=True)
    np.testing.assert_allclose(prec, 1.0)


def test_plots_write_pngs(tmp_path):
    out1 = plot_pr_curves({"a": (np.linspace(0, 1, 5), np.linspace(1, 0.2, 5))}, tmp_path / "pr.png")
    means = per_class_mean([0.5, 0.7, np.nan, 0.2], [0, 0, 1, 1], ["cat", "dog"])
    assert means == {"cat": 0.6, "dog": 0.2}
    out2 = plot_per_class(means, tmp_path / "ap.png", chance=0.1)
    assert out1.stat().st_size > 1000 and out2.stat().st_size > 1000
