"""A request body as a query image, through the same preprocessing ``sbirkit search`` uses.

Bodies: ``application/json`` strokes (Quick, Draw! ``[[xs], [ys]]`` per stroke, what the page
sends), ``multipart/form-data`` with a ``file`` field, or the file itself as the body
(``image/png``, ``image/jpeg``, ``image/webp``, ``image/gif``, ``image/svg+xml``). Sketches go
through :mod:`sbirkit.index.files` (``sketch_from_strokes``, ``query_sketch_from_bytes``: the
ink check, the line-keeping shrink, the photo-like warning), photos through ``load_photo``, the
function ``index build`` reads gallery photos with.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from ..data.strokes import Strokes
from ..errors import DataError, EmptySketchError, SbirkitError
from ..index.files import (
    QueryTooLargeError,
    decode_error,
    load_photo,
    query_sketch_from_bytes,
    sketch_from_strokes,
)
from .config import Limits
from .schemas import StrokeQuery

#: Content types a query file may have, and how it is read.
RASTER_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/webp": "WEBP",
                "image/gif": "GIF"}
SVG_TYPES = ("image/svg+xml",)
#: Pillow decoders allowed for uploads (never EPS, PDF, TIFF or rarer plugins).
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


class RequestError(SbirkitError):
    """A request the server refuses; ``status`` is the HTTP code (4xx)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class QueryImage:
    image: np.ndarray  # (size, size, 3) uint8
    warnings: list[str]


def _validation_message(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "body"
    extra = f" ({exc.error_count()} errors)" if exc.error_count() > 1 else ""
    return f"{prefix}{where}: {err.get('msg', 'invalid')}{extra}"


def parse_strokes_json(body: bytes, limits: Limits) -> StrokeQuery:
    """The JSON body as a :class:`StrokeQuery`, within the stroke, point and coordinate limits."""
    try:
        raw = json.loads(body)
    except RecursionError:
        raise RequestError(400, "body: expected JSON, got nesting too deep to read") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"body: expected JSON, could not parse it ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(raw, dict):
        raise RequestError(422, f"body: expected a JSON object with 'strokes', got {type(raw).__name__}")
    strokes = raw.get("strokes")
    if isinstance(strokes, list):  # count before validating, so a huge body is refused cheaply
        if len(strokes) > limits.max_strokes:
            raise RequestError(422, f"strokes: expected at most {limits.max_strokes:,} strokes, got {len(strokes):,}")
        points = sum(len(s[0]) for s in strokes
                     if isinstance(s, list) and s and isinstance(s[0], list))
        if points > limits.max_points:
            raise RequestError(422, f"strokes: expected at most {limits.max_points:,} points in all, got {points:,}")
    try:
        query = StrokeQuery.model_validate(raw)
    except ValidationError as exc:
        raise RequestError(422, _validation_message(exc)) from None
    for i, stroke in enumerate(query.strokes):
        if len(stroke[0]) != len(stroke[1]) or (len(stroke) == 3 and len(stroke[2]) != len(stroke[0])):
            raise RequestError(422, f"strokes.{i}: expected [xs, ys] (or [xs, ys, ts]) lists of equal length, got "
                               f"{' and '.join(str(len(part)) for part in stroke)} values")
        for part in stroke[:2]:
            big = next((v for v in part if abs(v) > limits.max_coordinate), None)
            if big is not None:
                raise RequestError(422, f"strokes.{i}: expected coordinates within ±{limits.max_coordinate:g}, got {big:g}")
    if query.canvas is not None:
        w, h = query.canvas
        if not (0 < w <= limits.max_coordinate and 0 < h <= limits.max_coordinate):
            raise RequestError(422, f"canvas: expected a width and height in (0, {limits.max_coordinate:g}], got {w:g}, {h:g}")
        if query.stroke_width is not None and not 0 < query.stroke_width <= max(w, h) / 4:
            raise RequestError(422, f"stroke_width: expected a width in (0, {max(w, h) / 4:g}] (a quarter of the "
                               f"canvas), got {query.stroke_width:g}")
    elif query.stroke_width is not None:
        raise RequestError(422, "stroke_width: expected a canvas too (the width is in canvas units)")
    return query


def strokes_image(query: StrokeQuery, size: int) -> QueryImage:
    """Rasterise JSON strokes at the model's size (bounding box fitted, or placed on ``canvas``)."""
    strokes = Strokes([np.stack([np.asarray(s[0], float), np.asarray(s[1], float)], axis=1) for s in query.strokes],
                      canvas=(0.0, 0.0, *query.canvas) if query.canvas is not None else None, source="strokes")
    width = None
    if query.canvas is not None and query.stroke_width is not None:
        width = query.stroke_width * size / max(query.canvas)
    return _sketch(lambda: sketch_from_strokes(strokes, size, "strokes", stroke_width=width))


def _sketch(make) -> QueryImage:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = make()
        except QueryTooLargeError as exc:
            raise RequestError(413, str(exc)) from None
        except EmptySketchError as exc:
            raise RequestError(422, str(exc)) from None
        except DataError as exc:
            raise RequestError(422, str(exc)) from None
    notes = [" ".join(str(w.message).split()) for w in caught]
    return QueryImage(np.asarray(image, dtype=np.uint8), notes)


def file_image(data: bytes, content_type: str, modality: str, size: int, limits: Limits,
               where: str = "upload") -> QueryImage:
    """An uploaded file (raw body or multipart part) as a sketch or photo query image."""
    if not data:
        raise RequestError(422, f"{where}: expected a sketch or photo file, got an empty body")
    if content_type in SVG_TYPES:
        if modality != "sketch":
            raise RequestError(422, f"{where}: an SVG is a sketch; direction photo2* needs a photo (PNG/JPEG)")
        strokes = _svg_strokes(data, limits, where)
        return _sketch(lambda: sketch_from_strokes(strokes, size, where))
    if content_type not in RASTER_TYPES:
        raise RequestError(415, f"{where}: content type: expected application/json, multipart/form-data, "
                           f"{', '.join(RASTER_TYPES)} or image/svg+xml, got {content_type or '(none)'!r}")
    if modality == "sketch":
        return _sketch(lambda: query_sketch_from_bytes(data, "raster", size, where, max_pixels=limits.max_pixels,
                                                      formats=UPLOAD_FORMATS))
    import io

    try:
        photo = load_photo(io.BytesIO(data), size, where, max_pixels=limits.max_pixels, formats=UPLOAD_FORMATS)
    except QueryTooLargeError as exc:
        raise RequestError(413, str(exc)) from None
    except DataError as exc:
        raise RequestError(422, str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise RequestError(422, decode_error(where, exc, UPLOAD_FORMATS)) from None
    return QueryImage(photo, [])


def _svg_strokes(data: bytes, limits: Limits, where: str) -> Strokes:
    """An SVG's strokes, as ``load_query_sketch`` reads an .svg file (the library parser and its
    limits), refusing any DOCTYPE/ENTITY declaration and more strokes or points than allowed."""
    from ..data.svg import parse_svg
    from ..index.files import check_no_doctype

    try:
        check_no_doctype(data, where)
        strokes = parse_svg(data, where)
    except DataError as exc:
        raise RequestError(422, str(exc)) from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise RequestError(422, f"{where}: could not read SVG strokes: {' '.join(str(exc).split())[:160]}") from None
    if len(strokes) > limits.max_strokes:
        raise RequestError(422, f"{where}: strokes: expected at most {limits.max_strokes:,} strokes, got {len(strokes):,}")
    if strokes.num_points > limits.max_points:
        raise RequestError(422, f"{where}: points: expected at most {limits.max_points:,} points after flattening "
                           f"curves, got {strokes.num_points:,}")
    return strokes


#: the first bytes of the raster formats an upload may be, and their media types
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
          (b"GIF89a", "image/gif"))


def sniff_media(data: bytes) -> str | None:
    """The media type of a file part sent without one (or with a generic one such as
    ``application/octet-stream``), from its first bytes: a PNG, JPEG, GIF or WebP image, or SVG
    text; None for anything else."""
    for magic, media in _MAGIC:
        if data.startswith(magic):
            return media
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<?xml", b"<svg", b"<!--")) and b"<svg" in data[:65536].lower():
        return "image/svg+xml"
    return None


def field_bytes(text: str) -> bytes:
    """The bytes of a multipart part sent without a filename (``curl -F 'file=<q.svg'``), which
    Starlette hands over as text: decoded as UTF-8 when it is valid UTF-8 (an SVG), else as
    Latin-1 (an image: its first byte is never valid UTF-8); either decoding is undone here."""
    binary = text.startswith(tuple(magic.decode("latin-1") for magic, _ in _MAGIC)) or text.startswith("RIFF")
    return text.encode("latin-1") if binary else text.encode("utf-8")


def content_type_of(header: str | None) -> str:
    """The media type of a Content-Type header, lower case, without parameters."""
    return (header or "").split(";", 1)[0].strip().lower()


def finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
