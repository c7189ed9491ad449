"""Geometry of the synthetic shapes: ``Part`` (one polygon or polyline), ``Shape`` and the curves
the shape families are built from.

Coordinates are (x, y) with y pointing down. Families build parts in a local frame of about
[-1, 1]²; :func:`sbirkit.data.synthetic.shapes.make_shape` maps them onto the unit canvas [0, 1]².
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..strokes import Strokes

TAU = 2.0 * np.pi
CANVAS = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Part:
    """One primitive: a polygon (``closed``) or an open polyline.

    ``role`` picks its colour in the photo (``"hole"`` shows the background through it);
    ``detail`` marks small parts a simplifying drawer may leave out; ``width`` is the drawn
    thickness of an open part in the photo, in the same units as ``points``.
    """

    points: np.ndarray
    closed: bool = True
    role: str = "body"
    detail: bool = False
    width: float = 0.0

    @cached_property
    def path(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(points as traced, cumulative arc length, arc positions of sharp corners): the outline
        a pen follows (a closed part returns to its first point). Computed once per part."""
        ring = np.vstack([self.points, self.points[:1]]) if self.closed else self.points
        cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(ring, axis=0).T))])
        return ring, cum, cum[corner_indices(self.points, self.closed)]

    def mapped(self, matrix: np.ndarray, offset: np.ndarray, scale: float) -> "Part":
        pts = self.points @ matrix.T + offset
        pts.setflags(write=False)
        return Part(pts, self.closed, self.role, self.detail, self.width * scale)


@dataclass(frozen=True)
class Shape:
    """One object instance: its class and its parts in draw order (later parts on top)."""

    class_name: str
    parts: tuple[Part, ...]
    light: tuple[float, float] = field(default=(0.0, -1.0))  # unit direction the light comes from

    def bounds(self) -> tuple[float, float, float, float]:
        pts = np.concatenate([p.points for p in self.parts])
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())

    def outline(self) -> Strokes:
        """The exact outline of every part as strokes on the unit canvas (a clean 'edge map')."""
        strokes = [np.vstack([p.points, p.points[:1]]) if p.closed else p.points for p in self.parts]
        return Strokes(strokes, canvas=CANVAS, source=f"<synthetic {self.class_name} outline>")


def corner_indices(pts: np.ndarray, closed: bool, min_turn_deg: float = 35.0) -> np.ndarray:
    """Vertices where the outline turns by more than ``min_turn_deg`` (kept when re-sampling)."""
    if len(pts) < 3:
        return np.zeros(0, dtype=int)
    prev = pts - np.roll(pts, 1, axis=0)
    nxt = np.roll(pts, -1, axis=0) - pts
    turn = np.arctan2(nxt[:, 1], nxt[:, 0]) - np.arctan2(prev[:, 1], prev[:, 0])
    turn = np.abs((turn + np.pi) % TAU - np.pi)
    idx = np.flatnonzero(turn > np.deg2rad(min_turn_deg))
    return idx if closed else idx[(idx > 0) & (idx < len(pts) - 1)]


# ---- curves -------------------------------------------------------------------------------
def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40, phase: float = 0.0) -> np.ndarray:
    t = phase + np.linspace(0.0, TAU, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 20) -> np.ndarray:
    """Points on an ellipse from angle ``a0`` to ``a1`` (radians, y down), both ends included."""
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float, n: int = 5) -> np.ndarray:
    r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
    corners = [
        (x1 - r, y0 + r, -np.pi / 2),
        (x1 - r, y1 - r, 0.0),
        (x0 + r, y1 - r, np.pi / 2),
        (x0 + r, y0 + r, np.pi),
    ]
    return np.vstack([arc(cx, cy, r, r, a, a + np.pi / 2, n) for cx, cy, a in corners])


def star(cx: float, cy: float, r_out: float, r_in: float, k: int, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(2 * k) * np.pi / k
    r = np.where(np.arange(2 * k) % 2 == 0, r_out, r_in)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def bezier(*ctrl, n: int = 16) -> np.ndarray:
    """A Bézier curve through control points ``ctrl`` (Bernstein form), ``n`` samples."""
    p = np.asarray(ctrl, dtype=float)
    deg = len(p) - 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    coef = [math.comb(deg, i) for i in range(deg + 1)]
    out = np.zeros((n, 2))
    for i in range(deg + 1):
        out += coef[i] * t**i * (1 - t) ** (deg - i) * p[i]
    return out


def lens(p0, p1, width: float, n: int = 12) -> np.ndarray:
    """A leaf/petal outline between ``p0`` and ``p1``, ``width`` across at its middle."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-9)
    t = np.linspace(0.0, 1.0, n)[:, None]
    bulge = np.sin(np.pi * t) * width / 2
    upper = p0 + t * d + bulge * normal
    lower = p0 + t[::-1] * d - bulge[::-1] * normal
    return np.vstack([upper, lower[1:-1]])


def wave(p0, p1, amp: float, cycles: float, n: int = 24, phase: float = 0.0) -> np.ndarray:
    """A wavy open line from ``p0`` to ``p1``."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-9)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return p0 + t * d + amp * np.sin(TAU * cycles * t + phase) * normal


def rotate(points: np.ndarray, angle: float, center=(0.0, 0.0)) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[c, -s], [s, c]])
    ctr = np.asarray(center, float)
    return (np.asarray(points, float) - ctr) @ m.T + ctr
