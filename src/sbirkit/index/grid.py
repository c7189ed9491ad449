"""Result grids: each query beside its top results, as one PNG (``sbirkit search --grid``, the demo)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageOps

log = logging.getLogger(__name__)


PAD = 6  # pixels around every cell
GAP = 12  # extra space between the query and its results
CAPTION = 16  # caption strip under each thumbnail
BORDER = 4  # width of the green/red correctness frame


def grid_size(n_results: int, thumb: int = 96, rows: int = 1) -> tuple[int, int]:
    """(width, height) of a grid: ``PAD + (1 + n)(thumb + PAD) + GAP`` by ``rows(thumb + CAPTION + PAD) + PAD``."""
    return PAD + (1 + n_results) * (thumb + PAD) + GAP, rows * (thumb + CAPTION + PAD) + PAD


def _thumbnail(img: Image.Image | str | os.PathLike, thumb: int) -> Image.Image:
    if not isinstance(img, Image.Image):
        try:
            with Image.open(img) as f:
                f.load()
                img = f.convert("RGB")
        except (OSError, ValueError) as exc:
            log.warning("result grid: could not read %s (%s); drawing a grey tile", img, exc)
            return Image.new("RGB", (thumb, thumb), (200, 200, 200))
    return ImageOps.pad(img.convert("RGB"), (thumb, thumb), color=(255, 255, 255))


def _fit_text(draw, text: str, width: int) -> str:
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _draw_row(canvas: Image.Image, y: int, query, results, thumb: int) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(canvas)
    cells = [(query, "query", None)] + list(results)
    for j, (img, caption, is_match) in enumerate(cells):
        x = PAD + j * (thumb + PAD) + (GAP if j else 0)
        canvas.paste(_thumbnail(img, thumb), (x, y))
        if is_match is not None:
            colour = (30, 160, 60) if is_match else (210, 40, 40)
            draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], outline=colour, width=BORDER)
        else:
            draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], outline=(190, 190, 190), width=1)
        draw.text((x + 1, y + thumb + 2), _fit_text(draw, str(caption), thumb - 2), fill=(0, 0, 0))


def draw_grid(
    query_img: Image.Image | str | os.PathLike,
    results: Sequence[tuple],
    out_path: str | os.PathLike,
    thumb: int = 96,
) -> Path:
    """Save a PNG: the query at left, then ``(image or path, caption, is_match)`` results in rank order.

    ``is_match`` True/False draws a green/red frame; None draws a neutral one. Size: :func:`grid_size`.
    """
    return draw_grid_rows([(query_img, results)], out_path, thumb)


def draw_grid_rows(rows: Sequence[tuple], out_path: str | os.PathLike, thumb: int = 96) -> Path:
    """Save a PNG with one :func:`draw_grid` row per ``(query_img, results)`` pair, stacked."""
    if not rows:
        raise ValueError("rows: expected at least one (query_img, results) row")
    n = max(len(results) for _, results in rows)
    canvas = Image.new("RGB", grid_size(n, thumb, len(rows)), (255, 255, 255))
    for i, (query, results) in enumerate(rows):
        _draw_row(canvas, PAD + i * (thumb + CAPTION + PAD), query, results, thumb)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")
    return out
