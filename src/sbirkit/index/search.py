"""Searching an index with sketch files: what ``sbirkit search`` does, as a library call.

:func:`search_sketch_files` loads the index and the model that built it (checked against the
index's ``model_info``), reads each query file the way the server reads an upload
(:func:`~sbirkit.index.files.load_query_sketch`), embeds them in one batch and searches, through
the query path the server uses too (:mod:`sbirkit.index.query`);
:meth:`SketchSearch.as_dict` is the JSON ``sbirkit search --json`` prints.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UsageError
from .gallery import GalleryIndex
from .query import embed_query_images
from .run_model import check_model, load_run_encoder


def query_files(sketch: str | os.PathLike) -> list[Path]:
    """The sketch file, or every sketch file under a folder (recursive, sorted by relative path)."""
    from .files import SKETCH_EXTENSIONS

    sketch = Path(sketch)
    if not sketch.is_dir():
        return [sketch]
    found = sorted((p for p in sketch.rglob("*") if p.is_file() and p.suffix.lower() in SKETCH_EXTENSIONS),
                   key=lambda p: p.relative_to(sketch).as_posix())
    if not found:
        raise UsageError(f"--sketch {sketch}: expected sketch files ({', '.join(sorted(SKETCH_EXTENSIONS))}) in the "
                         "folder, found none")
    return found


@dataclass
class SketchSearch:
    """The queries used (with their images and the warnings reading them gave), those skipped, and
    each query's ranked results (dicts with ``rank`` from 0, ``score``, ``id``, ``path``, ...)."""

    index_dir: Path
    index: GalleryIndex
    model_info: dict[str, Any]
    k: int
    nprobe: int | None
    drawing: int
    used: list[Path] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    notes: list[list[str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    blocks: list[list[dict[str, Any]]] = field(default_factory=list)

    def as_dict(self, grid: Path | None = None) -> dict[str, Any]:
        """What ``sbirkit search --json`` prints (ranks from 1)."""
        return {
            "index": str(self.index_dir), "metric": self.index.metric, "k": self.k,
            "nprobe": self.nprobe if self.nprobe else self.index.nprobe,
            "model": {key: self.model_info.get(key) for key in ("run", "fingerprint", "which")},
            "queries": [
                {"query": str(path), **({"drawing": self.drawing} if path.suffix.lower() == ".ndjson" else {}),
                 "warnings": note,
                 "results": [{**{key: v for key, v in item.items() if key != "rank"}, "rank": item["rank"] + 1}
                             for item in rows]}
                for path, rows, note in zip(self.used, self.blocks, self.notes)
            ],
            "skipped": self.skipped,
            "grid": str(grid) if grid is not None else None,
        }


def search_sketch_files(index_dir: str | os.PathLike, sketch: str | os.PathLike, k: int = 10, *,
                        run: str | os.PathLike | None = None, nprobe: int | None = None, drawing: int = 0,
                        on_skip: Callable[[Path, DataError], None] | None = None,
                        on_warning: Callable[[str], None] | None = None) -> SketchSearch:
    """Search ``index_dir`` with the sketch file ``sketch``, or with every sketch file under a
    folder, embedded by ``run`` (default: the run the index was built with, checked against the
    index either way). In a folder, a file that cannot be used (blank, unreadable) is skipped and
    ``on_skip(path, error)`` told; a single file's error is raised. ``on_warning(message)`` hears
    each warning reading a query gave (e.g. "looks like a photo")."""
    from .files import load_query_sketch

    index_dir, sketch = Path(index_dir), Path(sketch)
    queries = query_files(sketch)
    index = GalleryIndex.load(index_dir)
    if nprobe is not None:
        if not index.is_ivf:
            raise UsageError(f"--nprobe: only IVF indexes take it; {index_dir} is a {index.factory!r} index")
        if nprobe < 1:
            raise UsageError(f"--nprobe: expected a positive integer, got {nprobe}")
    built_with = index.model_info
    run_dir = Path(run) if run else Path(built_with.get("run", ""))
    encoder, size, info = load_run_encoder(run_dir, built_with.get("which", "best"))
    check_model(built_with, info, where=str(index_dir))
    if info["embed_dim"] != index.dim:
        raise UsageError(f"{index_dir}: embedding size {index.dim}, but the model {run_dir} embeds to "
                         f"{info['embed_dim']}")
    out = SketchSearch(index_dir, index, info, k, nprobe, drawing)
    for path in queries:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                image = load_query_sketch(path, size=size, index=drawing)
            except DataError as exc:
                if not sketch.is_dir():
                    raise
                out.skipped.append({"query": str(path), "error": str(exc)})
                if on_skip is not None:
                    on_skip(path, exc)
                continue
        for w in caught:
            if on_warning is not None:
                on_warning(str(w.message))
        out.images.append(image)
        out.used.append(path)
        out.notes.append([str(w.message) for w in caught])
    if not out.used:
        raise UsageError(f"--sketch {sketch}: none of the {len(queries)} sketch files could be used")
    q = embed_query_images(encoder, [np.asarray(im, dtype=np.uint8) for im in out.images], "sketch")
    result = index.search(q, k=k, nprobe=nprobe)
    out.blocks = [result.items_for(i) for i in range(len(out.used))]
    return out
