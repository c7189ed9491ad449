"""Vector sketches: a list of polylines, convertible to and from stroke-3, rasterised at any size.

Coordinates are (x, y) with y pointing down, in the units of the source (screen pixels for
Quick, Draw! raw, the viewBox for SVG). ``Strokes.canvas`` is the drawing area when the source
has one (SVG viewBox, a generator's canvas); otherwise rasterising fits the ink's bounding box.

Coordinates must be finite: a NaN or inf (from SVG, ndjson, stroke-3 or a caller) is a one-line
:class:`~sbirkit.errors.DataError` naming the source when the :class:`Strokes` is made.
:func:`rasterize` does bounded work: it refuses more than :data:`MAX_STROKE_POINTS` points, or
strokes longer in total than :data:`MAX_INK_LENGTH` times the image side (drawing cost grows
with the inked length times the line width).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .records import DataError, EmptySketchError

#: Most points :func:`rasterize` draws (all strokes together); real sketches hold hundreds to a
#: few thousand.
MAX_STROKE_POINTS = 200_000
#: Most ink :func:`rasterize` draws: the strokes' total length over the image's longer side
#: (a Quick, Draw! or TU-Berlin sketch is under 50; a 10,000-segment zigzag across the page 14,000).
MAX_INK_LENGTH = 1000
#: The line width of a rasterised vector sketch, in pixels per 64 pixels of image side (the
#: datasets' ``stroke_width`` default): 2 px at 64, 1 px at 32, 7 px at 224.
STROKE_WIDTH = 2.0
#: The margin around the ink when a sketch without a canvas is fitted, a fraction of the side.
BBOX_PADDING = 0.08


@dataclass
class Strokes:
    """A sketch as polylines: ``strokes[i]`` is an (n_i, 2) float32 array of x, y points."""

    strokes: list[np.ndarray]
    canvas: tuple[float, float, float, float] | None = None  # (x0, y0, width, height)
    source: str = field(default="<strokes>", compare=False)

    def __post_init__(self) -> None:
        cleaned = []
        for i, s in enumerate(self.strokes):
            with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond 3.4e38 -> inf: refused below
                arr = np.asarray(s, dtype=np.float32).reshape(-1, 2)
            if not np.isfinite(arr).all():
                raise DataError(
                    f"{self.source}: coordinates: expected finite x, y (within float32), got NaN or inf in stroke {i}"
                )
            if len(arr):
                cleaned.append(arr)
        self.strokes = cleaned

    def __len__(self) -> int:
        return len(self.strokes)

    @property
    def num_points(self) -> int:
        return int(sum(len(s) for s in self.strokes))

    def is_empty(self) -> bool:
        return self.num_points == 0

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the ink."""
        if self.is_empty():
            raise EmptySketchError(f"{self.source}: strokes: expected at least one point, got none")
        pts = np.concatenate(self.strokes)
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())

    # ---- conversions -------------------------------------------------------------------
    @classmethod
    def from_stroke3(cls, data: np.ndarray, source: str = "<stroke-3>") -> "Strokes":
        """stroke-3 rows (dx, dy, pen_lifted): offsets; a 1 in column 3 ends the current stroke."""
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"{source}: stroke-3: expected an (n, 3) array, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError(f"{source}: stroke-3: expected finite (dx, dy, pen) rows, got NaN or inf")
        xy = np.cumsum(arr[:, :2], axis=0)
        ends = np.flatnonzero(arr[:, 2] > 0.5)
        strokes, start = [], 0
        for end in list(ends) + [len(arr) - 1]:
            if end >= start:
                strokes.append(xy[start : end + 1])
            start = end + 1
        return cls([s.astype(np.float32) for s in strokes], source=source)

    def to_stroke3(self) -> np.ndarray:
        """Inverse of :meth:`from_stroke3`; the first offset is from the origin."""
        rows = []
        for s in self.strokes:
            lift = np.zeros((len(s), 1), dtype=np.float32)
            lift[-1] = 1
            rows.append(np.concatenate([s, lift], axis=1))
        if not rows:
            return np.zeros((0, 3), dtype=np.float32)
        arr = np.concatenate(rows)
        out = arr.copy()
        out[1:, :2] = arr[1:, :2] - arr[:-1, :2]
        return out

    @classmethod
    def from_ndjson_drawing(cls, drawing: list, source: str = "<ndjson>") -> "Strokes":
        """Quick, Draw! ``drawing``: a list of strokes ``[xs, ys]`` or ``[xs, ys, ts]``."""
        strokes = []
        for i, stroke in enumerate(drawing):
            if not isinstance(stroke, (list, tuple)) or len(stroke) < 2 or len(stroke[0]) != len(stroke[1]):
                raise ValueError(f"{source}: drawing[{i}]: expected [xs, ys(, ts)] of equal length")
            strokes.append(np.stack([np.asarray(stroke[0], float), np.asarray(stroke[1], float)], axis=1))
        return cls(strokes, source=source)

    def normalized(self, size: float = 256.0) -> "Strokes":
        """Scale and shift the ink into a ``size`` square keeping aspect (the 'simplified' frame)."""
        x0, y0, x1, y1 = self.bounds()
        scale = size / max(x1 - x0, y1 - y0, 1e-6)
        return Strokes([(s - [x0, y0]) * scale for s in self.strokes], (0.0, 0.0, size, size), self.source)


def rasterize_sketch(strokes: Strokes, size: int, stroke_width: float = STROKE_WIDTH, fit: str = "auto",
                     width_factor: float = 1.0) -> Image.Image:
    """The one rule by which a vector sketch becomes a model's input, for training data, query
    files and the drawing page alike: a sketch with a canvas (an SVG viewBox, the synthetic unit
    canvas) is placed on it as drawn; one without (Quick, Draw! files, strokes from the page) has
    its ink's bounding box fitted, centred, with :data:`BBOX_PADDING` of the side as margin; lines
    are ``stroke_width`` pixels per 64 of the image side (times ``width_factor``: augmentation),
    whatever the sketch's own units or line width were."""
    return rasterize(strokes, size, stroke_width=stroke_width * size / 64.0 * width_factor, fit=fit,
                     padding=BBOX_PADDING)


def rasterize(
    strokes: Strokes,
    size: int | tuple[int, int] = 64,
    stroke_width: float = 2.0,
    fit: str = "auto",
    padding: float = BBOX_PADDING,
    supersample: int = 4,
) -> Image.Image:
    """Draw black strokes on white and return an 8-bit grey (``L``) image.

    ``stroke_width`` is in output pixels, so a sketch looks the same at any size relative to
    its line weight. ``fit='bbox'`` scales the ink's bounding box into the image (keeping
    aspect, with ``padding`` as a fraction of the side); ``fit='canvas'`` maps the sketch's
    canvas onto the image; ``'auto'`` uses the canvas when the sketch has one.
    Raises :class:`EmptySketchError` for a sketch with no points, and :class:`DataError` for one
    over :data:`MAX_STROKE_POINTS` or :data:`MAX_INK_LENGTH`.
    """
    if strokes.is_empty():
        raise EmptySketchError(f"{strokes.source}: strokes: expected at least one point, got an empty sketch")
    if strokes.num_points > MAX_STROKE_POINTS:
        raise DataError(f"{strokes.source}: points: expected at most {MAX_STROKE_POINTS:,} points to draw "
                        f"(MAX_STROKE_POINTS), got {strokes.num_points:,}")
    w, h = (size, size) if isinstance(size, int) else size
    ss = max(1, int(supersample))
    W, H = w * ss, h * ss
    if fit not in ("auto", "bbox", "canvas"):
        raise ValueError(f"fit: expected 'auto', 'bbox' or 'canvas', got {fit!r}")
    use_canvas = strokes.canvas is not None and fit in ("auto", "canvas")
    if use_canvas:
        cx, cy, cw, ch = strokes.canvas
        scale = min(W / max(cw, 1e-6), H / max(ch, 1e-6))
        off = np.array([(W - cw * scale) / 2 - cx * scale, (H - ch * scale) / 2 - cy * scale])
    else:
        x0, y0, x1, y1 = strokes.bounds()
        inner_w, inner_h = W * (1 - 2 * padding), H * (1 - 2 * padding)
        scale = min(inner_w / max(x1 - x0, 1e-6), inner_h / max(y1 - y0, 1e-6))
        off = np.array([W / 2 - (x0 + x1) / 2 * scale, H / 2 - (y0 + y1) / 2 * scale])
    ink = sum(float(np.linalg.norm(np.diff(st, axis=0), axis=1).sum()) for st in strokes.strokes) * scale
    if ink > MAX_INK_LENGTH * max(W, H):
        raise DataError(f"{strokes.source}: strokes: expected a total length of at most {MAX_INK_LENGTH} image "
                        f"sides (MAX_INK_LENGTH), got {ink / max(W, H):,.0f}")
    img = Image.new("L", (W, H), 255)
    draw = ImageDraw.Draw(img)
    width = max(1, int(round(stroke_width * ss)))
    r = width / 2
    for s in strokes.strokes:
        pts = s * scale + off
        flat = [tuple(p) for p in pts.tolist()]
        if len(flat) > 1:
            draw.line(flat, fill=0, width=width, joint="curve")
        for x, y in (flat[0], flat[-1]):  # round caps, and dots for single-point strokes
            draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
    if ss > 1:
        img = img.resize((w, h), Image.Resampling.LANCZOS if hasattr(Image, "Resampling") else Image.LANCZOS)
    return img
