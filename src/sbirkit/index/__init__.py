"""Persistent gallery index (FAISS) and search: embed a photo folder, save it, query it with a sketch."""

from __future__ import annotations

import importlib

from .faiss_ops import suggested_ivf_factory
from .gallery import GalleryIndex, SearchResult
from .run_model import ModelMismatchError, check_model

# The file helpers import the data package (and with it torch, ~0.7 GB resident); loaded on
# first use, so building or searching an index from stored embeddings does not pay for them.
_FROM_FILES = ("IMAGE_EXTENSIONS", "draw_grid", "draw_grid_rows", "embed_image_files", "grid_size",
               "image_items", "list_image_files", "load_query_sketch")


def __getattr__(name: str):
    if name in _FROM_FILES:
        return getattr(importlib.import_module(".files", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
