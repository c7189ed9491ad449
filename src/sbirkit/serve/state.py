"""What a server holds in memory: the model (loaded once per worker) and a snapshot of the index.

A :class:`Snapshot` is immutable once made: a reload builds a new one and swaps the reference,
so a query that started on the old one finishes on it (the model and the index it searches
always belong together).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UsageError
from ..index.gallery import GalleryIndex, RowFilter, check_model
from ..index.query import embed_query_images
from .config import ServeConfig

log = logging.getLogger(__name__)

MODALITIES = ("sketch", "photo")
_GENERATIONS = itertools.count(1)
#: Item fields never sent to a client: where the file is on the server's disk.
PRIVATE_FIELDS = frozenset({"path"})


@dataclass
class Model:
    """A trained run's encoder with what a query needs: the image size and the model's identity."""

    encoder: Any
    size: int
    info: dict
    run_dir: Path

    def encode(self, modality: str, images: np.ndarray) -> np.ndarray:
        """Embed a (B, H, W, 3) uint8 batch with the sketch or photo branch: (B, d) float32, as
        ``sbirkit search`` does (:func:`sbirkit.index.query.embed_query_images`)."""
        return embed_query_images(self.encoder, images, modality)


def load_model(run_dir: str | os.PathLike, which: str = "best") -> Model:
    """Load a run once (``sbirkit.engine.load_run``) with the model_info ``index build`` records."""
    from ..index.run_model import load_run_encoder

    encoder, size, info = load_run_encoder(run_dir, which)
    return Model(encoder, size, info, Path(run_dir))


@dataclass
class Snapshot:
    """One loaded version of the index with its model, and the lookups queries need."""

    index_dir: Path
    index: GalleryIndex
    model: Model
    version: str | None
    by_id: dict[str, int]
    class_names: np.ndarray  # per row: class name or "" (object array)
    modalities: np.ndarray  # per row: "photo" / "sketch" (object array)
    class_counts: dict[str, int]
    modality_counts: dict[str, int]
    generation: int = field(default_factory=lambda: next(_GENERATIONS))  # unique per load, for caches
    _filters: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def directions(self) -> list[str]:
        """Query directions this index can answer: ``<query>2<gallery>`` for each gallery modality."""
        return [f"{q}2{g}" for g in MODALITIES if self.modality_counts.get(g) for q in MODALITIES]

    @property
    def default_direction(self) -> str:
        return "sketch2photo" if self.modality_counts.get("photo") else self.directions[0]

    def row_filter(self, gallery_modality: str, classes: tuple[str, ...] | None) -> RowFilter | None:
        """The rows of ``gallery_modality`` (and of ``classes``), or None when that is every row."""
        key = (gallery_modality, classes)
        with self._lock:
            if key in self._filters:
                self._filters.move_to_end(key)
                return self._filters[key]
        mask = None
        if len(self.modality_counts) > 1:
            mask = self.modalities == gallery_modality
        if classes:
            cmask = np.isin(self.class_names, np.array(list(classes), dtype=object))
            mask = cmask if mask is None else mask & cmask
        rows = None if mask is None else RowFilter.from_mask(mask)
        with self._lock:
            self._filters[key] = rows
            while len(self._filters) > 64:
                self._filters.popitem(last=False)
        return rows

    def public_item(self, row: int) -> dict:
        item = self.index.items[row]
        return {k: v for k, v in item.items() if k not in PRIVATE_FIELDS}

    def item_id(self, row: int) -> str:
        item = self.index.items[row]
        return str(item["id"] if "id" in item else item["path"])


def _resolve_run(index_dir: Path, model_info: dict, run: str | None) -> Path:
    if run is not None:
        return Path(run)
    recorded = model_info.get("run")
    if not recorded:
        raise DataError(f"{index_dir}: model_info.run: the index does not say which run built it; pass --run")
    path = Path(recorded)
    if not path.exists():
        raise DataError(
            f"{index_dir}: model_info.run: the run the index was built with, {path}, is not there; "
            "pass --run with its folder"
        )
    return path


def load_snapshot(config: ServeConfig, previous: Snapshot | None = None) -> Snapshot:
    """Load the live version of the index and the model that built it (reusing ``previous``'s
    model when it is the same one), checking that they match as ``sbirkit search`` does."""
    index_dir = Path(config.index_dir)
    meta = GalleryIndex.read_meta(index_dir)
    index = GalleryIndex.load(index_dir)
    if (index.created, index.updated, len(index)) != (meta.get("created"), meta.get("updated"), meta["ntotal"]):
        meta = GalleryIndex.read_meta(index_dir)  # a save landed between the two reads: name the new one
    built_with = index.model_info
    run_dir = _resolve_run(index_dir, built_with, config.run)
    which = config.which or built_with.get("which", "best")
    model = None
    if previous is not None and previous.model.run_dir.resolve() == run_dir.resolve() \
            and previous.model.info["which"] == which:
        from ..engine import model_fingerprint

        if model_fingerprint(run_dir, which) == previous.model.info["fingerprint"]:
            model = previous.model
    if model is None:
        model = load_model(run_dir, which)
    check_model(built_with, model.info, where=str(index_dir))
    if model.info["embed_dim"] != index.dim:
        raise DataError(
            f"{index_dir}: embedding size {index.dim}, but the model {run_dir} embeds to {model.info['embed_dim']}"
        )
    by_id: dict[str, int] = {}
    names, modalities = [], []
    default_modality = str(built_with.get("modality", "photo"))
    for row, item in enumerate(index.items):
        by_id[str(item["id"] if "id" in item else item["path"])] = row
        name = item.get("class_name", item.get("label"))
        names.append("" if name is None else str(name))
        modality = str(item.get("modality", default_modality))
        if modality not in MODALITIES:
            raise DataError(f"{index_dir}: items[{row}].modality: expected photo or sketch, got {modality!r}")
        modalities.append(modality)
    class_names = np.array(names, dtype=object)
    mods = np.array(modalities, dtype=object)
    return Snapshot(
        index_dir=index_dir,
        index=index,
        model=model,
        version=meta.get("version"),
        by_id=by_id,
        class_names=class_names,
        modalities=mods,
        class_counts=dict(sorted(Counter(n for n in names if n).items())),
        modality_counts=dict(Counter(modalities)),
    )


class StateHolder:
    """The current snapshot, swapped by a reload. With a ``reload_signal`` file (multi-worker
    servers), a worker that sees the file change reloads before its next request."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self._lock = threading.Lock()
        self.snapshot = load_snapshot(config)
        self._signal_seen = self._read_signal()
        self.reloads = 0

    def _read_signal(self) -> str | None:
        if not self.config.reload_signal:
            return None
        try:
            return Path(self.config.reload_signal).read_text(encoding="utf-8")
        except OSError:
            return None

    def stale(self) -> bool:
        """Whether another worker asked for a reload since this one last loaded."""
        return self.config.reload_signal is not None and self._read_signal() != self._signal_seen

    def reload(self, announce: bool = False) -> Snapshot:
        """Load the index again (and the model, if the index now names another); on failure the
        old snapshot stays and the error is raised. ``announce`` tells the other workers."""
        with self._lock:
            signal = self._read_signal()
            fresh = load_snapshot(self.config, self.snapshot)
            self.snapshot = fresh
            self.reloads += 1
            if announce and self.config.reload_signal:
                import uuid

                from ..fileio import atomic_write

                signal = uuid.uuid4().hex
                atomic_write(self.config.reload_signal, signal.encode("utf-8"))
            self._signal_seen = signal
            return fresh

    def current(self) -> Snapshot:
        if self.stale():
            try:
                self.reload()
            except Exception as exc:  # keep serving the old one; the admin saw the error when asking
                log.warning("reload requested by another worker failed, keeping the old index: %s", exc)
                self._signal_seen = self._read_signal()
        return self.snapshot


def check_classes(snapshot: Snapshot, classes: list[str] | None) -> tuple[str, ...] | None:
    """The class filter as a tuple, refusing a class the index does not hold (one-line error).
    An empty ``class=`` is no filter (as the parameter's schema, a list of strings, allows)."""
    classes = [c for c in classes or () if c != ""]
    if not classes:
        return None
    if not snapshot.class_counts:
        raise UsageError("class: this index has no class names, so it cannot be filtered by class")
    unknown = [c for c in classes if c not in snapshot.class_counts]
    if unknown:
        known = ", ".join(list(snapshot.class_counts)[:10]) + (" ..." if len(snapshot.class_counts) > 10 else "")
        raise UsageError(f"class: expected classes the index holds ({known}), got {unknown[0][:80]!r}")
    return tuple(sorted(set(classes)))
