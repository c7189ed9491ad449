"""What the drawing page sends for a drawing: a vector sketch placed on the page's canvas.

The page (``static/app.js``) records pointer positions in canvas pixels, rounded to 0.1, and
posts ``{"strokes": [[xs, ys], ...], "canvas": [side, side], "stroke_width": w}``.
:func:`page_body` builds that body from any :class:`~sbirkit.data.strokes.Strokes` (a Quick,
Draw! drawing, a synthetic sketch), placed where and as large as a person might draw it. The
drawn-query benchmark (``benchmarks/bench_drawn_query.py``) and the tests that check one
rasterisation for training and for the page use it.
"""

from __future__ import annotations

import numpy as np

from ..data.strokes import Strokes

#: The page's canvas side (``<canvas id="pad" width="512">``) and default line width (the slider).
PAGE_CANVAS = 512
PAGE_LINE_WIDTH = 18


def page_strokes(strokes: Strokes, canvas: float = PAGE_CANVAS, fill: float = 0.6,
                 centre: tuple[float, float] = (0.5, 0.5)) -> list[list[list[float]]]:
    """``strokes`` as a person would draw them on a ``canvas``-pixel square page: the drawing's
    longer side is ``fill`` of the canvas, its bounding box centred at ``centre`` (fractions of
    the canvas), coordinates rounded to 0.1 px as the page does. Returns ``[[xs, ys], ...]``."""
    if not 0 < fill <= 1:
        raise ValueError(f"fill: expected a fraction of the canvas in (0, 1], got {fill}")
    x0, y0, x1, y1 = strokes.bounds()
    scale = fill * canvas / max(x1 - x0, y1 - y0, 1e-6)
    mid = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    at = np.array(centre, dtype=float) * canvas
    out = []
    for s in strokes.strokes:
        pts = np.round((s.astype(np.float64) - mid) * scale + at, 1)
        out.append([pts[:, 0].tolist(), pts[:, 1].tolist()])
    return out


def page_body(strokes: Strokes, canvas: float = PAGE_CANVAS, line_width: float = PAGE_LINE_WIDTH,
              fill: float = 0.6, centre: tuple[float, float] = (0.5, 0.5)) -> dict:
    """The JSON body the page posts to ``/search`` for ``strokes`` drawn on its canvas (see
    :func:`page_strokes`) with the line width slider at ``line_width`` canvas pixels."""
    return {"strokes": page_strokes(strokes, canvas, fill, centre), "canvas": [canvas, canvas],
            "stroke_width": float(line_width)}
