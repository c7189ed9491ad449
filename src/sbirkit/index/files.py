"""Query files: a sketch (PNG/JPG/SVG/Quick, Draw! ndjson, or strokes) or a photo read as the image a
model expects, with the checks a query must pass. Photo folders and their embedding are in
:mod:`sbirkit.index.image_folders`, result grids in :mod:`sbirkit.index.grid`.

Limits on query sketches (:func:`load_query_sketch`; ``embed_image_files(modality="sketch")``
uses the same path):

* a raster file over :data:`~sbirkit.data.dataset.MAX_IMAGE_PIXELS` (50 MP) is refused before it
  is decoded; shrinking is linear in the pixels (see :func:`~sbirkit.data.dataset.resize_image`);
* SVG files are bounded by :mod:`sbirkit.data.svg`'s size, element and point limits, ndjson
  lines by :data:`MAX_NDJSON_LINE_CHARS`, drawing by :func:`~sbirkit.data.strokes.rasterize`'s
  point and length limits; non-finite coordinates (SVG, ndjson, stroke-3) are refused when parsed;
* the drawing at the model's size (before any padding) must hold ink, by contrast, not by one
  near-white threshold:
  the paper level is the :data:`PAPER_PERCENTILE` th percentile of its grey values, ink is at
  least :data:`INK_CONTRAST` levels darker than that, and a sketch needs
  ``max(MIN_INK_PIXELS, MIN_INK_FRACTION * pixels)`` ink pixels spanning at least
  :data:`MIN_INK_SPAN` pixels, else :class:`EmptySketchError` (a blank or uniformly grey page, a
  single faint dot, a single dark pixel, a path outside the viewBox); vector strokes whose points
  all lie at one place (a one-point Quick, Draw! drawing) are refused before rasterising;
* a query that looks like a photo rather than a drawing -- at least :data:`PHOTO_MIN_LEVELS`
  grey levels each holding :data:`PHOTO_LEVEL_SHARE` of the pixels (and
  :data:`PHOTO_LEVEL_PIXELS`), or less than
  :data:`PHOTO_MAX_PAPER_FRACTION` of the pixels within :data:`PAPER_TOLERANCE` levels of the
  paper -- is searched, with a :class:`PhotoLikeSketchWarning`. Random noise gets that warning
  when its texture survives the shrink to the model's size, and is refused as blank when the
  line-keeping shrink turns it into a uniform image (large noise images shrunk a lot).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..data.dataset import check_image_pixels, resize_image
from ..data.records import DataError, EmptySketchError
from ..data.strokes import Strokes, rasterize, rasterize_sketch

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SKETCH_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".svg", ".ndjson"})
#: Longest line read from a Quick, Draw! ``.ndjson`` query (a raw drawing with timings is under 100 kB).
MAX_NDJSON_LINE_CHARS = 10_000_000

#: The paper level of a query image is this percentile of its grey values (robust to up to 90 % ink).
PAPER_PERCENTILE = 90
#: A pixel is ink when it is at least this many grey levels (of 255) darker than the paper.
INK_CONTRAST = 48
#: A sketch needs at least ``max(MIN_INK_PIXELS, MIN_INK_FRACTION * pixels)`` ink pixels...
MIN_INK_FRACTION = 0.001
MIN_INK_PIXELS = 4
#: ... spanning at least this many pixels across (rows or columns): a dot is not a drawing. One
#: dark pixel on a cell boundary of a large page becomes a 2x2 block when shrunk, 4 ink pixels.
MIN_INK_SPAN = 3
#: Photo-like: at least PHOTO_MIN_LEVELS grey levels each hold PHOTO_LEVEL_SHARE of the pixels
#: and at least PHOTO_LEVEL_PIXELS of them (line drawings use under 15: paper, ink and
#: anti-aliased edges; photos 30 to 100 from 64 px up; at 32 px few levels reach 16 pixels)...
PHOTO_MIN_LEVELS = 24
PHOTO_LEVEL_SHARE = 0.005
PHOTO_LEVEL_PIXELS = 16
#: ... or less than PHOTO_MAX_PAPER_FRACTION of the pixels lie within PAPER_TOLERANCE levels of
#: the paper (drawings: 60 % or more).
PAPER_TOLERANCE = 12
PHOTO_MAX_PAPER_FRACTION = 0.5


class PhotoLikeSketchWarning(UserWarning):
    """A query sketch that looks like a photo (many grey levels, little plain paper)."""


@dataclass(frozen=True)
class InkStats:
    """What the contrast-based ink test measured on a grey image (see the module docstring)."""

    pixels: int
    paper: int  # the paper's grey level
    ink_pixels: int  # pixels at least INK_CONTRAST darker than the paper
    ink_span: int  # rows or columns (the larger) between the first and the last ink pixel, inclusive
    paper_fraction: float  # pixels within PAPER_TOLERANCE of the paper
    levels: int  # grey levels holding at least PHOTO_LEVEL_SHARE (and PHOTO_LEVEL_PIXELS) of the pixels

    @property
    def min_ink_pixels(self) -> int:
        return max(MIN_INK_PIXELS, int(np.ceil(MIN_INK_FRACTION * self.pixels)))

    @property
    def has_ink(self) -> bool:
        return self.ink_pixels >= self.min_ink_pixels and self.ink_span >= MIN_INK_SPAN

    @property
    def photo_like(self) -> bool:
        return self.levels >= PHOTO_MIN_LEVELS or self.paper_fraction < PHOTO_MAX_PAPER_FRACTION


def ink_stats(img: Image.Image | np.ndarray) -> InkStats:
    """Paper level, ink pixel count and photo-likeness of an image (converted to grey)."""
    grey = np.asarray(img.convert("L") if isinstance(img, Image.Image) else img)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"ink_stats: expected a 2-D uint8 grey image, got {grey.dtype} {grey.shape}")
    hist = np.bincount(grey.ravel(), minlength=256)
    cum = np.cumsum(hist)
    paper = int(np.searchsorted(cum, PAPER_PERCENTILE / 100 * grey.size))  # lower percentile
    ink = grey <= paper - INK_CONTRAST
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    span = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) if len(rows) else 0
    return InkStats(
        pixels=int(grey.size),
        paper=paper,
        ink_pixels=int(hist[: max(0, paper - INK_CONTRAST + 1)].sum()),
        ink_span=int(span),
        paper_fraction=float(hist[max(0, paper - PAPER_TOLERANCE + 1) :].sum() / grey.size),
        levels=int((hist >= max(PHOTO_LEVEL_SHARE * grey.size, PHOTO_LEVEL_PIXELS)).sum()),
    )


def check_sketch_ink(img: Image.Image, where: str) -> InkStats:
    """Refuse a sketch image with no usable ink (:class:`EmptySketchError` naming ``where``);
    warn with :class:`PhotoLikeSketchWarning` when it looks like a photo. Returns the stats."""
    stats = ink_stats(img)
    if stats.ink_pixels >= stats.min_ink_pixels and stats.ink_span < MIN_INK_SPAN:
        raise EmptySketchError(
            f"{where}: pixels: expected ink on the sketch spanning at least {MIN_INK_SPAN} pixels, got a dot "
            f"{stats.ink_span} pixel(s) across: too small to search with"
        )
    if not stats.has_ink:
        raise EmptySketchError(
            f"{where}: pixels: expected ink on the sketch (at least {stats.min_ink_pixels} pixels "
            f"{INK_CONTRAST} grey levels darker than the paper at {stats.paper}), got {stats.ink_pixels}: "
            "the image is blank in effect"
        )
    if stats.photo_like:
        warnings.warn(
            f"{where}: looks like a photo, not a drawing ({stats.levels} grey levels in use, "
            f"{stats.paper_fraction:.0%} of pixels at paper level); results may be poor: sketch "
            "retrieval expects dark lines on a plain background",
            PhotoLikeSketchWarning,
            stacklevel=3,
        )
    return stats


# ---- query sketches ---------------------------------------------------------------------------
#: Pillow decoders a raster query may use (by content, whatever the file is called): the common
#: photo and drawing formats; never EPS/PDF (Ghostscript) or rarer plugins.
RASTER_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF")  # JPEG covers MPO (phone photos)


class QueryTooLargeError(DataError):
    """A query image with more pixels than allowed (refused from its header, before decoding)."""


def load_query_sketch(
    path: str | os.PathLike,
    size: int = 224,
    index: int = 0,
    stroke_width: float | None = None,
) -> Image.Image:
    """A sketch file as a ``size``-square RGB image, black ink on white.

    Raster files: transparency is composited on white, white-on-black ink is inverted, and the
    image is scaled so its longer side is ``size`` (shrinking keeps thin lines dark:
    :func:`~sbirkit.data.dataset.resize_image`, linear in its pixels), then padded to a square
    with its paper's grey (white for a white page), centred. SVG and Quick, Draw!
    ``.ndjson`` (drawing number ``index``) are rasterised like the datasets do: ``stroke_width``
    defaults to ``2 * size / 64`` px. The result must hold ink by the contrast test in the
    module docstring, else :class:`EmptySketchError` naming the file; a photo-like result is
    returned with a :class:`PhotoLikeSketchWarning`. Limits: see the module docstring.

    The HTTP server (:mod:`sbirkit.serve`) reads uploads with the same steps:
    :func:`query_sketch_from_bytes`, :func:`sketch_from_strokes`, :func:`sketch_from_raster`.
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
        return sketch_from_strokes(strokes, size, str(p), stroke_width=stroke_width)
    return sketch_from_raster(read_raster_sketch(p, str(p)), size, str(p))


def query_sketch_from_bytes(
    data: bytes,
    kind: str,
    size: int,
    where: str = "<upload>",
    max_pixels: int | None = None,
    allow_doctype: bool = True,
    formats: Sequence[str] = RASTER_FORMATS,
) -> Image.Image:
    """:func:`load_query_sketch` for a sketch held in memory: ``kind`` is ``"svg"`` or ``"raster"``.

    ``max_pixels`` lowers the raster pixel cap (:class:`QueryTooLargeError`);
    ``allow_doctype=False`` refuses an SVG with a ``<!DOCTYPE``/``<!ENTITY`` declaration.
    """
    if kind == "svg":
        from ..data.svg import parse_svg

        if not allow_doctype:
            check_no_doctype(data, where)
        try:
            strokes = parse_svg(data, where)
        except DataError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise DataError(f"{where}: could not read SVG strokes: {exc}") from None
        return sketch_from_strokes(strokes, size, where)
    if kind == "raster":
        import io

        grey = read_raster_sketch(io.BytesIO(data), where, max_pixels, formats)
        return sketch_from_raster(grey, size, where)
    raise ValueError(f"kind: expected 'svg' or 'raster', got {kind!r}")


def check_no_doctype(data: bytes, where: str) -> None:
    """Refuse XML with a document type or entity declaration (no entities, no external DTD)."""
    head = data.lower()
    if b"<!doctype" in head or b"<!entity" in head:
        raise DataError(f"{where}: svg: expected no <!DOCTYPE> or <!ENTITY> declaration, got one")


def sketch_from_strokes(
    strokes: Strokes,
    size: int,
    where: str,
    stroke_width: float | None = None,
    fit: str = "auto",
) -> Image.Image:
    """Vector strokes as a query image, then the ink check. By default drawn exactly as the
    datasets draw them (:func:`~sbirkit.data.strokes.rasterize_sketch`: the ink fitted with the
    datasets' margin unless the sketch has a canvas, lines ``2 * size / 64`` px); ``stroke_width``
    (output px) and ``fit`` (as :func:`~sbirkit.data.strokes.rasterize`) override that."""
    if strokes.is_empty():
        raise EmptySketchError(f"{where}: strokes: expected at least one stroke, got an empty sketch")
    x0, y0, x1, y1 = strokes.bounds()
    if x1 - x0 <= 0 and y1 - y0 <= 0:  # every point in one place: fitted to the image, a dot
        raise EmptySketchError(f"{where}: strokes: expected ink on the sketch that draws a line, got "
                               f"{strokes.num_points} point(s) all at one place (a dot)")
    if stroke_width is None:
        grey = rasterize_sketch(strokes, size, fit=fit)
    else:
        grey = rasterize(strokes, size, stroke_width=stroke_width, fit=fit)
    check_sketch_ink(grey, where)
    return grey.convert("RGB")


def sketch_from_raster(grey: Image.Image, size: int, where: str) -> Image.Image:
    """A decoded grey raster sketch as a query image: inverted if white-on-black, scaled so its
    longer side is ``size`` (line-keeping shrink), ink check, padded square with its paper grey."""
    if np.median(np.asarray(grey)) < 128:  # white (or bright) ink on a dark background
        grey = ImageOps.invert(grey)
    w, h = grey.size
    side = max(w, h)
    if side != size:  # shrink (keeping thin lines dark) or enlarge the drawing itself, then pad
        scaled = (max(1, round(w * size / side)), max(1, round(h * size / side)))
        grey = resize_image(grey, scaled, thicken=True, where=where)
    stats = check_sketch_ink(grey, where)  # the drawing, not the padding around it
    if grey.size != (size, size):
        canvas = Image.new("L", (size, size), stats.paper)  # pad with the paper's own grey
        canvas.paste(grey, ((size - grey.width) // 2, (size - grey.height) // 2))
        grey = canvas
    return grey.convert("RGB")


def decode_error(where: str, exc: BaseException, formats: Sequence[str] | None = None) -> str:
    """One line saying an image could not be decoded, without Pillow's repr of the file object
    it was read from (``<_io.BytesIO object at 0x...>`` for an upload)."""
    text = re.sub(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>", "", " ".join(str(exc).split()))[:160]
    if isinstance(exc, Image.UnidentifiedImageError) and formats:
        text += f" (expected one of {', '.join(formats)})"
    return f"{where}: could not decode the image: {text}"


def _open_raster(source, where: str, max_pixels: int | None, formats: Sequence[str] = RASTER_FORMATS) -> Image.Image:
    """Open (not decode) a raster image with one of ``formats``, refusing it from its header when
    it has more than ``max_pixels`` (or the 50 MP library cap)."""
    try:
        with warnings.catch_warnings():  # over-sized images are refused just below, not warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source, formats=tuple(formats))
    except Image.DecompressionBombError as exc:  # Pillow refuses over 2x its own limit while opening
        from ..data.dataset import MAX_IMAGE_PIXELS

        cap = min(max_pixels or MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS)
        size = re.search(r"\((\d+) pixels\)", str(exc))
        got = f"{int(size.group(1)):,}" if size else "more"
        raise QueryTooLargeError(
            f"{where}: pixels: expected at most {cap:,} pixels, got {got}; shrink the image first"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(decode_error(where, exc, formats)) from None
    try:
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise QueryTooLargeError(
                f"{where}: pixels: expected at most {max_pixels:,} pixels, got {img.width}x{img.height} = "
                f"{img.width * img.height:,}; shrink the image first"
            )
        try:
            check_image_pixels(img.width, img.height, where)  # before decoding anything
        except DataError as exc:
            raise QueryTooLargeError(str(exc)) from None
    except BaseException:
        img.close()
        raise
    return img


def read_raster_sketch(
    source, where: str, max_pixels: int | None = None, formats: Sequence[str] = RASTER_FORMATS
) -> Image.Image:
    """Grey image of a raster sketch (a path or a binary file object), alpha composited on white."""
    img = _open_raster(source, where, max_pixels, formats)
    try:
        with img:
            img.load()
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("L")
            return img.convert("L")
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise DataError(decode_error(where, exc)) from None


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
        for lineno, line in enumerate(iter(lambda: f.readline(MAX_NDJSON_LINE_CHARS + 1), ""), 1):
            if len(line) > MAX_NDJSON_LINE_CHARS:
                raise DataError(f"{p}:{lineno}: line: expected at most {MAX_NDJSON_LINE_CHARS:,} characters "
                                "per drawing (MAX_NDJSON_LINE_CHARS), got more")
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
            except DataError:
                raise
            except (ValueError, TypeError) as exc:
                raise DataError(
                    f"{p}:{lineno}: drawing: expected [xs, ys(, ts)] strokes ({exc})"
                ) from None
    raise DataError(f"{p}: index: expected a drawing number below {seen}, got {index}")


# ---- gallery folders ------------------------------------------------------------------------
def load_photo(
    source, size: int, where: str | None = None, max_pixels: int | None = None,
    formats: Sequence[str] | None = None,
) -> np.ndarray:
    """A photo (a path or a binary file object) as the (size, size, 3) uint8 RGB array a model
    embeds: alpha composited on white, resized to a square. Gallery photos (``index build``) and
    photo queries (the HTTP server's ``photo2*`` directions) both come through here.

    ``max_pixels`` (a :class:`QueryTooLargeError`) and ``formats`` (Pillow decoders) narrow what
    is read; without them any Pillow format up to the 50 MP cap is.
    """
    if formats is not None or max_pixels is not None:
        opened = _open_raster(source, where or str(source), max_pixels, formats or RASTER_FORMATS)
    else:
        opened = Image.open(source)
    with opened as img:
        check_image_pixels(img.width, img.height, where or str(source))  # from the header, before decoding
        img.load()
        if img.mode in ("RGBA", "LA", "P", "PA"):
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)
