"""SHA-256 checksums of index and shard files: whole files streamed, a file's two ends (what a
memory-mapped load checks), and an index's label column.

Every checksum in ``meta.json`` and in shard markers is computed here, so a reader and the
writer can never disagree on how.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

#: bytes at each end of index.faiss that the quick checksum covers
QUICK_BYTES = 4 << 20
_BLOCK = 1 << 20


def sha256_stream(f) -> str:
    """SHA-256 of what is left to read in the binary file object ``f``, read 1 MiB at a time."""
    h = hashlib.sha256()
    for block in iter(lambda: f.read(_BLOCK), b""):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def quick_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the file's size and its first and last :data:`QUICK_BYTES` (see ``load(mmap=True)``)."""
    with open(path, "rb") as f:
        return quick_sha256_stream(f)


def quick_sha256_stream(f) -> str:
    """:func:`quick_sha256` of an open file; leaves it at offset 0."""
    size = os.fstat(f.fileno()).st_size
    h = hashlib.sha256(str(size).encode())
    f.seek(0)
    h.update(f.read(QUICK_BYTES))
    if size > QUICK_BYTES:
        f.seek(max(QUICK_BYTES, size - QUICK_BYTES))
        h.update(f.read(QUICK_BYTES))
    f.seek(0)
    return h.hexdigest()


def labels_sha256(items: Sequence[dict]) -> str:
    """SHA-256 of the label column: each row's ``class_name`` (else ``label``, else null), in order.

    Streamed, byte for byte what ``json.dumps`` of the whole list gives, without that list.
    """
    h = hashlib.sha256(b"[")
    for i, item in enumerate(items):
        label = json.dumps(item.get("class_name", item.get("label")), default=str)
        h.update(((", " if i else "") + label).encode("utf-8"))
    h.update(b"]")
    return h.hexdigest()


__all__ = ["QUICK_BYTES", "labels_sha256", "quick_sha256", "quick_sha256_stream", "sha256_file", "sha256_stream"]
