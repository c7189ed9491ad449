"""Reading a large index without reading it into memory: FAISS memory maps, and what is checked.

``GalleryIndex.load(path, mmap=True)`` (the default for indexes built with ``index build
--max-memory`` or ``--from-embeddings``) opens ``index.faiss`` with FAISS's own I/O flags:

* IVF indexes (``IVF…,Flat``, ``IVF…,PQ…``, with or without OPQ): ``faiss.IO_FLAG_MMAP``
  turns the inverted lists stored inline in the file into an ``OnDiskInvertedLists`` over
  that same file, memory-mapped read-only. Only the coarse centroids, the PQ codebooks and the
  OPQ rotation are read into memory; a search touches the pages of the lists it probes, and the
  kernel may drop them again (they are file-backed, not the process's own memory).
* Flat and HNSW indexes: ``faiss.IO_FLAG_MMAP_IFC`` maps the stored vectors (the HNSW graph
  itself is read into memory).

The file is opened once, by the handle that ``load`` holds, through ``/proc/self/fd/N`` on Linux,
so a save that replaces the version meanwhile cannot swap the file under the reader.

What a mapped load checks, and why not everything: the SHA-256 of ``index.faiss`` costs a full
read of the file (about 2.6 GB for 10M × 64-d IVF-Flat, several seconds even from page cache,
minutes from a cold network disk), which is what mapping avoids. So a mapped load checks
``meta.json`` (parsed as always), the size of ``index.faiss``, a SHA-256 of its size plus its
first and last 4 MiB (the header, the centroids and codebooks, the end of the lists: a file from
another build or a truncated one fails it), and the full SHA-256 of ``items.jsonl`` (read, not
mapped, so its pages do not stay resident). ``verify=True`` (``sbirkit index info --verify``)
adds the full SHA-256 of ``index.faiss``. The in-memory load checks the full SHA-256, as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss

from ..errors import DataError
from .checksums import quick_sha256_stream, sha256_stream
from .faiss_ops import short_error
from .store import FILES, INDEX_FILE, ITEMS_FILE, META_FILE, parse_meta, read_live

_MMAP = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
_MMAP_FLAT = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY


def _fd_path(f, fallback: Path) -> str:
    """A path that names the open file ``f`` itself (Linux), else its path."""
    proc = f"/proc/self/fd/{f.fileno()}"
    return proc if os.path.exists(proc) else str(fallback)


def read_index_mapped(index_path: Path, f, meta: dict, checksums: dict | None, verify: bool = False) -> faiss.Index:
    """Memory-map the FAISS index open as ``f``, after the checks in the module docstring."""
    changed = "it was changed after the index was built, or belongs to another build"
    if checksums:
        size = os.fstat(f.fileno()).st_size
        want = (checksums.get("bytes") or {}).get(INDEX_FILE)
        if want is not None and size != want:
            raise DataError(f"{index_path}: size: expected {want} bytes (meta.json), got {size}; {changed}")
        quick = checksums.get(f"{INDEX_FILE}:quick")
        if quick is not None and quick_sha256_stream(f) != quick:
            raise DataError(f"{index_path}: sha256 of its ends: differs from meta.json's; {changed}")
        if verify or quick is None:  # an index saved before quick checksums: the full check
            digest = sha256_stream(f)
            f.seek(0)
            if digest != checksums[INDEX_FILE]:
                raise DataError(f"{index_path}: sha256: expected {checksums[INDEX_FILE][:16]}... (meta.json), "
                                f"got {digest[:16]}...; {changed}")
    path = _fd_path(f, index_path)
    ivf_first = "IVF" in str(meta.get("factory", ""))
    flags = (_MMAP, _MMAP_FLAT) if ivf_first else (_MMAP_FLAT, _MMAP)
    error = None
    for flag in flags:
        try:
            index = faiss.read_index(path, flag)
        except RuntimeError as exc:
            error = exc
            continue
        return index
    raise DataError(f"{index_path}: expected a FAISS index, could not memory-map it ({short_error(error)})")


def verify_index(directory) -> dict:
    """Full SHA-256 of every file of an index folder's live version against ``meta.json``.

    Returns ``{file: "ok"}``; a mismatch is a one-line :class:`DataError`. Reads each file once,
    streamed (nothing is kept in memory).
    """
    def check(version: Path, handles: dict) -> dict:
        meta = parse_meta(handles[META_FILE].read(), version / META_FILE)
        checksums = meta.get("checksums")
        if not isinstance(checksums, dict):
            raise DataError(f"{version / META_FILE}: checksums: none recorded (an index from an older "
                            "sbirkit); rebuild it to verify")
        out = {}
        for name in (INDEX_FILE, ITEMS_FILE):
            digest = sha256_stream(handles[name])
            if digest != checksums.get(name):
                raise DataError(f"{version / name}: sha256: expected {str(checksums.get(name))[:16]}... "
                                f"(meta.json), got {digest[:16]}...")
            out[name] = "ok"
        return out

    return read_live(Path(directory), FILES, check, what="being verified")
