"""The one record model every dataset shares.

A ``Sample`` is one photo or one sketch: its class, where its pixels or strokes come from,
the instance it depicts (fine-grained pairs: a sketch's ``instance_id`` is the id of the photo
it was drawn from, a photo's is its own id), who drew it (``user_id``, for per-user styles) and
its split. Records are plain, hashable and cheap; pixels are read lazily by the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import DataError, EmptySketchError
from ..modality import Modality

__all__ = ["DataError", "EmptySketchError", "Modality", "Sample"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One photo or sketch.

    ``source`` is the file it lives in (None for generated samples); ``index`` is its row inside
    a multi-sample file (an ndjson line, a row of an .npy/.mat/.npz array), else None.
    ``key`` is unique within its dataset and stable across runs (used for ids in indexes).
    """

    key: str
    modality: Modality
    class_index: int
    class_name: str
    source: str | None = None
    index: int | None = None
    instance_id: str | None = None
    user_id: str | None = None
    split: str | None = None

    @property
    def is_sketch(self) -> bool:
        return self.modality is Modality.SKETCH

    @property
    def is_photo(self) -> bool:
        return self.modality is Modality.PHOTO

    def with_split(self, split: str | None) -> "Sample":
        return replace(self, split=split)

    def location(self) -> str:
        """Where to look for this sample, for error messages: ``path`` or ``path#row``."""
        where = self.source or f"<generated {self.key}>"
        return where if self.index is None else f"{where}#{self.index}"
