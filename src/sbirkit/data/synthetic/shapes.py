"""The shape families: one parametric builder per object class, and ``make_shape`` to place an
instance on the unit canvas.

Each builder draws its own parameters (proportions, part counts such as petals, windows or
rays) from the generator it is given, so every instance of a class looks different; the
photo and the sketch of an instance are both rendered from the one ``Shape`` built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .primitives import (
    TAU,
    Part,
    Shape,
    arc,
    bezier,
    ellipse,
    lens,
    rect,
    rounded_rect,
    star,
    wave,
)

Colour = tuple[int, ...]  # (r, g, b) or (r, g, b, alpha)
Builder = Callable[[np.random.Generator], list[Part]]


@dataclass(frozen=True)
class Family:
    """A class of objects: its builder, class-typical colours per part role, and how far an
    instance may be rotated (degrees) or mirrored when placed."""

    name: str
    build: Builder
    palette: dict[str, tuple[Colour, ...]]
    rotation: float = 20.0
    flip: bool = True


FAMILIES: dict[str, Family] = {}


def family(name: str, palette: dict[str, tuple[Colour, ...]], rotation: float = 20.0, flip: bool = True):
    """Register a shape builder as the class ``name`` (definition order is the class order)."""

    def decorator(build: Builder) -> Builder:
        if name in FAMILIES:
            raise ValueError(f"shape family {name!r} is defined twice")
        FAMILIES[name] = Family(name, build, palette, rotation, flip)
        return build

    return decorator


def _open(points, role: str, width: float, detail: bool = False) -> Part:
    return Part(np.asarray(points, float), closed=False, role=role, detail=detail, width=width)


def _poly(points, role: str = "body", detail: bool = False, width: float = 0.0) -> Part:
    return Part(np.asarray(points, float), closed=True, role=role, detail=detail, width=width)


# ---- the families (local frame about [-1, 1]², y down) -----------------------------------
BROWN = ((120, 75, 40), (95, 60, 35), (140, 95, 55))
GREEN = ((60, 140, 50), (40, 110, 45), (90, 160, 60), (50, 120, 80))
DARK = ((30, 30, 30), (50, 40, 35))
WHITE = ((240, 240, 235), (225, 225, 215))


@family(
    "house",
    {
        "body": ((222, 196, 150), (170, 75, 55), (235, 232, 220), (230, 200, 95), (125, 145, 175)),
        "roof": ((150, 40, 30), (105, 65, 40), (85, 85, 95), (50, 60, 110)),
        "chimney": ((130, 60, 40), (100, 100, 100)),
        "door": ((100, 60, 30), (65, 40, 30), (160, 35, 35)),
        "window": ((170, 210, 240), (250, 230, 150)),
        "frame": WHITE,
    },
    rotation=8,
)
def house(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    w, h = u(1.0, 1.6), u(0.7, 1.1)
    roof_h, over = u(0.45, 0.85), u(0.0, 0.15)
    left, right, px = -w / 2 - over, w / 2 + over, u(-0.08, 0.08) * w
    half_top = u(0.12, 0.3) * w if rng.random() < 0.3 else 0.0
    roof_x = np.array([left, px - half_top - 1e-3, px + half_top + 1e-3, right])
    roof_y = np.array([0.0, -roof_h, -roof_h, 0.0])
    parts = []
    if rng.random() < 0.6:
        cw = u(0.1, 0.18) * w
        cx0 = px + half_top + u(0.1, 0.25) * w
        cx0 = min(cx0, right - cw - 0.05)
        ry0, ry1 = np.interp([cx0, cx0 + cw], roof_x, roof_y)
        top = ry0 - u(0.15, 0.3)
        parts.append(_poly([(cx0, ry0), (cx0, top), (cx0 + cw, top), (cx0 + cw, ry1)], "chimney"))
    parts.append(_poly(np.stack([roof_x, roof_y], 1), "roof"))
    parts.append(_poly(rect(-w / 2, 0, w / 2, h), "body"))
    ncol = 3 if w > 1.25 else 2
    colw = w / ncol
    door_col = int(rng.integers(ncol))
    dw, dh = u(0.35, 0.6) * colw, u(0.4, 0.65) * h
    dx = -w / 2 + (door_col + 0.5) * colw + u(-0.1, 0.1) * colw
    parts.append(_poly(rect(dx - dw / 2, h - dh, dx + dw / 2, h), "door"))
    wy, ws, asp = u(0.25, 0.4) * h, u(0.35, 0.55) * colw, u(0.8, 1.3)
    cross = rng.random() < 0.5
    cols = [c for c in range(ncol) if c != door_col and rng.random() < 0.85] or [(door_col + 1) % ncol]
    for c in cols:
        cx = -w / 2 + (c + 0.5) * colw
        x0, y0, x1, y1 = cx - ws / 2, wy - ws * asp / 2, cx + ws / 2, wy + ws * asp / 2
        parts.append(_poly(rect(x0, y0, x1, y1), "window", detail=True))
        if cross:
            parts.append(_open([(cx, y0), (cx, y1)], "frame", 0.025, detail=True))
            parts.append(_open([(x0, wy), (x1, wy)], "frame", 0.025, detail=True))
    return parts


@family(
    "tree",
    {"trunk": BROWN, "leaves": GREEN, "fruit": ((200, 40, 40), (230, 150, 30))},
    rotation=6,
)
def tree(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    tw, th = u(0.14, 0.28), u(0.5, 0.9)
    parts = [_poly(rect(-tw / 2, -0.1, tw / 2, th), "trunk")]
    if rng.random() < 0.6:
        rx, ry = u(0.55, 0.85), u(0.55, 0.9)
        k, bump = int(rng.integers(5, 10)), u(0.0, 0.08)
        t = np.linspace(0.0, TAU, 64, endpoint=False)
        r = 1 + bump * np.cos(k * t + u(0, TAU))
        cy = -ry * 0.85
        parts.append(_poly(np.stack([rx * r * np.cos(t), cy + ry * r * np.sin(t)], 1), "leaves"))
        if rng.random() < 0.4:
            for _ in range(int(rng.integers(2, 6))):
                a, d = u(0, TAU), u(0.0, 0.6)
                fr = u(0.06, 0.1)
                parts.append(_poly(ellipse(rx * d * np.cos(a), cy + ry * d * np.sin(a), fr, fr, 12), "fruit", True))
    else:
        n, base, tier = int(rng.integers(2, 5)), u(0.9, 1.3), u(0.45, 0.7)
        for i in range(n):
            yb = -i * tier * 0.6
            half = base / 2 * (1 - i * 0.7 / n)
            parts.append(_poly([(-half, yb), (half, yb), (u(-0.03, 0.03), yb - tier)], "leaves"))
    return parts


@family(
    "fish",
    {
        "body": ((240, 140, 40), (70, 130, 200), (200, 60, 60), (230, 200, 60), (150, 150, 160)),
        "fin": ((220, 110, 30), (50, 100, 170), (170, 50, 50)),
        "eye": DARK,
        "line": DARK,
    },
    rotation=20,
)
def fish(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    L = u(1.3, 1.9)
    H, Hb, a = L * u(0.2, 0.34), u(0.7, 1.05), u(0.55, 1.0)
    x = np.linspace(-L / 2, L / 2, 28)
    f = np.clip(1 - (2 * x / L) ** 2, 0, None) ** a
    upper = np.stack([x, -H * f], 1)
    lower = np.stack([x[::-1], H * Hb * f[::-1]], 1)
    tl, th, notch = u(0.3, 0.5), u(0.2, 0.4), u(0.45, 0.9)
    xt = L / 2 - 0.08
    parts = [_poly([(xt, 0), (xt + tl, -th), (xt + tl * notch, 0), (xt + tl, th)], "fin")]
    if rng.random() < 0.7:
        f0, f1 = u(-0.25, -0.05) * L, u(0.1, 0.25) * L
        y0, y1 = np.interp([f0, f1], x, -H * f)
        apex = (f1 + u(-0.05, 0.1), min(y0, y1) - u(0.15, 0.3))
        parts.append(_poly([(f0, y0 + 0.05), apex, (f1, y1 + 0.05)], "fin"))
    parts.append(_poly(np.vstack([upper, lower[1:-1]]), "body"))
    er = H * u(0.12, 0.2)
    parts.append(_poly(ellipse(-L * 0.3, -H * 0.25, er, er, 14), "eye", detail=True))
    if rng.random() < 0.6:
        gx = -L * u(0.12, 0.2)
        gy = float(np.interp(gx, x, H * f)) * 0.8
        parts.append(_open(bezier((gx, -gy), (gx + 0.12, 0), (gx, gy), n=10), "line", 0.02, True))
    return parts


@family("star", {"body": ((250, 210, 40), (240, 170, 30), (230, 80, 60), (90, 150, 230))}, rotation=36)
def star_(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    k = int(rng.choice([5, 5, 5, 6, 7, 8]))
    pts = star(0, 0, 1.0, u(0.36, 0.56), k)
    pts *= rng.uniform(0.92, 1.08, size=(len(pts), 1))
    pts[:, 0] *= u(0.85, 1.15)
    return [_poly(pts, "body")]


@family(
    "cup",
    {
        "body": ((235, 235, 230), (200, 60, 50), (60, 110, 180), (240, 200, 70), (90, 160, 110)),
        "inside": ((90, 55, 30), (60, 40, 25)),
        "saucer": WHITE + ((180, 200, 220),),
        "steam": ((170, 170, 170), (200, 200, 200)),
    },
    rotation=8,
)
def cup(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    tw, h = u(0.8, 1.1), u(0.75, 1.2)
    bw, r = tw * u(0.62, 1.0), u(0.05, 0.18)
    parts = []
    if rng.random() < 0.4:
        parts.append(_poly(ellipse(0, h, tw * u(0.75, 0.95), u(0.07, 0.12), 32), "saucer"))
    ym = h * u(0.35, 0.5)
    xs = tw / 2 + (bw / 2 - tw / 2) * ym / h
    hw, hh, thick = u(0.2, 0.35), u(0.2, 0.3), u(0.07, 0.12)
    outer = arc(xs - 0.03, ym, hw, hh, -np.pi / 2, np.pi / 2, 16)
    inner = arc(xs - 0.03, ym, hw - thick, hh - thick, np.pi / 2, -np.pi / 2, 16)
    parts.append(_poly(np.vstack([outer, inner]), "body"))
    right = np.vstack([[(tw / 2, 0.0)], bezier((bw / 2, h - r), (bw / 2, h), (bw / 2 - r, h), n=6)])
    left = right[::-1] * [-1, 1]
    parts.append(_poly(np.vstack([right, left]), "body"))
    parts.append(_poly(ellipse(0, 0, tw / 2 * 0.97, u(0.05, 0.1), 28), "inside", detail=True))
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            x0 = u(-0.25, 0.25) * tw
            parts.append(
                _open(
                    wave((x0, -0.12), (x0 + u(-0.1, 0.1), -u(0.45, 0.7)), 0.05, 1.2, 14, u(0, TAU)),
                    "steam",
                    0.025,
                    True,
                )
            )
    return parts


@family(
    "umbrella",
    {
        "body": ((200, 40, 50), (40, 90, 180), (240, 190, 40), (60, 150, 80), (150, 60, 160)),
        "handle": ((40, 30, 25), (110, 70, 40)),
        "rib": DARK,
    },
    rotation=20,
)
def umbrella(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    R, Hc, k = u(0.9, 1.2), u(0.5, 0.85), int(rng.integers(3, 7))
    ls, hr = u(0.8, 1.2), u(0.12, 0.2)
    shaft = np.vstack([[(0.0, -Hc)], arc(hr, ls, hr, hr, np.pi, 0.0, 10)])
    parts = [_open(shaft, "handle", 0.05)]
    top = arc(0, 0, R, Hc, np.pi, TAU, 32)
    xs = np.linspace(R, -R, k + 1)
    dip = u(0.06, 0.18) * 2 * R / k
    scallops = [bezier((xs[i], 0), ((xs[i] + xs[i + 1]) / 2, -2 * dip), (xs[i + 1], 0), n=8)[1:] for i in range(k)]
    parts.append(_poly(np.vstack([top] + scallops)[:-1], "body"))
    for xi in xs[1:-1]:
        parts.append(_open(bezier((0, -Hc), (xi * 0.55, -Hc * 0.7), (xi, 0), n=8), "rib", 0.015, True))
    parts.append(_open([(0, -Hc), (0, -Hc - u(0.08, 0.15))], "handle", 0.04, True))
    return parts


@family(
    "car",
    {
        "body": ((200, 30, 40), (40, 80, 170), (240, 240, 240), (40, 40, 45), (230, 190, 40), (60, 140, 90)),
        "window": ((160, 200, 230), (120, 150, 180)),
        "wheel": ((25, 25, 25),),
        "hub": ((190, 190, 195),),
        "light": ((255, 240, 150),),
    },
    rotation=6,
)
def car(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    L, bh = u(1.6, 2.2), u(0.35, 0.5)
    cb = L * u(0.45, 0.65)
    ct, ch, off = cb * u(0.5, 0.85), u(0.3, 0.5), u(-0.12, 0.12) * L
    tx = off + u(-0.08, 0.08) * L
    cabin = [(off - cb / 2, 0.02), (tx - ct / 2, -ch), (tx + ct / 2, -ch), (off + cb / 2, 0.02)]
    parts = [_poly(cabin, "body"), _poly(rounded_rect(-L / 2, 0, L / 2, bh, u(0.05, 0.15)), "body")]
    m = 0.06
    mid_b, mid_t = off, tx
    parts.append(
        _poly(
            [
                (off - cb / 2 + 2 * m, -m / 2),
                (tx - ct / 2 + m, -ch + m),
                (mid_t - m / 2, -ch + m),
                (mid_b - m / 2, -m / 2),
            ],
            "window",
            True,
        )
    )
    parts.append(
        _poly(
            [
                (mid_b + m / 2, -m / 2),
                (mid_t + m / 2, -ch + m),
                (tx + ct / 2 - m, -ch + m),
                (off + cb / 2 - 2 * m, -m / 2),
            ],
            "window",
            True,
        )
    )
    r, wx = u(0.16, 0.24), L * u(0.26, 0.34)
    for x in (-wx, wx):
        parts.append(_poly(ellipse(x, bh, r, r, 20), "wheel"))
        parts.append(_poly(ellipse(x, bh, r * 0.45, r * 0.45, 12), "hub", True))
    parts.append(_poly(ellipse(-L / 2 + 0.09, bh * 0.35, 0.06, 0.05, 10), "light", True))
    return parts


@family(
    "boat",
    {
        "body": ((150, 40, 40), (60, 70, 120), (120, 80, 45), (235, 235, 230)),
        "sail": ((245, 245, 240), (240, 220, 180), (220, 80, 60)),
        "mast": BROWN,
        "flag": ((220, 40, 40), (40, 80, 200)),
        "water": ((40, 100, 180),),
        "porthole": ((200, 220, 240),),
    },
    rotation=10,
)
def boat(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    tw = u(1.4, 2.0)
    bw, hh, skew = tw * u(0.5, 0.75), u(0.28, 0.45), u(-0.1, 0.1)
    mx, mh = u(-0.2, 0.15) * tw, u(1.0, 1.5)
    parts = [_open([(mx, 0), (mx, -mh)], "mast", 0.04)]
    sw = u(0.45, 0.8) * tw / 2
    parts.append(_poly([(mx + 0.04, -mh * 0.95), (mx + 0.04, -0.1), (mx + sw, -0.1)], "sail"))
    if rng.random() < 0.6:
        jw = u(0.3, 0.6) * tw / 2
        parts.append(_poly([(mx - 0.04, -mh * 0.85), (mx - 0.04, -0.1), (mx - jw, -0.1)], "sail"))
    if rng.random() < 0.5:
        parts.append(_poly([(mx, -mh), (mx + u(0.15, 0.25), -mh + 0.06), (mx, -mh + 0.12)], "flag", True))
    parts.append(_poly([(-tw / 2, 0), (tw / 2, 0), (bw / 2 + skew, hh), (-bw / 2 + skew, hh)], "body"))
    for i in range(int(rng.integers(0, 4))):
        x = -bw / 3 + i * bw / 4
        parts.append(_poly(ellipse(x, hh * 0.4, 0.05, 0.05, 10), "porthole", True))
    if rng.random() < 0.5:
        parts.append(_open(wave((-tw / 2, hh + 0.1), (tw / 2, hh + 0.1), 0.04, u(2, 4), 30), "water", 0.03, True))
    return parts


@family(
    "key",
    {"body": ((200, 165, 60), (180, 180, 185), (170, 110, 60))},
    rotation=40,
)
def key(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    R, L, t = u(0.3, 0.45), u(1.3, 1.9), u(0.1, 0.16)
    bx = -L / 2 + R
    xb, xe = bx + R * 0.8, L / 2
    bottom, x = [(xe, t / 2)], xe
    for _ in range(int(rng.integers(2, 5))):
        w, d = u(0.06, 0.12), u(0.08, 0.22)
        bottom += [(x, t / 2 + d), (x - w, t / 2 + d), (x - w, t / 2)]
        x -= w + u(0.0, 0.08)
    bottom.append((xb, t / 2))
    parts = [_poly([(xb, -t / 2), (xe, -t / 2)] + bottom, "body")]
    if rng.random() < 0.3:
        parts.append(_poly(rounded_rect(bx - R, -R, bx + R, R, R * 0.4), "body"))
    else:
        parts.append(_poly(ellipse(bx, 0, R, R * u(0.8, 1.1), 28), "body"))
    rh = R * u(0.3, 0.5)
    parts.append(_poly(ellipse(bx - R * u(0.0, 0.3), 0, rh, rh, 16), "hole", True))
    return parts


@family(
    "bell",
    {
        "body": ((210, 170, 50), (190, 140, 60), (180, 180, 190)),
        "clapper": ((120, 90, 40), (60, 60, 60)),
        "hanger": ((120, 90, 40), (150, 40, 40)),
        "band": ((150, 110, 30),),
    },
    rotation=25,
)
def bell(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    wt, wr, h = u(0.3, 0.45), u(0.7, 1.0), u(1.1, 1.5)
    y0, y1 = -h / 2, h / 2
    right = bezier((0, y0), (wt * 1.5, y0), (wt * u(0.7, 1.0), y1 - h * u(0.15, 0.3)), (wr, y1), n=20)
    rim = bezier((wr, y1), (0, y1 + u(0.1, 0.3)), (-wr, y1), n=10)[1:-1]
    left = right[::-1] * [-1, 1]
    cr = u(0.1, 0.16)
    parts = [
        _poly(ellipse(0, y0 - 0.1, 0.12, 0.12, 16), "hanger"),
        _poly(ellipse(0, y1 + cr * 0.7, cr, cr, 16), "clapper"),
        _poly(np.vstack([right, rim, left]), "body"),
    ]
    yb = y1 - h * u(0.1, 0.2)
    xb = float(np.interp(yb, right[:, 1], right[:, 0]))
    parts.append(_open(bezier((-xb, yb), (0, yb + 0.1), (xb, yb), n=10), "band", 0.03, True))
    return parts


@family(
    "flower",
    {
        "petal": ((230, 60, 80), (250, 200, 40), (240, 240, 240), (160, 80, 200), (250, 140, 60)),
        "center": ((240, 190, 30), (110, 70, 30)),
        "stem": GREEN,
        "leaf": GREEN,
    },
    rotation=15,
)
def flower(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    n, pl, rc = int(rng.integers(5, 10)), u(0.45, 0.75), u(0.16, 0.28)
    pw, phase = pl * u(0.35, 0.7), u(0, TAU)
    ls = u(0.9, 1.4)
    end = (u(-0.15, 0.15), ls)
    stem = bezier((0, 0), (u(-0.3, 0.3), ls / 2), end, n=14)
    parts = [_open(stem, "stem", 0.05)]
    for side in rng.permutation([-1, 1])[: int(rng.integers(0, 3))]:
        i = int(rng.integers(6, 11))
        p0 = stem[i]
        p1 = p0 + np.array([side * u(0.3, 0.45), -u(0.05, 0.25)])
        parts.append(_poly(lens(p0, p1, u(0.12, 0.2)), "leaf"))
    for i in range(n):
        a = phase + i * TAU / n
        d = np.array([np.cos(a), np.sin(a)])
        parts.append(_poly(lens(d * rc * 0.5, d * (rc * 0.5 + pl), pw, 12), "petal"))
    parts.append(_poly(ellipse(0, 0, rc, rc, 20), "center"))
    return parts


@family("moon", {"body": ((245, 225, 120), (240, 240, 220), (230, 190, 80)), "eye": DARK}, rotation=180, flip=False)
def moon(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    d, r2 = u(0.35, 0.7), u(0.85, 1.0)
    x = (d * d + 1 - r2 * r2) / (2 * d)
    y = np.sqrt(max(1 - x * x, 1e-6))
    a, b = np.arctan2(y, x), np.arctan2(y, x - d)
    outer = arc(0, 0, 1, 1, a, TAU - a, 36)
    inner = arc(d, 0, r2, r2, TAU - b, b, 30)[1:-1]
    parts = [_poly(np.vstack([outer, inner]), "body")]
    if rng.random() < 0.3:
        parts.append(_poly(ellipse(-0.55, -0.3, 0.07, 0.07, 10), "eye", True))
    return parts


@family("heart", {"body": ((220, 30, 50), (240, 90, 140), (180, 20, 40), (150, 60, 200)), "shine": WHITE})
def heart(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    t = np.linspace(0, TAU, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3 / 16
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) / 16
    x = x * u(0.85, 1.2) * np.where(x < 0, u(0.92, 1.08), 1.0)
    y = y * u(0.85, 1.1)
    parts = [_poly(np.stack([x, y], 1), "body")]
    if rng.random() < 0.5:
        parts.append(_poly(lens((-0.75, -0.35), (-0.45, -0.7), 0.12), "shine", True))
    return parts


@family(
    "arrow",
    {"body": ((40, 40, 40), (200, 40, 40), (40, 120, 200), (60, 160, 60), (240, 170, 30)), "feather": WHITE},
    rotation=180,
    flip=False,
)
def arrow(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    L, t = u(1.2, 2.0), u(0.12, 0.22)
    hl, hw = u(0.35, 0.6), u(0.45, 0.8)
    tail = -L / 2 + (u(0.1, 0.2) if rng.random() < 0.4 else 0.0)
    pts = [
        (-L / 2, -t / 2),
        (L / 2 - hl, -t / 2),
        (L / 2 - hl, -hw / 2),
        (L / 2, 0),
        (L / 2 - hl, hw / 2),
        (L / 2 - hl, t / 2),
        (-L / 2, t / 2),
        (tail, 0),
    ]
    parts = [_poly(pts, "body")]
    if rng.random() < 0.4:
        for s in (-1, 1):
            for dx in (0.08, 0.2):
                x = -L / 2 + dx
                parts.append(_open([(x, s * t / 2), (x - 0.12, s * (t / 2 + 0.15))], "body", 0.03, True))
    return parts


@family("cloud", {"body": ((245, 245, 250), (200, 205, 215), (150, 155, 170)), "rain": ((60, 120, 220),)}, rotation=8)
def cloud(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    k, rx, ry = int(rng.integers(5, 9)), u(0.9, 1.2), u(0.45, 0.65)
    ang = np.sort((np.arange(k) + rng.uniform(-0.25, 0.25, k)) * TAU / k + u(0, TAU))
    anchors = np.stack([rx * np.cos(ang), ry * np.sin(ang)], 1)
    pts = []
    for i in range(k):
        p, q = anchors[i], anchors[(i + 1) % k]
        mid, seg = (p + q) / 2, q - p
        normal = np.array([seg[1], -seg[0]])
        normal /= max(np.hypot(*normal), 1e-9)
        if normal @ mid < 0:
            normal = -normal
        flat = p[1] > 0.3 * ry and q[1] > 0.3 * ry
        bulge = np.hypot(*seg) * (u(0.05, 0.15) if flat else u(0.35, 0.55))
        pts.append(bezier(p, p + normal * bulge * 1.33, q + normal * bulge * 1.33, q, n=12)[:-1])
    parts = [_poly(np.vstack(pts), "body")]
    if rng.random() < 0.3:
        for x in np.linspace(-rx * 0.5, rx * 0.5, int(rng.integers(2, 5))):
            parts.append(_open([(x, ry + 0.15), (x - 0.08, ry + 0.4)], "rain", 0.03, True))
    return parts


@family(
    "sun",
    {"body": ((250, 200, 30), (250, 150, 30), (240, 100, 40)), "ray": ((250, 190, 40), (240, 140, 30)), "face": DARK},
    rotation=30,
)
def sun(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    R, n = u(0.45, 0.6), int(rng.integers(8, 15))
    r0, r1, phase = R * u(1.12, 1.25), R * u(1.5, 1.95), u(0, TAU)
    lines = rng.random() < 0.5
    parts = []
    for i in range(n):
        a = phase + i * TAU / n
        d, nrm = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
        if lines:
            parts.append(_open([d * r0, d * r1], "ray", 0.05))
        else:
            half = r0 * np.pi / n * 0.6
            parts.append(_poly([d * r0 + nrm * half, d * r1, d * r0 - nrm * half], "ray"))
    parts.append(_poly(ellipse(0, 0, R, R, 36), "body"))
    if rng.random() < 0.4:
        for s in (-1, 1):
            parts.append(_poly(ellipse(s * R * 0.35, -R * 0.2, R * 0.08, R * 0.1, 10), "face", True))
        parts.append(_open(arc(0, 0, R * 0.5, R * 0.45, 0.5, np.pi - 0.5, 10), "face", 0.03, True))
    return parts


_BOLT_2 = [(0.15, -1), (-0.35, 0.1), (0.02, 0.1), (-0.3, 1.0), (0.45, -0.18), (0.1, -0.18), (0.55, -1)]
_BOLT_3 = [
    (0.1, -1),
    (-0.3, -0.25),
    (0.0, -0.25),
    (-0.32, 0.4),
    (-0.02, 0.4),
    (-0.35, 1.0),
    (0.42, 0.2),
    (0.14, 0.2),
    (0.44, -0.4),
    (0.17, -0.4),
    (0.5, -1),
]


@family("lightning", {"body": ((250, 210, 30), (250, 240, 120), (240, 160, 30))}, rotation=20)
def lightning(rng: np.random.Generator) -> list[Part]:
    pts = np.array(_BOLT_2 if rng.random() < 0.5 else _BOLT_3, dtype=float)
    pts += rng.normal(0, 0.04, pts.shape)
    pts[:, 0] *= rng.uniform(0.8, 1.3)
    return [_poly(pts, "body")]


@family(
    "mushroom",
    {
        "cap": ((200, 40, 40), (140, 90, 50), (230, 150, 60), (200, 180, 150)),
        "stem": ((240, 230, 210), (220, 210, 190)),
        "spot": WHITE,
    },
    rotation=12,
)
def mushroom(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    rx, ry = u(0.8, 1.15), u(0.45, 0.8)
    sw, sh = u(0.28, 0.45), u(0.55, 0.95)
    dome = arc(0, 0, rx, ry, np.pi, TAU, 30)
    under = bezier((rx, 0), (0, u(0.1, 0.3)), (-rx, 0), n=12)[1:-1]
    parts = [_poly(rounded_rect(-sw / 2, -0.05, sw / 2, sh, 0.1), "stem"), _poly(np.vstack([dome, under]), "cap")]
    for _ in range(int(rng.integers(0, 6))):
        a, d = u(np.pi * 1.15, np.pi * 1.85), u(0.3, 0.75)
        r = u(0.07, 0.13)
        parts.append(_poly(ellipse(rx * d * np.cos(a), ry * d * np.sin(a), r, r * 0.8, 12), "spot", True))
    return parts


@family(
    "apple",
    {
        "body": ((200, 30, 30), (120, 180, 50), (230, 190, 50), (170, 20, 40)),
        "stem": BROWN,
        "leaf": GREEN,
        "shine": WHITE,
    },
    rotation=15,
)
def apple(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    t = np.linspace(0, TAU, 64, endpoint=False)
    d, d2 = u(0.12, 0.22), u(0.0, 0.08)
    top = np.angle(np.exp(1j * (t + np.pi / 2)))
    bottom = np.angle(np.exp(1j * (t - np.pi / 2)))
    r = 1 - d * np.exp(-((top / 0.4) ** 2)) - d2 * np.exp(-((bottom / 0.3) ** 2))
    rx, ry = u(0.85, 1.05), u(0.8, 1.0)
    x = rx * r * np.cos(t) * (1 - 0.08 * np.sin(t))
    parts = [_poly(np.stack([x, ry * r * np.sin(t)], 1), "body")]
    y_top = -ry * (1 - d)
    tip = (u(-0.1, 0.15), y_top - u(0.25, 0.4))
    parts.append(_open(bezier((0, y_top + 0.08), (0, y_top - 0.1), tip, n=8), "stem", 0.06))
    if rng.random() < 0.8:
        s = rng.choice([-1, 1])
        base = np.array([tip[0] * 0.5, y_top - 0.12])
        parts.append(_poly(lens(base, base + [s * u(0.3, 0.45), -u(0.05, 0.2)], u(0.12, 0.2)), "leaf"))
    if rng.random() < 0.4:
        parts.append(_poly(lens((-0.6, -0.1), (-0.4, -0.5), 0.12), "shine", True))
    return parts


@family(
    "candle",
    {
        "body": ((240, 235, 220), (220, 60, 60), (90, 140, 210), (240, 200, 120)),
        "wick": DARK,
        "flame": ((250, 170, 30), (250, 200, 50)),
        "inner": ((255, 245, 170),),
        "plate": ((190, 160, 70), (180, 180, 190)),
    },
    rotation=8,
)
def candle(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    cw, ch = u(0.35, 0.55), u(0.9, 1.5)
    parts = []
    if rng.random() < 0.5:
        parts.append(_poly(ellipse(0, ch, cw * u(1.0, 1.5), u(0.07, 0.13), 28), "plate"))
    parts.append(_poly(rect(-cw / 2, 0, cw / 2, ch), "body"))
    parts.append(_open([(0, 0), (0, -0.12)], "wick", 0.025))
    fw, fh, m = u(0.14, 0.24), u(0.25, 0.4), u(1.0, 2.0)
    t = np.linspace(0, TAU, 36, endpoint=False)
    cy = -0.12 - fh * 0.85
    flame = np.stack([fw * np.sin(t) * np.abs(np.sin(t / 2)) ** m, cy - fh * np.cos(t)], 1)
    parts.append(_poly(flame, "flame"))
    parts.append(_poly(flame * [0.5, 0.5] + [0, cy * 0.5 + fh * 0.3], "inner", True))
    return parts


@family(
    "kite",
    {
        "body": ((220, 40, 40), (40, 100, 210), (250, 190, 30), (60, 170, 90), (160, 60, 190)),
        "spar": BROWN,
        "string": DARK,
        "bow": ((230, 60, 60), (60, 120, 230)),
    },
    rotation=25,
)
def kite(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    w, h1, h2 = u(0.9, 1.3), u(0.45, 0.7), u(0.9, 1.4)
    parts = [_poly([(0, -h1), (w / 2, 0), (0, h2), (-w / 2, 0)], "body")]
    parts.append(_open([(0, -h1), (0, h2)], "spar", 0.02, True))
    parts.append(_open([(-w / 2, 0), (w / 2, 0)], "spar", 0.02, True))
    end = (u(-0.5, 0.5), h2 + u(0.7, 1.1))
    tail = wave((0, h2), end, u(0.05, 0.1), u(1.0, 2.0), 24, u(0, TAU))
    parts.append(_open(tail, "string", 0.025))
    for i in np.linspace(6, 20, int(rng.integers(2, 4))).astype(int):
        px, py = tail[i]
        parts.append(
            _poly(
                [(px - 0.09, py - 0.06), (px + 0.09, py + 0.06), (px + 0.09, py - 0.06), (px - 0.09, py + 0.06)],
                "bow",
                True,
            )
        )
    return parts


@family(
    "bottle",
    {
        "body": ((60, 140, 70, 230), (110, 70, 40, 230), (90, 150, 200, 220), (230, 230, 235, 220)),
        "cap": ((200, 40, 40), (200, 170, 60), (60, 60, 60)),
        "label": ((240, 230, 200), (230, 80, 60)),
    },
    rotation=15,
)
def bottle(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    hw, bh, sh = u(0.28, 0.42), u(0.8, 1.2), u(0.15, 0.35)
    nw, nh, r = hw * u(0.3, 0.45), u(0.25, 0.45), u(0.03, 0.1)
    right = np.vstack(
        [
            bezier((hw - r, bh), (hw, bh), (hw, bh - r), n=5),
            bezier((hw, 0), (hw, -sh * 0.7), (nw, -sh * 0.5), (nw, -sh), n=10),
            [(nw, -sh - nh)],
        ]
    )
    parts = [_poly(np.vstack([right, right[::-1] * [-1, 1]]), "body")]
    if rng.random() < 0.7:
        parts.append(_poly(rect(-hw, bh * u(0.25, 0.4), hw, bh * u(0.6, 0.8)), "label", True))
    ch = u(0.1, 0.2)
    parts.append(_poly(rect(-nw * 1.2, -sh - nh - ch, nw * 1.2, -sh - nh + 0.03), "cap"))
    return parts


@family(
    "balloon",
    {
        "body": ((220, 40, 50), (40, 110, 220), (250, 200, 40), (60, 180, 90), (230, 100, 180)),
        "string": DARK,
        "shine": WHITE,
    },
    rotation=15,
)
def balloon(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    rx = u(0.55, 0.75)
    ry, taper = rx * u(1.15, 1.4), u(0.05, 0.2)
    t = np.linspace(0, TAU, 48, endpoint=False)
    body = np.stack([rx * np.cos(t) * (1 - taper * (np.sin(t) + 1) / 2), ry * np.sin(t)], 1)
    end = (u(-0.3, 0.3), ry + 0.1 + u(0.8, 1.3))
    parts = [_open(wave((0, ry + 0.1), end, u(0.03, 0.08), u(1.0, 2.5), 20, u(0, TAU)), "string", 0.02)]
    parts.append(_poly(body, "body"))
    parts.append(_poly([(0, ry - 0.03), (-0.08, ry + 0.1), (0.08, ry + 0.1)], "body"))
    if rng.random() < 0.6:
        parts.append(_poly(lens((-rx * 0.6, -ry * 0.1), (-rx * 0.3, -ry * 0.6), 0.12), "shine", True))
    return parts


@family(
    "glasses",
    {
        "lens": ((170, 200, 230, 110), (60, 60, 70, 150), (200, 170, 120, 110)),
        "frame": ((30, 30, 30), (120, 70, 40), (180, 40, 40), (60, 60, 160)),
    },
    rotation=12,
    flip=False,
)
def glasses(rng: np.random.Generator) -> list[Part]:
    u = rng.uniform
    r, gap = u(0.32, 0.48), u(0.15, 0.35)
    ry = r * u(0.75, 1.05)
    square = rng.random() < 0.4
    parts = []
    for s in (-1, 1):
        cx = s * (gap / 2 + r)
        pts = rounded_rect(cx - r, -ry, cx + r, ry, r * 0.35) if square else ellipse(cx, 0, r, ry, 32)
        parts.append(_poly(pts, "lens", width=0.08))
        x_out = s * (gap / 2 + 2 * r)
        parts.append(_open([(x_out, -ry * 0.4), (x_out + s * u(0.2, 0.4), -ry * u(0.3, 0.6))], "frame", 0.07))
    parts.append(_open(bezier((-gap / 2, -ry * 0.2), (0, -ry * u(0.4, 0.8)), (gap / 2, -ry * 0.2), n=8), "frame", 0.07))
    return parts


CLASS_NAMES: tuple[str, ...] = tuple(FAMILIES)


def make_shape(class_name: str, rng: np.random.Generator) -> Shape:
    """One instance of ``class_name`` placed on the unit canvas: its own proportions, then a
    random rotation (up to the family's limit), mirror, aspect stretch, scale and position."""
    fam = FAMILIES[class_name]
    parts = fam.build(rng)
    angle = np.deg2rad(rng.uniform(-fam.rotation, fam.rotation))
    stretch = rng.uniform(0.9, 1.1)
    mirror = -1.0 if fam.flip and rng.random() < 0.5 else 1.0
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[c, -s], [s, c]]) @ np.diag([mirror * stretch, 1.0 / stretch])
    pts = np.concatenate([p.points for p in parts]) @ m.T
    lo, hi = pts.min(0), pts.max(0)
    scale = rng.uniform(0.6, 0.88) / max(float((hi - lo).max()), 1e-9)
    half = (hi - lo) * scale / 2
    margin = 0.05
    center = np.array([rng.uniform(margin + half[i], max(1 - margin - half[i], margin + half[i])) for i in range(2)])
    offset = center - (lo + hi) / 2 * scale
    mapped = tuple(p.mapped(m * scale, offset, scale) for p in parts)
    la = rng.uniform(-np.pi * 0.9, -np.pi * 0.1)  # light from above, left or right
    return Shape(class_name, mapped, (float(np.cos(la)), float(np.sin(la))))
