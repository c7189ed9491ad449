"""Persistent gallery index (FAISS) and search: embed a photo folder, save it, query it with a sketch."""

from __future__ import annotations

from .files import (
    IMAGE_EXTENSIONS,
    draw_grid,
    draw_grid_rows,
    embed_image_files,
    grid_size,
    image_items,
    list_image_files,
    load_query_sketch,
)
from .gallery import (
    GalleryIndex,
    ModelMismatchError,
    SearchResult,
    check_model,
    suggested_ivf_factory,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "GalleryIndex",
    "ModelMismatchError",
    "SearchResult",
    "check_model",
    "draw_grid",
    "draw_grid_rows",
    "embed_image_files",
    "grid_size",
    "image_items",
    "list_image_files",
    "load_query_sketch",
    "suggested_ivf_factory",
]
