"""Hand-drawn sketches of a ``Shape``: each part's outline retraced as strokes in a user's style.

A stroke follows the exact outline re-sampled at the user's spacing (sharp corners kept), starts
at a random point of a closed outline, over- or under-shoots its end, drifts by a slow
sinusoidal wobble and trembles by smoothed jitter; small details and minor parts may be left
out (never the main outline). The whole drawing is slightly rotated, scaled and shifted, as a
person copying a photo would misplace it.
"""

from __future__ import annotations

import numpy as np

from ..strokes import Strokes
from .primitives import CANVAS, TAU, Part, Shape
from .styles import UserStyle

_MINOR = 0.35  # parts smaller than this fraction of the largest may be dropped


def draw_sketch(
    shape: Shape, style: UserStyle, rng: np.random.Generator, source: str = "<synthetic sketch>"
) -> Strokes:
    """The sketch of ``shape`` by a user with ``style``; strokes on the unit canvas."""
    x0, y0, x1, y1 = shape.bounds()
    ctr = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    ang = rng.normal(0.0, 0.04)
    k = style.scale * rng.uniform(0.96, 1.04)
    c, s = np.cos(ang), np.sin(ang)
    m = k * np.array([[c, s], [-s, c]])  # row-vector form: xy @ m
    off = ctr + rng.normal(0.0, 0.012, 2) - ctr @ m
    extents = [_extent(p.points) for p in shape.parts]
    minor = _MINOR * max(extents)
    strokes: list[np.ndarray] = []
    for part, extent in zip(shape.parts, extents):
        if (part.detail or extent < minor) and rng.random() < style.drop_prob:
            continue
        if part.detail and rng.random() < style.detail_drop:
            continue
        strokes.extend(_part_strokes(part, style, k, m, off, rng))
    if not strokes:  # every part left out: keep the largest
        strokes = _part_strokes(shape.parts[int(np.argmax(extents))], style, k, m, off, rng)
    return Strokes(strokes, canvas=CANVAS, source=source)


def _extent(points: np.ndarray) -> float:
    return float(np.hypot(*(points.max(0) - points.min(0))))


def _part_strokes(
    part: Part, style: UserStyle, k: float, m: np.ndarray, off: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """The strokes of one part; arc lengths are in the part's own units (``k`` converts the
    user's canvas-unit spacing and overshoot), the similarity ``m, off`` is applied last."""
    ring, cum, corners = part.path
    length = float(cum[-1])
    if length < 1e-6:
        return [(ring[:1] @ m + off).astype(np.float32)]
    closed = part.closed
    spacing = min(style.spacing / k, length / (8 if closed else 3))
    if closed:
        t0 = rng.uniform(0.0, length)
        spans = [(t0, t0 + length)]
        if length > 0.5 and rng.random() < style.split_prob:
            tb = t0 + rng.uniform(0.35, 0.65) * length
            spans = [(t0, tb), (tb, t0 + length)]
        corners = np.concatenate([corners, corners + length, corners + 2 * length])
    else:
        spans = [(0.0, length)]
    out = []
    for a, b in spans:
        ends = rng.uniform(-style.undershoot, style.overshoot, 2) / k
        if not closed:
            a -= ends[0]
        b = max(b + ends[1], a + 0.5 * spacing)
        t = np.sort(np.concatenate([np.arange(a, b, spacing), [b], corners[(corners > a) & (corners < b)]]))
        xy = _along(ring, cum, t, closed) @ m + off
        amp = style.wobble * rng.uniform(0.5, 1.0)
        lam = rng.uniform(0.25, 0.6, 2) / k
        xy += amp * np.sin(TAU * (t - a)[:, None] / lam + rng.uniform(0.0, TAU, 2))
        if style.jitter > 0:
            noise = rng.normal(0.0, style.jitter, xy.shape)
            if len(noise) > 2:
                noise[1:-1] = 0.25 * noise[:-2] + 0.5 * noise[1:-1] + 0.25 * noise[2:]
            xy += noise
        out.append(xy.astype(np.float32))
    return out


def _along(ring: np.ndarray, cum: np.ndarray, t: np.ndarray, closed: bool) -> np.ndarray:
    """Points at arc-length positions ``t``: wrapping round a closed ring, extrapolating along
    the end tangents of an open line (for overshoot)."""
    length = cum[-1]
    tt = np.mod(t, length) if closed else np.clip(t, 0.0, length)
    xy = np.stack([np.interp(tt, cum, ring[:, 0]), np.interp(tt, cum, ring[:, 1])], 1)
    if not closed:
        before, after = t < 0, t > length
        if before.any():
            d0 = ring[1] - ring[0]
            xy[before] += t[before, None] * d0 / max(np.hypot(*d0), 1e-9)
        if after.any():
            d1 = ring[-1] - ring[-2]
            xy[after] += (t[after, None] - length) * d1 / max(np.hypot(*d1), 1e-9)
    return xy
