"""The differentiable Bezier-stroke rasteriser: curves through their end points, a rendered
stroke against the project's non-differentiable rasteriser (supersampled PIL lines), distances
against a brute-force reference, and gradients that reach every stroke parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbirkit.data.strokes import Strokes, rasterize
from sbirkit.models.bezier import bezier_points, render_strokes, segment_distance

CURVE = torch.tensor([[[[0.15, 0.8], [0.3, 0.05], [0.7, 0.95], [0.85, 0.2]]]])  # one cubic stroke


def test_bezier_curves_start_and_end_at_their_end_points_and_match_de_casteljau():
    pts = bezier_points(CURVE, 5)[0, 0]
    assert torch.allclose(pts[0], CURVE[0, 0, 0]) and torch.allclose(pts[-1], CURVE[0, 0, -1])
    p0, p1, p2, p3 = CURVE[0, 0]
    t = 0.25  # de Casteljau by hand
    a, b, c = p0 + t * (p1 - p0), p1 + t * (p2 - p1), p2 + t * (p3 - p2)
    d, e = a + t * (b - a), b + t * (c - b)
    assert torch.allclose(pts[1], d + t * (e - d), atol=1e-6)
    quad = bezier_points(CURVE[:, :, :3], 3)[0, 0]  # quadratic: the midpoint is (p0 + 2 p1 + p2) / 4
    assert torch.allclose(quad[1], (p0 + 2 * p1 + p2) / 4, atol=1e-6)
    with pytest.raises(ValueError, match="3 \\(quadratic\\) or 4 \\(cubic\\)"):
        bezier_points(torch.zeros(1, 1, 5, 2))


def test_segment_distances_match_a_brute_force_reference():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 3, 6, 2, generator=g)
    size = 24
    d = segment_distance(pts, size)
    centres = (np.arange(size) + 0.5)
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    p = np.stack([xx, yy], -1).reshape(-1, 2)
    for b in range(2):
        for n in range(3):
            poly = pts[b, n].double().numpy() * size
            best = np.full(len(p), np.inf)
            for a, c in zip(poly[:-1], poly[1:]):
                ab = c - a
                t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
                best = np.minimum(best, np.linalg.norm(p - a - t[:, None] * ab, axis=1))
            assert np.allclose(d[b, n].reshape(-1).double().numpy(), best, atol=2e-3)


@pytest.mark.parametrize("size,width", [(28, 1.5), (32, 2.0), (48, 2.0), (64, 3.0)])
def test_a_rendered_stroke_matches_the_non_differentiable_rasteriser(size, width):
    """Tolerance: mean absolute pixel difference under 0.02 (of the [0, 1] range), total ink within
    5 %, and the inked pixels (darker than 0.5) overlapping with IoU at least 0.9; single pixels
    on the antialiased edge may differ by up to 0.25."""
    pts = bezier_points(CURVE, 64)
    ours = render_strokes(pts, torch.tensor([[width]]), size)[0, 0].numpy()
    ref = np.asarray(rasterize(Strokes([pts[0, 0].numpy()], canvas=(0, 0, 1, 1)), size, stroke_width=width,
                               supersample=8), dtype=np.float32) / 255
    assert np.abs(ours - ref).mean() < 0.02
    assert np.abs(ours - ref).max() < 0.25
    assert abs((1 - ours).sum() / (1 - ref).sum() - 1) < 0.05
    a, b = ours < 0.5, ref < 0.5
    assert (a & b).sum() / (a | b).sum() >= 0.9


def test_gradients_reach_every_stroke_parameter():
    control = CURVE.repeat(2, 2, 1, 1).clone().requires_grad_(True)  # 2 sketches x 2 strokes
    widths = torch.full((2, 2), 2.0, requires_grad=True)
    opacity = torch.full((2, 2), 0.9, requires_grad=True)
    image = render_strokes(bezier_points(control, 9), widths, 32, opacity=opacity)
    assert image.shape == (2, 1, 32, 32) and 0 <= float(image.detach().min()) < 0.2 <= float(image.detach().max()) <= 1.0
    target = torch.ones_like(image)  # "less ink": every parameter has a say
    ((image - target) ** 2).mean().backward()
    for name, t in (("control points", control), ("widths", widths), ("opacity", opacity)):
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert float(t.grad.abs().min()) > 0, name
    assert float(widths.grad.min()) > 0 and float(opacity.grad.min()) > 0  # thinner / fainter = less ink
