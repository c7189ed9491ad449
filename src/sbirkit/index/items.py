"""The item dicts of an index (one per row): checked (:func:`check_items`), written to and read
from ``items.jsonl`` whole (:func:`write_items`, :func:`parse_items`), or read lazily.

Read lazily from JSON-lines files: a few bytes of memory per row, not a dict per row.

A gallery of 10M photos has 10M item dicts (id, path, class_name); as Python dicts they take
about 3-4 GB, more than the FAISS index of their vectors. :class:`JsonlItems` keeps the file
memory-mapped plus one int64 offset per line, and parses a line only when a result needs it.
It is a read-only :class:`~collections.abc.Sequence` of dicts, so
:class:`~sbirkit.index.gallery.GalleryIndex` uses it where it uses a list (``items[i]``,
``len``, iteration); :meth:`raw_lines` hands the lines over as they are, so saving an index
copies them without parsing them.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .checksums import sha256_stream

_SCAN = 1 << 26  # bytes scanned for line breaks at a time (a 64 MiB bool array at most)


def item_line(item: dict) -> bytes:
    """One item as the line ``GalleryIndex.save`` writes to ``items.jsonl``."""
    return (json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8")


class JsonlItems(Sequence):
    """The objects of a JSON-lines file, one per non-blank line, parsed on access.

    ``source`` is a path or a binary file object open for reading (kept valid by the memory map
    after the file is closed or deleted). ``sha256`` (hex) is checked against the whole file
    when it is opened; ``expect_rows`` against the number of lines. Each object must have an
    ``id`` or ``path`` key (checked when it is read).
    """

    def __init__(self, source: Any, expect_rows: int | None = None, sha256: str | None = None,
                 where: str | None = None):
        if isinstance(source, (str, os.PathLike)):
            self.path = Path(source)
            with open(self.path, "rb") as f:
                self._open(f, sha256)
        else:
            self.path = Path(where or getattr(source, "name", "<items>"))
            self._open(source, sha256)
        if expect_rows is not None and len(self) != int(expect_rows):
            raise DataError(f"{self.path}: rows: expected {expect_rows} items, got {len(self)}")

    def _open(self, f, sha256: str | None) -> None:
        size = os.fstat(f.fileno()).st_size
        if sha256 is not None:
            f.seek(0)
            digest = sha256_stream(f)  # a read, not the map: no resident pages
            if digest != sha256:
                raise DataError(f"{self.path}: sha256: expected {sha256[:16]}..., got {digest[:16]}...; "
                                "it was changed after the index (or shard) was written")
        self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        # two passes over the map, so the offset table (8 bytes a line) is the only large array:
        # count the line breaks, then write line i's start into starts[i] (line i: [s[i], s[i+1]-1))
        spans = [(a, min(_SCAN, size - a)) for a in range(0, size, _SCAN)]
        count = sum(int(np.count_nonzero(np.frombuffer(self._buf, np.uint8, n, a) == 10)) for a, n in spans)
        starts = np.empty(count + 1, dtype=np.int64)
        starts[0], filled = 0, 0
        for a, n in spans:
            nl = np.flatnonzero(np.frombuffer(self._buf, np.uint8, n, a) == 10)
            starts[filled + 1 : filled + 1 + len(nl)] = nl + a + 1
            filled += len(nl)
        if size and (count == 0 or starts[-1] != size):
            raise DataError(f"{self.path}: expected one JSON object per line ending in a line break; "
                            "the file is truncated")
        if size and hasattr(self._buf, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._buf.madvise(mmap.MADV_DONTNEED)  # the scan's pages: out of RSS, still in the page cache
        lengths = np.diff(starts) - 1
        if (lengths == 0).any():  # blank lines (never written by sbirkit): keep explicit ends
            keep = lengths > 0
            self._starts, self._ends = starts[:-1][keep], (starts[1:] - 1)[keep]
        else:
            self._starts, self._ends = starts, None

    def __len__(self) -> int:
        return len(self._starts) if self._ends is not None else len(self._starts) - 1

    def _span(self, i: int) -> tuple[int, int]:
        if self._ends is not None:
            return int(self._starts[i]), int(self._ends[i])
        return int(self._starts[i]), int(self._starts[i + 1]) - 1

    def line(self, i: int) -> bytes:
        """Line ``i`` as bytes, with its line break."""
        a, b = self._span(i)
        return bytes(self._buf[a : b + 1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        a, b = self._span(i)
        try:
            obj = json.loads(self._buf[a:b])
        except ValueError:
            raise DataError(f"{self.path}:{i + 1}: expected one JSON object per line, could not parse it") from None
        if not isinstance(obj, dict) or not ("id" in obj or "path" in obj):
            raise DataError(f"{self.path}:{i + 1}: expected an object with 'id' or 'path'")
        return obj

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self[i]

    def raw_lines(self) -> Iterator[bytes]:
        for i in range(len(self)):
            yield self.line(i)

    def __repr__(self) -> str:
        return f"JsonlItems({str(self.path)!r}, rows={len(self)})"


class ConcatItems(Sequence):
    """Several :class:`JsonlItems` (one per shard) as one sequence, in order."""

    def __init__(self, parts: Sequence[JsonlItems]):
        self.parts = list(parts)
        self._ends = list(np.cumsum([len(p) for p in self.parts]).tolist()) if self.parts else []

    def __len__(self) -> int:
        return int(self._ends[-1]) if self._ends else 0

    def _locate(self, i: int) -> tuple[JsonlItems, int]:
        p = bisect.bisect_right(self._ends, i)
        return self.parts[p], i - (self._ends[p - 1] if p else 0)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        part, j = self._locate(i)
        return part[j]

    def __iter__(self) -> Iterator[dict]:
        for part in self.parts:
            yield from part

    def raw_lines(self) -> Iterator[bytes]:
        for part in self.parts:
            yield from part.raw_lines()

    def __repr__(self) -> str:
        return f"ConcatItems(parts={len(self.parts)}, rows={len(self)})"


# ---- item dicts in memory: checked, written, read whole -----------------------------------------
def item_key(item: dict) -> str:
    return str(item["id"] if "id" in item else item["path"])


def check_items(
    items: Sequence[dict], n: int, what: str, taken: set[str] | None = None
) -> list[dict]:
    """Copy the item dicts, checking count, an ``id``/``path`` key, uniqueness and JSON-ability."""
    items = list(items)
    if len(items) != n:
        raise DataError(
            f"{what}: items: expected {n} item dicts (one per embedding row), got {len(items)}"
        )
    seen = set(taken or ())
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not ("id" in item or "path" in item):
            raise DataError(
                f"{what}: items[{i}]: expected a dict with an 'id' or 'path' key, got {item!r}"
            )
        clean = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in item.items()}
        try:
            json.dumps(clean)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{what}: items[{i}]: expected JSON-serialisable values ({exc})"
            ) from None
        key = item_key(clean)
        if key in seen:
            raise DataError(f"{what}: items[{i}]: id/path {key!r} is already in the gallery")
        seen.add(key)
        out.append(clean)
    return out


def write_items(path: Path, items: Sequence[dict]) -> str:
    """Write ``items.jsonl`` (one JSON object per line) and return its SHA-256. Lazily read items
    (:mod:`sbirkit.index.items`) hand over their lines as they are, unparsed."""
    h = hashlib.sha256()
    raw = getattr(items, "raw_lines", None)
    lines = raw() if raw is not None else (item_line(item) for item in items)
    with open(path, "wb") as f:
        for line in lines:
            h.update(line)
            f.write(line)
    return h.hexdigest()


def parse_items(raw: bytes, path: Path) -> list[dict]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{lineno}: expected UTF-8 text, byte {raw[exc.start]:#04x} at offset {exc.start} is not UTF-8"
        ) from None
    items = []
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            why = "the file is truncated" if not line.endswith("\n") else "could not parse it"
            raise DataError(f"{path}:{lineno}: expected one JSON object per line, {why}") from None
        if not isinstance(item, dict) or not ("id" in item or "path" in item):
            raise DataError(f"{path}:{lineno}: expected an object with 'id' or 'path'")
        items.append(item)
    return items
