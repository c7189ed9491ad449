"""Files in and out of a search: query sketches from disk, gallery image folders, their embedding.

These are the steps between a user's files and :class:`~sbirkit.index.gallery.GalleryIndex`:
read a sketch (PNG/JPG/SVG/Quick, Draw! ndjson) as the image a model expects, list and embed a
photo folder (skipping, counting and reporting unreadable files), and hand back item dicts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..data.dataset import resize_image
from ..data.records import DataError, EmptySketchError
from ..data.strokes import Strokes, rasterize

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SKETCH_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".svg", ".ndjson"})
_BLANK_LEVEL = 250  # every pixel at or above this grey level counts as no ink


# ---- query sketches ---------------------------------------------------------------------------
def load_query_sketch(
    path: str | os.PathLike,
    size: int = 224,
    index: int = 0,
    stroke_width: float | None = None,
) -> Image.Image:
    """A sketch file as a ``size``-square RGB image, black ink on white.

    Raster files: transparency is composited on white, white-on-black ink is inverted, and the
    image is padded to a square (keeping aspect) before resizing. SVG and Quick, Draw! ``.ndjson``
    (drawing number ``index``) are rasterised like the datasets do: ``stroke_width`` defaults
    to ``2 * size / 64`` px. A blank sketch raises :class:`EmptySketchError` naming the file.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SKETCH_EXTENSIONS:
        raise DataError(
            f"{p}: extension: expected one of {sorted(SKETCH_EXTENSIONS)}, got {ext or '(none)'!r}"
        )
    if not p.is_file():
        raise DataError(f"{p}: expected a sketch file, found nothing there")
    if ext in (".svg", ".ndjson"):
        strokes = _read_svg(p) if ext == ".svg" else _read_ndjson_drawing(p, index)
        if strokes.is_empty():
            raise EmptySketchError(
                f"{p}: strokes: expected at least one stroke, got an empty sketch"
            )
        width = 2.0 * size / 64.0 if stroke_width is None else stroke_width
        return rasterize(strokes, size, stroke_width=width).convert("RGB")
    grey = _read_raster_sketch(p)
    pixels = np.asarray(grey)
    if np.median(pixels) < 128:  # white (or bright) ink on a dark background
        grey = ImageOps.invert(grey)
        pixels = 255 - pixels
    if pixels.min() >= _BLANK_LEVEL:
        raise EmptySketchError(f"{p}: pixels: expected ink on the sketch, got a blank image")
    side = max(grey.size)
    grey = ImageOps.pad(grey, (side, side), color=255)
    if grey.size != (size, size):  # shrink like the datasets do, keeping thin lines dark
        grey = resize_image(grey, size, thicken=True)
    return grey.convert("RGB")


def _read_raster_sketch(p: Path) -> Image.Image:
    """Grey image of a raster sketch, with any alpha channel composited on white."""
    try:
        with Image.open(p) as img:
            img.load()
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("L")
            return img.convert("L")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{p}: could not decode the image: {exc}") from None


def _read_svg(p: Path) -> Strokes:
    from ..data.svg import read_svg

    try:
        return read_svg(p)
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OSError) as exc:  # name the file
        raise DataError(f"{p}: could not read SVG strokes: {exc}") from None


def _read_ndjson_drawing(p: Path, index: int) -> Strokes:
    """Drawing number ``index`` (0-based, blank lines not counted) of a Quick, Draw! ndjson file."""
    if index < 0:
        raise ValueError(f"index: expected a drawing number >= 0, got {index}")
    seen = 0
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if seen < index:
                seen += 1
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise DataError(
                    f"{p}:{lineno}: expected a JSON object per line, could not parse it"
                ) from None
            if not isinstance(obj, dict) or "drawing" not in obj:
                raise DataError(
                    f"{p}:{lineno}: drawing: expected a 'drawing' field (list of [xs, ys] strokes)"
                )
            try:
                return Strokes.from_ndjson_drawing(obj["drawing"], source=f"{p}:{lineno}")
            except (ValueError, TypeError) as exc:
                raise DataError(
                    f"{p}:{lineno}: drawing: expected [xs, ys(, ts)] strokes ({exc})"
                ) from None
    raise DataError(f"{p}: index: expected a drawing number below {seen}, got {index}")


# ---- gallery folders ------------------------------------------------------------------------
def list_image_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension, case-insensitive), sorted by relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(
            f"{root}: expected a folder of images, found {'a file' if root.exists() else 'nothing'}"
        )
    found = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            found.extend(
                Path(dirpath) / n for n in filenames if Path(n).suffix.lower() in IMAGE_EXTENSIONS
            )
    else:
        found = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def image_items(
    paths: Sequence[Path], root: str | os.PathLike, class_from_folder: bool | None = None
) -> list[dict]:
    """Item dicts for a gallery: ``id`` (path relative to ``root``), ``path`` and ``class_name``.

    ``class_name`` is the parent folder's name when the layout is ``root/<class>/<file>``; with
    ``class_from_folder=None`` that is used when every file sits exactly one folder deep.
    """
    root = Path(root)
    rel = [Path(p).relative_to(root) for p in paths]
    if class_from_folder is None:
        class_from_folder = bool(rel) and all(len(r.parts) == 2 for r in rel)
    items = []
    for p, r in zip(paths, rel):
        item = {"id": r.as_posix(), "path": str(Path(p).resolve())}
        if class_from_folder:
            if len(r.parts) < 2:
                raise DataError(
                    f"{p}: class_name: expected the file inside a class folder of {root}"
                )
            item["class_name"] = r.parts[-2]
        items.append(item)
    return items


def _load_photo(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA", "P", "PA"):
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def embed_image_files(
    encode: Callable,
    paths: Sequence[str | os.PathLike],
    image_size: int,
    batch_size: int = 64,
    progress: bool = True,
    device: str | None = None,
    normalize: bool = True,
) -> tuple[np.ndarray, list[Path], list[tuple[Path, str]]]:
    """Embed image files with ``encode`` ((B, 3, H, W) float in [0, 1] -> (B, d)).

    Each image is resized to ``image_size`` square (as the datasets do). Unreadable files are
    skipped and returned as ``(path, reason)`` failures, with their count logged; rows of the
    returned float32 embeddings (L2-normalised unless ``normalize=False``) match ``ok_paths``.
    """
    import torch
    from tqdm.auto import tqdm

    paths = [Path(p) for p in paths]
    chunks: list[np.ndarray] = []
    ok: list[Path] = []
    failures: list[tuple[Path, str]] = []
    batch: list[np.ndarray] = []
    batch_paths: list[Path] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        if device is not None:
            x = x.to(device)
        with torch.inference_mode():
            z = encode(x)
        z = z.detach().float().cpu()
        if z.ndim != 2 or len(z) != len(batch):
            raise DataError(
                f"encode: output: expected a ({len(batch)}, d) tensor, got shape {tuple(z.shape)}"
            )
        if normalize:
            z = torch.nn.functional.normalize(z, dim=1)
        chunks.append(z.numpy().astype(np.float32, copy=False))
        ok.extend(batch_paths)
        batch.clear()
        batch_paths.clear()

    with tqdm(total=len(paths), desc="embedding images", unit="img", disable=not progress) as bar:
        for p in paths:
            try:
                batch.append(_load_photo(p, image_size))
                batch_paths.append(p)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                failures.append((p, f"{type(exc).__name__}: {exc}"))
                bar.set_postfix(skipped=len(failures))
            if len(batch) >= batch_size:
                flush()
            bar.update(1)
        if batch:
            flush()
    if failures:
        log.warning(
            "skipped %d of %d image files (unreadable); first: %s: %s",
            len(failures),
            len(paths),
            failures[0][0],
            failures[0][1],
        )
    emb = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    return emb, ok, failures


# ---- result grids ----------------------------------------------------------------------------
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
