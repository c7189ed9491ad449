"""Keep decoded images in memory for small datasets that are slow to decode or render.

The procedural synthetic data renders every image from scratch (milliseconds each); a training
run reads each one many times. ``cached_images`` returns a view of the dataset whose
``load_image`` remembers its results (PIL images, so a 32-px RGB image costs 3 KB).
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Callable

from PIL import Image

from .dataset import SBIRDataset
from .records import Sample


class ImageCache:
    """``load(sample, size)`` with memory: up to ``max_items`` images, then reads through.

    Picklable (DataLoader workers started with ``spawn`` get an empty cache of their own).
    """

    def __init__(self, load: Callable[[Sample, int | None], Image.Image], max_items: int = 50_000):
        self.load, self.max_items = load, int(max_items)
        self._cache: dict[tuple[str, int | None], Image.Image] = {}
        self._lock = threading.Lock()

    def __call__(self, sample: Sample, size: int | None = None) -> Image.Image:
        key = (sample.key, size)
        img = self._cache.get(key)
        if img is None:
            img = self.load(sample, size)
            with self._lock:
                if len(self._cache) < self.max_items:
                    self._cache[key] = img
        return img.copy()

    def __len__(self) -> int:
        return len(self._cache)

    def __getstate__(self) -> dict[str, Any]:
        return {"load": self.load, "max_items": self.max_items}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["load"], state["max_items"])


def cached_images(dataset: SBIRDataset, max_items: int = 50_000) -> SBIRDataset:
    """A view of ``dataset`` (same type, samples and splits) whose ``load_image`` is cached."""
    view = copy.copy(dataset)
    view.load_image = ImageCache(dataset.load_image, max_items)  # type: ignore[method-assign]
    return view
