"""Photo-like renderings of a ``Shape``: filled, shaded, textured parts on a cluttered background.

Each part gets a colour from its family's palette for its role (varied per instance), a darker
edge, a linear light gradient across the object, and pixel noise; the background is a random
gradient with unrelated blobs and lines, so a model must find the object, not just any ink.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .primitives import Shape
from .shapes import FAMILIES, Colour

_FALLBACK: tuple[Colour, ...] = ((90, 90, 90),)


@lru_cache(maxsize=8)
def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(side, dtype=np.float32) + 0.5) / side
    return c[None, :].repeat(side, 0), c[:, None].repeat(side, 1)


def part_colours(shape: Shape, rng: np.random.Generator) -> dict[str, Colour]:
    """One colour per role: a palette entry for the class, jittered in brightness and hue."""
    palette = FAMILIES[shape.class_name].palette
    out: dict[str, Colour] = {}
    for part in shape.parts:
        if part.role in out or part.role == "hole":
            continue
        options = palette.get(part.role, _FALLBACK)
        base = options[int(rng.integers(len(options)))]
        rgb = np.clip(np.asarray(base[:3], float) * rng.uniform(0.85, 1.12) + rng.normal(0, 12, 3), 0, 255)
        out[part.role] = tuple(int(v) for v in rgb) + tuple(base[3:])
    return out


def render_photo(shape: Shape, size: int, rng: np.random.Generator) -> Image.Image:
    """An RGB ``size``² photo of ``shape``: drawn supersampled (at least 128 px) and reduced;
    shading and noise are applied at the output size (cheap)."""
    ss = max(2, -(-128 // size))
    side = size * ss
    img = _background(side, rng)
    draw = ImageDraw.Draw(img, "RGBA")
    _clutter(draw, side, rng)
    background = img.copy() if any(p.role == "hole" for p in shape.parts) else None
    mask = Image.new("L", (side, side), 0)
    mdraw = ImageDraw.Draw(mask)
    colours = part_colours(shape, rng)
    thin = max(1, ss // 2 + 1)
    for part in shape.parts:
        xy = [tuple(p) for p in (part.points * side).tolist()]
        if not part.closed:
            w = max(1, int(round(part.width * side)))
            draw.line(xy, fill=colours[part.role], width=w, joint="curve")
            mdraw.line(xy, fill=255, width=w, joint="curve")
        elif part.role == "hole":
            hole = Image.new("L", (side, side), 0)
            ImageDraw.Draw(hole).polygon(xy, fill=255)
            img.paste(background, mask=hole)
            mdraw.polygon(xy, fill=0)
            draw.polygon(xy, outline=(40, 40, 40), width=thin)
        else:
            col = colours[part.role]
            edge = tuple(int(v * 0.5) for v in col[:3])
            draw.polygon(xy, fill=col, outline=edge, width=max(thin, int(round(part.width * side))))
            mdraw.polygon(xy, fill=255)
    arr = np.asarray(img.reduce(ss), dtype=np.float32)
    m = np.asarray(mask.reduce(ss), dtype=np.float32) / 255.0
    xx, yy = _grid(size)
    x0, y0, x1, y1 = shape.bounds()
    lx, ly = shape.light
    radius = max(x1 - x0, y1 - y0) / 2 + 1e-6
    proj = np.clip(((xx - (x0 + x1) / 2) * lx + (yy - (y0 + y1) / 2) * ly) / radius, -1.0, 1.0)
    gain = 1.0 + rng.uniform(0.15, 0.3) * proj * m
    noise = rng.normal(0.0, rng.uniform(3.0, 8.0), (size, size, 1)) + rng.normal(0.0, 2.0, (size, size, 3))
    arr = arr * gain[..., None] + noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _background(side: int, rng: np.random.Generator) -> Image.Image:
    """A two-colour linear gradient in a random direction, muted towards grey (computed on an
    8 × 8 grid and resized: a linear ramp survives bilinear resizing)."""
    grey = rng.uniform(60, 220)
    c0, c1 = (0.55 * rng.uniform(0, 255, 3) + 0.45 * grey for _ in range(2))
    a = rng.uniform(0, 2 * np.pi)
    xx, yy = _grid(8)
    g = np.clip(0.5 + (xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a), 0.0, 1.0)[..., None]
    small = Image.fromarray((c0 + (c1 - c0) * g).astype(np.uint8))
    return small.resize((side, side), Image.Resampling.BILINEAR)


def _clutter(draw: ImageDraw.ImageDraw, side: int, rng: np.random.Generator) -> None:
    """2-5 unrelated translucent blobs, bars and lines."""
    for _ in range(int(rng.integers(2, 6))):
        col = tuple(int(v) for v in rng.uniform(0, 255, 3)) + (int(rng.uniform(60, 170)),)
        kind = rng.integers(3)
        cx, cy = rng.uniform(0, side, 2)
        r = rng.uniform(0.06, 0.3) * side
        if kind == 0:
            draw.ellipse([cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r * rng.uniform(0.4, 1.0)], fill=col)
        elif kind == 1:
            pts = [(cx + r * np.cos(t), cy + r * np.sin(t)) for t in np.sort(rng.uniform(0, 2 * np.pi, 4))]
            draw.polygon(pts, fill=col)
        else:
            x2, y2 = rng.uniform(0, side, 2)
            draw.line([(cx, cy), (x2, y2)], fill=col, width=max(1, int(rng.uniform(0.01, 0.04) * side)))
