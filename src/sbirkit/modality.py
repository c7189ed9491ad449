"""``Modality``: photo or sketch. Its own light module so models, eval and index need not import data."""

from __future__ import annotations

from enum import Enum


class Modality(str, Enum):
    PHOTO = "photo"
    SKETCH = "sketch"

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"modality: expected 'photo' or 'sketch', got {value!r}") from None
