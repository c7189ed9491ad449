"""Small JPEGs of indexed items, made from the file the *index* names (never a path from a request)."""

from __future__ import annotations

import io
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageOps

from ..data.dataset import check_image_pixels
from ..errors import DataError

VECTOR_EXTENSIONS = (".svg", ".ndjson")


def make_thumbnail(path: str | Path, size: int) -> bytes:
    """JPEG bytes of the image at ``path``, fitted in ``size`` × ``size``, on white.

    Raster files are refused over the library's pixel cap (read from the header); JPEGs are
    decoded at a reduced scale (``draft``) when much larger than the thumbnail. SVG and ndjson
    sketches are drawn with the query rasteriser.
    """
    p = Path(path)
    if p.suffix.lower() in VECTOR_EXTENSIONS:
        from ..index.files import load_query_sketch

        img = load_query_sketch(p, size=size)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(p)
            with opened as src:
                check_image_pixels(src.width, src.height, str(p))
                src.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when it can
                src.load()
                if src.mode in ("RGBA", "LA", "P", "PA"):
                    rgba = src.convert("RGBA")
                    img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
                else:
                    img = src
                img = ImageOps.exif_transpose(img.convert("RGB"))
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"{p.name}: could not read the image ({' '.join(str(exc).split())[:120]})") from None
    img = img.convert("RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    if max(img.size) < size // 2:  # tiny photos (32 px synthetic ones): enlarge so they can be seen
        scale = size // max(img.size)
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85, optimize=True)
    return buf.getvalue()


class ThumbnailCache:
    """An LRU cache of thumbnail bytes keyed by (snapshot, item id); thread-safe."""

    def __init__(self, capacity: int = 4096):
        self.capacity = int(capacity)
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
