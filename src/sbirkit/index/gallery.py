"""``GalleryIndex``: a persistent FAISS index of gallery embeddings plus one item dict per row.

A gallery is embedded once with a trained model, saved as a folder and searched later with
sketch embeddings from the same model. Embeddings are L2-normalised float32, so the default
metric ``"ip"`` (inner product) is cosine.

Index folder layout (``format_version`` 2)::

    X/
      CURRENT                    one line: the name of the live version folder
      v-<UTC time>-<id>/         one complete build; never modified once CURRENT names it
        index.faiss              the FAISS index (the vectors)
        items.jsonl              one JSON object per row, in row order (``id`` or ``path``, extras)
        meta.json                model_info, factory used (and requested, and why they differ),
                                 metric, ntotal, dim, nprobe, versions, created, and the SHA-256
                                 of index.faiss, items.jsonl and the label column
      .lock                      locked (``flock``) by a save in progress: one writer at a time
      .tmp-<id>/                 a save in progress; one left by a killed save is removed by the next

:meth:`GalleryIndex.save` writes every file into ``X/.tmp-<id>/``, flushes it, renames it to
``X/v-<time>-<id>/``, then atomically replaces ``X/CURRENT`` (a temporary file and
``os.replace``) and only then deletes the older version folders. :meth:`GalleryIndex.load`
reads ``CURRENT`` once and opens all three files of that one version before reading any, so a
concurrent save can never give it one build's vectors with another build's items; if the
version is deleted between reading the pointer and opening its files (a save finished in that
instant), it reads the new pointer and tries again. The checksums in ``meta.json`` make a
shuffled, edited or swapped ``items.jsonl`` or ``index.faiss`` a one-line :class:`DataError`.

Folders written by older sbirkit (``format_version`` 1: ``index.faiss``, ``items.jsonl`` and
``meta.json`` directly in ``X``, no checksums) still load; the next save into ``X`` converts it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .. import __version__
from ..errors import DataError, UsageError

INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.jsonl"
META_FILE = "meta.json"
POINTER_FILE = "CURRENT"
LOCK_FILE = ".lock"
FORMAT = "sbirkit-gallery-index"
FORMAT_VERSION = 2
_FILES = (INDEX_FILE, ITEMS_FILE, META_FILE)
_VERSION_NAME = re.compile(r"v-[0-9TZ]+-[0-9a-f]+")
_LOAD_TRIES = 5  # reads of CURRENT before giving up on an index that keeps changing under a reader
_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
_ADD_CHUNK = 65536


class ModelMismatchError(DataError):
    """The index was built with a different model than the one embedding the queries."""


@dataclass
class SearchResult:
    """Top-k results for Q queries: ``scores`` and ``indices`` are (Q, k); -1 marks no result.

    Scores are inner products (higher is better) for metric ``"ip"`` and squared L2 distances
    (lower is better) for ``"l2"``; either way column 0 is the best match.
    """

    scores: np.ndarray
    indices: np.ndarray
    items: Sequence[dict]
    metric: str = "ip"

    def __len__(self) -> int:
        return len(self.indices)

    def items_for(self, i: int) -> list[dict]:
        """Ranked item dicts of query ``i``, each a copy with ``rank``, ``score`` and ``index`` added."""
        out = []
        for rank, (idx, score) in enumerate(zip(self.indices[i].tolist(), self.scores[i].tolist())):
            if idx < 0:  # an IVF probe can find fewer than k neighbours
                continue
            out.append({**self.items[idx], "rank": rank, "score": float(score), "index": int(idx)})
        return out


class RowFilter:
    """A set of gallery rows a search may return (e.g. one class's), as a FAISS bitmap selector.

    Made once per filter and reused for every search over the same index (the bitmap is
    ``n / 8`` bytes; checking a row is one bit test).
    """

    def __init__(self, rows: Any, n: int):
        mask = np.zeros(int(n), dtype=bool)
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise UsageError(f"rows: expected row numbers in 0..{n - 1}, got {idx.min()}..{idx.max()}")
        mask[idx] = True
        self.n = int(n)
        self.count = int(mask.sum())
        self._bitmap = np.packbits(mask, bitorder="little")  # FAISS reads bit (i & 7) of byte i >> 3
        self.selector = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(self._bitmap))

    @classmethod
    def from_mask(cls, mask: Any) -> RowFilter:
        mask = np.asarray(mask, dtype=bool)
        return cls(np.flatnonzero(mask), len(mask))

    def __len__(self) -> int:
        return self.count


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _item_key(item: dict) -> str:
    return str(item["id"] if "id" in item else item["path"])


def _as_matrix(x: Any, what: str) -> np.ndarray:
    """Embeddings as a C-contiguous float32 (n, d) array; a tensor is detached and moved to CPU."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DataError(f"{what}: shape: expected a 2-D (n, d) array, got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{what}: dtype: expected numbers, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:5].tolist())) + (" ..." if len(rows) > 5 else "")
        raise DataError(
            f"{what}: values: expected finite numbers, got NaN/inf in {len(rows)} row(s): {shown}"
        )
    return arr


def _check_items(
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
        key = _item_key(clean)
        if key in seen:
            raise DataError(f"{what}: items[{i}]: id/path {key!r} is already in the gallery")
        seen.add(key)
        out.append(clean)
    return out


def _warn_if_not_normalised(x: np.ndarray, metric: str, what: str) -> None:
    if metric == "ip" and len(x):
        norms = np.linalg.norm(x, axis=1)
        if np.abs(norms - 1).max() > 1e-3:
            warnings.warn(
                f"{what}: rows are not L2-normalised (norms {norms.min():.3g}..{norms.max():.3g}); "
                "inner-product scores are then not cosine similarities",
                stacklevel=3,
            )


def _model_label(info: dict | str | None) -> str:
    if isinstance(info, str):
        return info
    if not info:
        return "<unknown model>"
    for key in ("fingerprint", "run", "backbone"):
        if info.get(key):
            return str(info[key])
    return json.dumps(info, sort_keys=True, default=str)


def _fit_nlist(factory: str, n_train: int) -> tuple[str, str | None]:
    """Shrink ``IVF{nlist}`` when the training set has fewer points than lists (FAISS cannot train).

    Returns the factory to use and, when it differs from ``factory``, the reason in words.
    """
    m = re.search(r"IVF(\d+)", factory)
    if not m or int(m.group(1)) <= n_train:
        return factory, None
    nlist = int(m.group(1))
    new = max(1, n_train // 39)  # FAISS's guidance: at least 39 training points per centroid
    fixed = factory[: m.start(1)] + str(new) + factory[m.end(1) :]
    note = (
        f"nlist {nlist} > {n_train} training vectors; IVF needs at least 39 vectors per list, "
        f"so nlist {new}"
    )
    warnings.warn(
        f"factory {factory!r}: nlist {nlist} > {n_train} training vectors; using {fixed!r}",
        stacklevel=3,
    )
    return fixed, note


def _short(exc: BaseException) -> str:
    """The part of a (often multi-line) FAISS error that says what went wrong, on one line."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    line = text[-1].strip()
    # "Error in <C++ signature> at /path/file.cpp:123: could not parse index string X"
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", line)


def check_factory(factory: str, dim: int, metric: str = "ip") -> None:
    """Raise :class:`UsageError` unless FAISS can make an index from ``factory`` for ``dim``.

    Builds an empty index and throws it away: cheap, so callers check before embedding anything.
    """
    if metric not in _METRICS:
        raise UsageError(f"metric: expected one of {sorted(_METRICS)}, got {metric!r}")
    try:
        faiss.index_factory(int(dim), str(factory), _METRICS[metric])
    except RuntimeError as exc:
        raise UsageError(
            f"factory: could not build FAISS index {factory!r} for {dim}-dim vectors: {_short(exc)}"
        ) from None


class GalleryIndex:
    """A FAISS index over gallery embeddings, the item dict of every row, and the model that made them.

    Build with :meth:`build`, grow with :meth:`add`, query with :meth:`search`, persist with
    :meth:`save` / :meth:`load`. ``factory`` is a FAISS ``index_factory`` string: ``"Flat"``
    (exact), ``"IVF{nlist},Flat"`` (approximate, ``nprobe`` lists scanned), ``"HNSW32"`` ...
    """

    def __init__(
        self,
        index: faiss.Index,
        items: list[dict],
        model_info: dict,
        factory: str,
        metric: str,
        created: str | None = None,
        requested_factory: str | None = None,
        factory_note: str | None = None,
        updated: str | None = None,
        build_info: dict | None = None,
    ):
        self._index = index
        self.items = items
        self.model_info = dict(model_info)
        self.factory = factory
        self.metric = metric
        self.created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")
        #: the factory string asked for, and why ``factory`` (the one used) differs, if it does
        self.requested_factory = requested_factory or factory
        self.factory_note = factory_note
        #: when rows were last added or removed (``add``/``remove``; None for an unchanged build)
        self.updated = updated
        #: how the index was built from shards / for a memory budget (``meta.json`` "build"; see
        #: :mod:`sbirkit.index.autotune`): whether to memory-map it, the choice and its measured recall
        self.build_info = dict(build_info) if build_info else None
        #: True when loaded memory-mapped (read-only: ``add``/``remove`` need ``load(mmap=False)``)
        self.mapped = False

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        embeddings: Any,
        items: Sequence[dict],
        model_info: dict | None = None,
        factory: str = "Flat",
        metric: str = "ip",
        train_size: int | None = None,
        seed: int = 0,
        progress: bool = True,
        nprobe: int | None = None,
    ) -> GalleryIndex:
        """Index ``embeddings`` (N, d) with one item dict per row (``id`` or ``path``; any extras).

        Indexes that need training (IVF, PQ) train on the whole gallery, or on a ``train_size``
        sample drawn with ``seed``; k-means is seeded with ``seed`` too, so builds are repeatable.
        IVF ``nprobe`` defaults to ``round(sqrt(nlist))`` (FAISS's own default, 1, has poor recall).
        An ``IVF{nlist}`` with more lists than training vectors is shrunk (with a warning);
        ``factory`` is then the one used, ``requested_factory`` the one asked for and
        ``factory_note`` says why. Bad arguments raise :class:`UsageError`.
        """
        model_info = dict(model_info or {})
        if metric not in _METRICS:
            raise UsageError(f"metric: expected one of {sorted(_METRICS)}, got {metric!r}")
        x = _as_matrix(embeddings, "gallery embeddings")
        n, d = x.shape
        if n == 0 or d == 0:
            raise DataError(
                f"gallery embeddings: shape: expected at least one row and column, got {x.shape}"
            )
        dim = model_info.get("embed_dim")
        if dim is not None and int(dim) != d:
            raise DataError(
                f"gallery embeddings: dim: expected model_info embed_dim {dim}, got {d}"
            )
        items = _check_items(items, n, "gallery")
        _warn_if_not_normalised(x, metric, "gallery embeddings")

        n_train = n if train_size is None else max(1, min(int(train_size), n))
        check_factory(factory, d, metric)
        requested = factory
        factory, note = _fit_nlist(factory, n_train)
        try:
            index = faiss.index_factory(d, factory, _METRICS[metric])
        except RuntimeError as exc:
            raise UsageError(
                f"factory: could not build FAISS index {factory!r} for {d}-dim vectors: {_short(exc)}"
            ) from None
        if not index.is_trained:
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.cp.seed = int(seed)
            sample = x
            if n_train < n:
                rows = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
                sample = x[rows]
            try:
                index.train(sample)
            except RuntimeError as exc:
                raise DataError(
                    f"gallery embeddings: training {factory!r} on {len(sample)} vectors failed: {_short(exc)}"
                ) from None
        gallery = cls(index, [], model_info, factory, metric, requested_factory=requested,
                      factory_note=note)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            gallery.nprobe = nprobe if nprobe is not None else max(1, round(math.sqrt(ivf.nlist)))
        elif nprobe is not None:
            raise UsageError(f"nprobe: only IVF indexes have nprobe; this index is {factory!r}")
        gallery._add_rows(x, items, progress)
        return gallery

    def add(self, embeddings: Any, items: Sequence[dict], progress: bool = False) -> None:
        """Append rows to the index (exact, HNSW, or IVF after training); ids must be new."""
        self._check_writable("add")
        x = _as_matrix(embeddings, "added embeddings")
        if x.shape[1] != self.dim:
            raise DataError(
                f"added embeddings: dim: expected {self.dim} (index dim), got {x.shape[1]}"
            )
        if len(x) == 0:
            return
        if not self._index.is_trained:
            raise DataError(f"index {self.factory!r}: expected a trained index before add()")
        items = _check_items(items, len(x), "added", {_item_key(it) for it in self.items})
        _warn_if_not_normalised(x, self.metric, "added embeddings")
        self._add_rows(x, items, progress)
        self.updated = _now()

    def remove(self, ids: Sequence[str]) -> int:
        """Delete the rows whose ``id`` (or ``path``, for items without one) is in ``ids``.

        All or nothing: an id the index does not hold is a :class:`DataError` naming it, and so
        is removing every row (delete the folder instead). The rows left keep their order, and
        their vectors and codes are kept as they are (no re-encoding): exact, IVF (any codes)
        and PQ/SQ indexes remove in place; HNSW and other graph indexes are rebuilt from their
        stored vectors. Returns the number of rows removed.
        """
        self._check_writable("remove")
        wanted = [str(i) for i in ids]
        if not wanted:
            return 0
        rows_of = {_item_key(item): row for row, item in enumerate(self.items)}
        missing = [i for i in dict.fromkeys(wanted) if i not in rows_of]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DataError(f"remove: ids: expected ids the index holds, got {len(missing)} it does not: {shown}")
        drop = np.array(sorted({rows_of[i] for i in wanted}), dtype=np.int64)
        if len(drop) == len(self):
            raise DataError(
                f"remove: ids: removing all {len(self)} rows would leave an empty index; delete the folder instead"
            )
        keep = np.ones(len(self), dtype=bool)
        keep[drop] = False
        self._index = _remove_rows(self._index, drop, keep, self.factory)
        if self._index.ntotal != int(keep.sum()):  # pragma: no cover - a FAISS index that lost count
            raise DataError(f"remove: expected {int(keep.sum())} rows left, the index has {self._index.ntotal}")
        self.items = [item for item, k in zip(self.items, keep.tolist()) if k]
        self.updated = _now()
        return int(len(drop))

    def _check_writable(self, what: str) -> None:
        if self.mapped:  # FAISS aborts the process when a memory-mapped flat index grows
            raise UsageError(f"{what}: this index was loaded memory-mapped (read-only); "
                             "load it with GalleryIndex.load(..., mmap=False) to change it")

    def _add_rows(self, x: np.ndarray, items: list[dict], progress: bool) -> None:
        from tqdm.auto import tqdm

        if not isinstance(self.items, list):  # lazily read items (sbirkit.index.items): now a list
            self.items = list(self.items)

        with tqdm(
            total=len(x), desc=f"indexing ({self.factory})", unit="vec", disable=not progress
        ) as bar:
            for start in range(0, len(x), _ADD_CHUNK):
                chunk = x[start : start + _ADD_CHUNK]
                self._index.add(chunk)
                bar.update(len(chunk))
        self.items.extend(items)

    # ---- properties ------------------------------------------------------------------------
    @property
    def index(self) -> faiss.Index:
        """The underlying FAISS index (for tuning beyond ``nprobe``)."""
        return self._index

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_ivf(self) -> bool:
        return faiss.try_extract_index_ivf(self._index) is not None

    @property
    def nprobe(self) -> int | None:
        """Inverted lists scanned per query (IVF only; None otherwise). Saved with the index."""
        ivf = faiss.try_extract_index_ivf(self._index)
        return int(ivf.nprobe) if ivf is not None else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is None:
            raise UsageError(
                f"nprobe: only IVF indexes have nprobe; this index is {self.factory!r}"
            )
        if int(value) < 1:
            raise UsageError(f"nprobe: expected a positive integer, got {value}")
        ivf.nprobe = int(value)

    # ---- search ------------------------------------------------------------------------------
    def search(
        self, queries: Any, k: int = 10, nprobe: int | None = None, rows: RowFilter | None = None
    ) -> SearchResult:
        """Top-``k`` gallery rows for each query (Q, d); ``k`` larger than the gallery returns all.

        ``nprobe`` overrides the index's value for this call only (IVF; thread-safe, no mutation).
        ``rows`` (a :class:`RowFilter`, e.g. the rows of one class) restricts the search to
        those rows; fewer than ``k`` results come back when fewer rows are allowed.
        """
        q = _as_matrix(queries, "query embeddings")
        if q.shape[1] != self.dim:
            raise DataError(
                f"query embeddings: dim: query dim {q.shape[1]} differs from index dim {self.dim} "
                f"(index built with model {_model_label(self.model_info)})"
            )
        if k < 1:
            raise UsageError(f"k: expected a positive integer, got {k}")
        k = min(int(k), len(self))
        if k == 0 or len(q) == 0:
            empty = np.zeros((len(q), 0))
            return SearchResult(
                empty.astype(np.float32), empty.astype(np.int64), self.items, self.metric
            )
        if nprobe is not None:
            if not self.is_ivf:
                raise UsageError(
                    f"nprobe: only IVF indexes have nprobe; this index is {self.factory!r}"
                )
            if int(nprobe) < 1:
                raise UsageError(f"nprobe: expected a positive integer, got {nprobe}")
        if rows is not None:
            if rows.n != len(self):
                raise UsageError(f"rows: expected a RowFilter over {len(self)} rows, got one over {rows.n}")
            k = min(k, rows.count)
            if k == 0:
                empty = np.zeros((len(q), 0))
                return SearchResult(empty.astype(np.float32), empty.astype(np.int64), self.items, self.metric)
        params = self._search_params(nprobe, rows)
        try:
            scores, indices = self._index.search(q, k, params=params)
        except RuntimeError:
            if rows is None:
                raise
            # an index type that takes no search parameters (IndexPQ, LSH ...): widen and filter
            scores, indices = self._search_widening(q, k, rows, nprobe)
        return SearchResult(scores, indices.astype(np.int64, copy=False), self.items, self.metric)

    def _search_widening(self, q: np.ndarray, k: int, rows: RowFilter, nprobe: int | None):
        """Filtered top-``k`` for indexes whose search takes no selector: search 4k, 16k ... rows
        deep until ``k`` allowed rows are found (or the whole index was searched)."""
        allowed = np.unpackbits(rows._bitmap, bitorder="little")[: rows.n].astype(bool)
        params = self._search_params(nprobe, None)
        depth = min(len(self), 4 * k)
        while True:
            scores, indices = self._index.search(q, depth, params=params)
            ok = (indices >= 0) & allowed[np.clip(indices, 0, None)]
            if depth >= len(self) or (ok.sum(axis=1) >= k).all():
                break
            depth = min(len(self), depth * 4)
        out_s = np.full((len(q), k), np.nan, dtype=np.float32)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        for r in range(len(q)):
            cols = np.flatnonzero(ok[r])[:k]
            out_s[r, : len(cols)] = scores[r, cols]
            out_i[r, : len(cols)] = indices[r, cols]
        return out_s, out_i

    def _search_params(self, nprobe: int | None, rows: RowFilter | None):
        """FAISS search parameters for an ``nprobe`` override and a row filter (None: defaults)."""
        if nprobe is None and rows is None:
            return None
        sel = rows.selector if rows is not None else None
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            params = faiss.SearchParametersIVF(nprobe=int(nprobe if nprobe is not None else ivf.nprobe))
            if sel is not None:
                params.sel = sel
        else:
            inner = self._index.index if isinstance(self._index, faiss.IndexPreTransform) else self._index
            hnsw = getattr(faiss.downcast_index(inner), "hnsw", None)
            params = faiss.SearchParametersHNSW(efSearch=int(hnsw.efSearch)) if hnsw is not None \
                else faiss.SearchParameters()
            params.sel = sel
        if isinstance(self._index, faiss.IndexPreTransform):
            params = faiss.SearchParametersPreTransform(index_params=params)
        return params

    # ---- persistence ---------------------------------------------------------------------------
    def meta(self) -> dict:
        """What ``meta.json`` holds (without the checksums, which :meth:`save` adds)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_info": self.model_info,
            "factory": self.factory,
            "factory_requested": self.requested_factory,
            "factory_note": self.factory_note,
            "metric": self.metric,
            "ntotal": len(self),
            "dim": self.dim,
            "nprobe": self.nprobe,
            "sbirkit_version": __version__,
            "faiss_version": faiss.__version__,
            "created": self.created,
            "updated": self.updated,
            "build": self.build_info,
        }

    @staticmethod
    def check_target(directory: str | os.PathLike) -> Path:
        """Raise :class:`DataError` unless :meth:`save` may write an index to ``directory``.

        It may when the folder is new, or holds only what an index folder holds (this layout or
        the old flat one). Cheap: callers check before embedding a whole collection.
        """
        target = Path(directory)
        if target.exists():
            if not target.is_dir():
                raise DataError(f"{target}: expected a folder for the index, found a file")
            extra = sorted(p.name for p in target.iterdir() if not _is_index_entry(p.name))
            if extra:
                raise DataError(
                    f"{target}: refusing to overwrite a folder holding files other than an index: {extra[:5]}"
                )
        parent = target
        while not parent.exists():  # the nearest folder that exists must be writable
            parent = parent.parent
        if not parent.is_dir():
            raise DataError(f"{target}: expected a folder path, but {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise DataError(f"{target}: expected a writable location, {parent} is not writable")
        return target

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index as a new version of folder ``directory`` and make it the live one.

        Readers see either the previous version or this one, never a mix (see the module
        docstring for the layout). A crash mid-save leaves the previous index live; a folder
        holding anything but an index's own files is refused. Returns ``directory``.
        """
        target = self.check_target(directory)
        target.mkdir(parents=True, exist_ok=True)
        with _writer_lock(target):
            self._save_locked(target)
        return target

    @classmethod
    def update(
        cls,
        directory: str | os.PathLike,
        change: Callable[[GalleryIndex], Any],
        expect_model: dict | str | None = None,
    ) -> tuple[GalleryIndex, Any]:
        """Load the live index of ``directory``, apply ``change(index)`` and save it as a new
        version, holding the writer lock throughout, so two updates never lose each other's rows.

        Atomic like :meth:`save`: if ``change`` or the save fails, the old version stays live
        and nothing is written. Returns the changed index and what ``change`` returned.
        """
        target = Path(directory)
        if not (target / POINTER_FILE).is_file() and not (target / META_FILE).is_file():
            raise DataError(f"{target}: expected a gallery index folder (from 'sbirkit index build')")
        cls.check_target(target)
        with _writer_lock(target):
            index = cls.load(target, expect_model=expect_model, mmap=False)
            result = change(index)
            index._save_locked(target)
        return index, result

    def _save_locked(self, target: Path) -> None:
        """:meth:`save`'s work, with the writer lock of ``target`` already held."""
        self._check_writable("save")
        _remove_orphans(target)
        tag = uuid.uuid4().hex[:12]
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        tmp = target / f".tmp-{tag}"
        version = target / f"v-{stamp}-{tag}"
        pointer_tmp = target / f".{POINTER_FILE}.tmp-{tag}"
        swapped = False
        tmp.mkdir()
        try:
            faiss.write_index(self._index, str(tmp / INDEX_FILE))
            items_sha = _write_items(tmp / ITEMS_FILE, self.items)  # streamed: no copy of them all
            meta = dict(self.meta())
            meta["checksums"] = {
                "algorithm": "sha256",
                INDEX_FILE: _sha256_file(tmp / INDEX_FILE),
                ITEMS_FILE: items_sha,
                "labels": _labels_sha256(self.items),
                # for memory-mapped loads, which check sizes and this instead of the whole file
                f"{INDEX_FILE}:quick": _quick_sha256(tmp / INDEX_FILE),
                "bytes": {name: (tmp / name).stat().st_size for name in (INDEX_FILE, ITEMS_FILE)},
            }
            (tmp / META_FILE).write_text(
                json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8"
            )
            for name in _FILES:
                _fsync(tmp / name)
            _fsync(tmp)
            os.rename(tmp, version)
            _fsync(target)
            with open(pointer_tmp, "w", encoding="utf-8") as f:
                f.write(version.name + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(pointer_tmp, target / POINTER_FILE)  # the atomic switch
            swapped = True
            _fsync(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if not swapped:
                shutil.rmtree(version, ignore_errors=True)
                with _ignore_missing():
                    pointer_tmp.unlink()
            raise
        # readers that already opened an older version's files keep reading them (POSIX)
        for entry in target.iterdir():
            if entry.name != version.name and _VERSION_NAME.fullmatch(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
        for name in _FILES:  # an old flat (format_version 1) index converted by this save
            with _ignore_missing():
                (target / name).unlink()

    @classmethod
    def read_meta(cls, directory: str | os.PathLike) -> dict:
        """``meta.json`` of the live version of an index folder, plus ``path``, ``version`` (the
        version folder's name; None for the old flat layout) and ``files`` (their bytes on disk).

        Reads no vectors: this is what ``sbirkit index info`` prints.
        """
        root = Path(directory)
        for _ in range(_LOAD_TRIES):
            try:
                with _open_version(root, _FILES) as (version, handles):
                    meta = _parse_meta(handles[META_FILE].read(), version / META_FILE)
                    sizes = {name: os.fstat(f.fileno()).st_size for name, f in handles.items()}
            except _VersionGone:
                continue
            return {
                **meta,
                "path": str(root),
                "version": version.name if version != root else None,
                "files": sizes,
            }
        raise DataError(f"{root}: the index kept changing while being read ({_LOAD_TRIES} tries)")

    @classmethod
    def load(
        cls, directory: str | os.PathLike, expect_model: dict | str | None = None,
        mmap: bool | None = None, verify: bool = False,
    ) -> GalleryIndex:
        """Read the live version of an index folder written by :meth:`save`, checking it.

        ``meta.json``, ``index.faiss`` and ``items.jsonl`` must agree with each other (dim,
        ntotal, metric, row count) and with the SHA-256 checksums ``meta.json`` holds; any
        disagreement is a one-line :class:`DataError` naming the file. ``expect_model`` (a
        model_info dict or a fingerprint string) must match the model the index was built with;
        otherwise :class:`ModelMismatchError` names both. Safe while another process saves.

        ``mmap=True`` memory-maps the index instead of reading it (IVF lists, flat codes: see
        :mod:`sbirkit.index.ondisk`), and reads items lazily; ``None`` (the default) does so when
        the build asked for it (``index build --max-memory`` / ``--from-embeddings``). A mapped
        load checks the index file's size and a checksum of its two ends, not its whole SHA-256,
        unless ``verify=True``; the result is read-only (``add``/``remove``/``save`` refuse it).
        """
        root = Path(directory)
        for _ in range(_LOAD_TRIES):
            try:
                with _open_version(root, _FILES) as (version, handles):
                    return cls._read(root, version, handles, expect_model, mmap, verify)
            except _VersionGone:
                continue
        raise DataError(f"{root}: the index kept changing while being read ({_LOAD_TRIES} tries)")

    @classmethod
    def _read(cls, root: Path, version: Path, handles: dict, expect_model, mmap: bool | None = False,
              verify: bool = False) -> GalleryIndex:
        meta_path = version / META_FILE
        meta = _parse_meta(handles[META_FILE].read(), meta_path)
        checksums = meta.get("checksums")
        if int(meta["format_version"]) >= 2:
            if not isinstance(checksums, dict) or not all(
                isinstance(checksums.get(k), str) for k in (INDEX_FILE, ITEMS_FILE, "labels")
            ):
                raise DataError(
                    f"{meta_path}: checksums: expected sha256 values for {INDEX_FILE}, "
                    f"{ITEMS_FILE} and labels (format_version {meta['format_version']})"
                )
        else:
            checksums = None  # format_version 1 folders carry none
        if expect_model is not None:
            check_model(meta["model_info"], expect_model, where=str(root))

        index_path = version / INDEX_FILE
        f = handles[INDEX_FILE]
        mapped = bool((meta.get("build") or {}).get("mmap")) if mmap is None else bool(mmap)
        if mapped:
            from .ondisk import read_index_mapped

            index = read_index_mapped(index_path, f, meta, checksums, verify)
            index_digest = None  # read_index_mapped checked what it could
        else:
            index_digest = _sha256_stream(f) if checksums else None
            f.seek(0)
            try:
                index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
            except RuntimeError as exc:
                raise DataError(
                    f"{index_path}: expected a FAISS index, could not read it ({_short(exc)})"
                ) from None
        if index.d != meta["dim"]:
            raise DataError(
                f"{index_path}: dim: expected {meta['dim']} (meta.json), index has {index.d}"
            )
        if index.ntotal != meta["ntotal"]:
            raise DataError(
                f"{index_path}: ntotal: expected {meta['ntotal']} (meta.json), index has {index.ntotal}"
            )
        if index.metric_type != _METRICS[meta["metric"]]:
            raise DataError(
                f"{index_path}: metric: expected {meta['metric']!r} (meta.json), index differs"
            )

        items_path = version / ITEMS_FILE
        if mapped:
            from .items import JsonlItems

            raw = None  # checked against its sha256 as it is opened; parsed row by row when used
            items = JsonlItems(handles[ITEMS_FILE], sha256=checksums[ITEMS_FILE] if checksums else None,
                               where=str(items_path))
        else:
            raw = handles[ITEMS_FILE].read()
            items = _parse_items(raw, items_path)
        if len(items) != index.ntotal:
            raise DataError(
                f"{items_path}: rows: expected {index.ntotal} items (one per indexed vector), got {len(items)}"
            )
        if checksums:
            changed = "it was changed after the index was built, or belongs to another build"
            if index_digest is not None and index_digest != checksums[INDEX_FILE]:
                raise DataError(
                    f"{index_path}: sha256: expected {checksums[INDEX_FILE][:16]}... (meta.json), "
                    f"got {index_digest[:16]}...; {changed}"
                )
            digest = hashlib.sha256(raw).hexdigest() if raw is not None else checksums[ITEMS_FILE]
            if digest != checksums[ITEMS_FILE]:
                raise DataError(
                    f"{items_path}: sha256: expected {checksums[ITEMS_FILE][:16]}... (meta.json), "
                    f"got {digest[:16]}...; {changed}"
                )
            if raw is not None and _labels_sha256(items) != checksums["labels"]:  # mapped: in the sha256
                raise DataError(
                    f"{items_path}: labels: their sha256 differs from meta.json's; {changed}"
                )
        return cls(
            index,
            items,
            meta["model_info"],
            meta["factory"],
            meta["metric"],
            meta.get("created"),
            requested_factory=meta.get("factory_requested"),
            factory_note=meta.get("factory_note"),
            updated=meta.get("updated"),
            build_info=meta.get("build"),
        )._mark_mapped(mapped)

    def _mark_mapped(self, mapped: bool) -> GalleryIndex:
        self.mapped = bool(mapped)
        return self

    def __repr__(self) -> str:
        return (
            f"GalleryIndex(factory={self.factory!r}, metric={self.metric!r}, n={len(self)}, dim={self.dim}, "
            f"model={_model_label(self.model_info)!r})"
        )


def check_model(index_model: dict, expect: dict | str, where: str = "index") -> None:
    """Raise :class:`ModelMismatchError` unless ``expect`` is the model the index was built with.

    Fingerprints decide when both sides have one; otherwise ``embed_dim`` and ``backbone`` must agree.
    """
    exp = {"fingerprint": expect} if isinstance(expect, str) else dict(expect)
    have = index_model or {}
    if exp.get("fingerprint") is not None:
        if have.get("fingerprint") is None:
            raise ModelMismatchError(
                f"{where}: model_info.fingerprint: index built with model {_model_label(have)} "
                f"(no fingerprint), query model {_model_label(exp)}"
            )
        if str(have["fingerprint"]) != str(exp["fingerprint"]):
            raise ModelMismatchError(
                f"{where}: model_info.fingerprint: index built with model {have['fingerprint']}, "
                f"query model {exp['fingerprint']}"
            )
        return
    for key in ("embed_dim", "backbone"):
        if key in exp and key in have and str(exp[key]) != str(have[key]):
            raise ModelMismatchError(
                f"{where}: model_info.{key}: index built with model {_model_label(have)} ({key}={have[key]}), "
                f"query model {_model_label(exp)} ({key}={exp[key]})"
            )


# ---- folder layout helpers ----------------------------------------------------------------------
class _VersionGone(Exception):
    """The version a reader found in CURRENT was replaced and deleted before it opened its files."""


def _is_index_entry(name: str) -> bool:
    """Whether a name in an index folder belongs to the index (either layout) or its saves."""
    return (
        name in (POINTER_FILE, LOCK_FILE, *_FILES)
        or _VERSION_NAME.fullmatch(name) is not None
        or name.startswith((".tmp-", f".{POINTER_FILE}.tmp-"))
    )


def _read_pointer(root: Path) -> str | None:
    """The version folder name in ``root/CURRENT``; None when there is no pointer (flat layout)."""
    try:
        raw = (root / POINTER_FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"{root / POINTER_FILE}: could not read it ({exc.strerror})") from None
    name = raw.decode("utf-8", errors="replace").strip()
    if not _VERSION_NAME.fullmatch(name):
        raise DataError(
            f"{root / POINTER_FILE}: expected the name of a version folder (v-<time>-<id>), got {name[:60]!r}"
        )
    return name


@contextmanager
def _open_version(root: Path, names: Sequence[str]):
    """Open ``names`` of the live version of ``root`` together: yields (version folder, handles).

    Raises :class:`_VersionGone` when a concurrent save replaced the version in between, and
    a one-line :class:`DataError` when a file is really missing.
    """
    if not root.is_dir():
        what = "a file" if root.exists() else "nothing"
        raise DataError(f"{root}: expected a gallery index folder, found {what} there")
    pointer = _read_pointer(root)
    version = root / pointer if pointer is not None else root
    with ExitStack() as stack:
        handles = {}
        for name in names:
            try:
                handles[name] = stack.enter_context(open(version / name, "rb"))
            except FileNotFoundError:
                if _read_pointer(root) != pointer:
                    raise _VersionGone() from None
                if pointer is not None and not version.is_dir():
                    raise DataError(
                        f"{version}: expected the index version that {POINTER_FILE} names, it is missing"
                    ) from None
                raise DataError(
                    f"{version / name}: expected the index's {name} file, it is missing"
                ) from None
            except OSError as exc:
                raise DataError(f"{version / name}: could not open it ({exc.strerror})") from None
        yield version, handles


def _parse_meta(raw: bytes, path: Path) -> dict:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: expected UTF-8 JSON, byte {raw[exc.start]:#04x} at offset {exc.start} is not UTF-8"
        ) from None
    except ValueError as exc:
        raise DataError(f"{path}: expected JSON, could not parse it ({_short(exc)})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for field in ("format", "factory", "metric", "ntotal", "dim", "model_info"):
        if field not in meta:
            raise DataError(f"{path}: {field}: expected this field, it is missing")
    if meta["format"] != FORMAT:
        raise DataError(f"{path}: format: expected {FORMAT!r}, got {meta['format']!r}")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{path}: format_version: expected a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version: expected at most {FORMAT_VERSION} (sbirkit {__version__}), "
            f"got {version}; read it with a newer sbirkit"
        )
    meta["format_version"] = version
    if meta["metric"] not in _METRICS:
        raise DataError(
            f"{path}: metric: expected one of {sorted(_METRICS)}, got {meta['metric']!r}"
        )
    for field in ("ntotal", "dim"):
        if not isinstance(meta[field], int) or isinstance(meta[field], bool) or meta[field] < 0:
            raise DataError(f"{path}: {field}: expected a non-negative integer, got {meta[field]!r}")
    if not isinstance(meta["model_info"], dict):
        raise DataError(
            f"{path}: model_info: expected an object, got {type(meta['model_info']).__name__}"
        )
    return meta


def _parse_items(raw: bytes, path: Path) -> list[dict]:
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


def _labels_sha256(items: Sequence[dict]) -> str:
    """SHA-256 of the label column: each row's ``class_name`` (else ``label``, else null), in order.

    Streamed, byte for byte what ``json.dumps`` of the whole list gives, without that list.
    """
    h = hashlib.sha256(b"[")
    for i, item in enumerate(items):
        label = json.dumps(item.get("class_name", item.get("label")), default=str)
        h.update(((", " if i else "") + label).encode("utf-8"))
    h.update(b"]")
    return h.hexdigest()


def _write_items(path: Path, items: Sequence[dict]) -> str:
    """Write ``items.jsonl`` (one JSON object per line) and return its SHA-256. Lazily read items
    (:mod:`sbirkit.index.items`) hand over their lines as they are, unparsed."""
    h = hashlib.sha256()
    raw = getattr(items, "raw_lines", None)
    lines = raw() if raw is not None else (
        (json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8") for item in items)
    with open(path, "wb") as f:
        for line in lines:
            h.update(line)
            f.write(line)
    return h.hexdigest()


#: bytes at each end of index.faiss that the quick checksum covers
QUICK_BYTES = 4 << 20


def _quick_sha256(path: Path) -> str:
    """SHA-256 of the file's size and its first and last :data:`QUICK_BYTES` (see ``load(mmap=True)``)."""
    with open(path, "rb") as f:
        return _quick_sha256_stream(f)


def _quick_sha256_stream(f) -> str:
    size = os.fstat(f.fileno()).st_size
    h = hashlib.sha256(str(size).encode())
    f.seek(0)
    h.update(f.read(QUICK_BYTES))
    if size > QUICK_BYTES:
        f.seek(max(QUICK_BYTES, size - QUICK_BYTES))
        h.update(f.read(QUICK_BYTES))
    f.seek(0)
    return h.hexdigest()


def _sha256_stream(f) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_stream(f)


@contextmanager
def _ignore_missing():
    try:
        yield
    except FileNotFoundError:
        pass


@contextmanager
def _writer_lock(target: Path):
    """Hold an exclusive lock on ``target/.lock`` (POSIX ``flock``; none where unavailable).

    One save at a time writes into an index folder; the OS drops the lock if the writer dies,
    so a killed save never leaves the folder locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, saves are still atomic for readers
        yield
        return
    with open(target / LOCK_FILE, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _remove_orphans(target: Path) -> None:
    """Delete what killed saves left in ``target`` (called with the writer lock held, so any
    ``.tmp-*`` entry there belongs to a save that is no longer running)."""
    try:
        pointer = _read_pointer(target)
    except DataError:  # a damaged pointer: this save replaces it; keep every version until then
        pointer = None
    for entry in target.iterdir():
        if entry.name.startswith((".tmp-", f".{POINTER_FILE}.tmp-")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with _ignore_missing():
                    entry.unlink()
        elif _VERSION_NAME.fullmatch(entry.name) and pointer is not None and entry.name != pointer:
            shutil.rmtree(entry, ignore_errors=True)  # renamed into place, never made live


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk (best effort where the OS cannot open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_rows(index: faiss.Index, drop: np.ndarray, keep: np.ndarray, factory: str) -> faiss.Index:
    """``index`` without rows ``drop``, the rows left numbered 0..n-1 in their old order."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        if ivf.direct_map.type != faiss.DirectMap.NoMap:  # rebuilt below, after renumbering
            ivf.set_direct_map_type(faiss.DirectMap.NoMap)
        index.remove_ids(faiss.IDSelectorBatch(len(drop), faiss.swig_ptr(drop)))
        _renumber_ivf(ivf, keep)
        return index
    try:  # flat codes (exact, PQ, SQ, LSH): FAISS compacts and renumbers the rows itself
        index.remove_ids(faiss.IDSelectorBatch(len(drop), faiss.swig_ptr(drop)))
        return index
    except RuntimeError:  # graph indexes (HNSW ...) cannot remove: rebuild from the stored vectors
        pass
    try:
        vectors = index.reconstruct_n(0, index.ntotal)
    except RuntimeError as exc:
        raise UsageError(
            f"remove: index {factory!r} can neither remove rows nor give back its vectors ({_short(exc)}); "
            "rebuild it with 'sbirkit index build' instead"
        ) from None
    fresh = faiss.clone_index(index)
    fresh.reset()
    fresh.add(np.ascontiguousarray(vectors[keep], dtype=np.float32))
    return fresh


def _renumber_ivf(ivf: faiss.IndexIVF, keep: np.ndarray) -> None:
    """After ``remove_ids``, IVF lists still hold the old row numbers: map each to its rank among
    the rows kept, so row ``i`` is again item ``i``. Codes are left untouched."""
    new_id = np.cumsum(keep, dtype=np.int64) - 1  # old row -> new row (for kept rows)
    invlists = ivf.invlists
    for list_no in range(ivf.nlist):
        n = invlists.list_size(list_no)
        if n == 0:
            continue
        ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), n).copy()
        codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), n * invlists.code_size).copy()
        if not keep[ids].all():  # pragma: no cover - remove_ids left a removed row behind
            raise DataError("remove: an IVF list still holds a removed row")
        fresh = np.ascontiguousarray(new_id[ids])
        invlists.update_entries(list_no, 0, n, faiss.swig_ptr(fresh), faiss.swig_ptr(codes))


def suggested_ivf_factory(n: int) -> str:
    """``IVF{~4·sqrt(n)},Flat``, the usual starting point for an approximate index of ``n`` vectors."""
    return f"IVF{max(1, round(4 * math.sqrt(n)))},Flat"
