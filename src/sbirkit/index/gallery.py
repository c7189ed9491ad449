"""``GalleryIndex``: a persistent FAISS index of gallery embeddings plus one item dict per row.

A gallery is embedded once with a trained model, saved as a folder and searched later with
sketch embeddings from the same model. Embeddings are L2-normalised float32, so the default
metric ``"ip"`` (inner product) is cosine.

The rooms around it: :mod:`.store` (the versioned folder: pointer, writer lock, layout),
:mod:`.checksums`, :mod:`.faiss_ops` (factories, IVF lists, row filters and removal),
:mod:`.items` (item dicts, eager and lazy) and :mod:`.ondisk` (memory-mapped loading).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .. import __version__
from ..errors import DataError, UsageError
from .checksums import labels_sha256, sha256_stream
from .faiss_ops import (  # noqa: F401  (RowFilter, suggested_ivf_factory: part of this module's API)
    METRICS,
    RowFilter,
    as_matrix,
    check_factory,
    fit_nlist,
    remove_rows,
    search_params,
    search_widening,
    short_error,
    suggested_ivf_factory,
)
from .items import JsonlItems, check_items, item_key, parse_items
from .ondisk import read_index_mapped
from .run_model import ModelMismatchError, check_model, model_label  # noqa: F401  (ModelMismatchError: API)
from .store import (
    FILES,
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    ITEMS_FILE,
    META_FILE,
    POINTER_FILE,
    check_target,
    parse_meta,
    read_live,
    write_version,
    writer_lock,
)

_ADD_CHUNK = 65536


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
        from .query import ranked_rows

        return [{**self.items[row], "rank": rank - 1, "score": score, "index": row}
                for rank, row, score in ranked_rows(self.scores[i], self.indices[i])]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _warn_if_not_normalised(x: np.ndarray, metric: str, what: str) -> None:
    if metric == "ip" and len(x):
        norms = np.linalg.norm(x, axis=1)
        if np.abs(norms - 1).max() > 1e-3:
            warnings.warn(
                f"{what}: rows are not L2-normalised (norms {norms.min():.3g}..{norms.max():.3g}); "
                "inner-product scores are then not cosine similarities",
                stacklevel=3,
            )


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
        if metric not in METRICS:
            raise UsageError(f"metric: expected one of {sorted(METRICS)}, got {metric!r}")
        x = as_matrix(embeddings, "gallery embeddings")
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
        items = check_items(items, n, "gallery")
        _warn_if_not_normalised(x, metric, "gallery embeddings")

        n_train = n if train_size is None else max(1, min(int(train_size), n))
        check_factory(factory, d, metric)
        requested = factory
        factory, note = fit_nlist(factory, n_train)
        try:
            index = faiss.index_factory(d, factory, METRICS[metric])
        except RuntimeError as exc:
            raise UsageError(
                f"factory: could not build FAISS index {factory!r} for {d}-dim vectors: {short_error(exc)}"
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
                    f"gallery embeddings: training {factory!r} on {len(sample)} vectors failed: {short_error(exc)}"
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
        x = as_matrix(embeddings, "added embeddings")
        if x.shape[1] != self.dim:
            raise DataError(
                f"added embeddings: dim: expected {self.dim} (index dim), got {x.shape[1]}"
            )
        if len(x) == 0:
            return
        if not self._index.is_trained:
            raise DataError(f"index {self.factory!r}: expected a trained index before add()")
        items = check_items(items, len(x), "added", {item_key(it) for it in self.items})
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
        rows_of = {item_key(item): row for row, item in enumerate(self.items)}
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
        self._index = remove_rows(self._index, drop, keep, self.factory)
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
        q = as_matrix(queries, "query embeddings")
        if q.shape[1] != self.dim:
            raise DataError(
                f"query embeddings: dim: query dim {q.shape[1]} differs from index dim {self.dim} "
                f"(index built with model {model_label(self.model_info)})"
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
        params = search_params(self._index, nprobe, rows)
        try:
            scores, indices = self._index.search(q, k, params=params)
        except RuntimeError:
            if rows is None:
                raise
            # an index type that takes no search parameters (IndexPQ, LSH ...): widen and filter
            scores, indices = search_widening(self._index, q, k, rows, nprobe)
        return SearchResult(scores, indices.astype(np.int64, copy=False), self.items, self.metric)

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
        """Raise :class:`DataError` unless :meth:`save` may write an index to ``directory``
        (:func:`.store.check_target`). Cheap: callers check before embedding a whole collection."""
        return check_target(directory)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index as a new version of folder ``directory`` and make it the live one.

        Readers see either the previous version or this one, never a mix (see the module
        docstring for the layout). A crash mid-save leaves the previous index live; a folder
        holding anything but an index's own files is refused. Returns ``directory``.
        """
        target = self.check_target(directory)
        target.mkdir(parents=True, exist_ok=True)
        with writer_lock(target):
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
        with writer_lock(target):
            index = cls.load(target, expect_model=expect_model, mmap=False)
            result = change(index)
            index._save_locked(target)
        return index, result

    def _save_locked(self, target: Path) -> None:
        """:meth:`save`'s work, with the writer lock of ``target`` already held."""
        self._check_writable("save")
        write_version(target, self._index, self.items, self.meta())

    @classmethod
    def read_meta(cls, directory: str | os.PathLike) -> dict:
        """``meta.json`` of the live version of an index folder, plus ``path``, ``version`` (the
        version folder's name; None for the old flat layout) and ``files`` (their bytes on disk).

        Reads no vectors: this is what ``sbirkit index info`` prints.
        """
        root = Path(directory)

        def read(version: Path, handles: dict) -> dict:
            meta = parse_meta(handles[META_FILE].read(), version / META_FILE)
            sizes = {name: os.fstat(f.fileno()).st_size for name, f in handles.items()}
            return {**meta, "path": str(root), "version": version.name if version != root else None, "files": sizes}

        return read_live(root, FILES, read)

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
        return read_live(root, FILES, lambda version, handles: cls._read(root, version, handles, expect_model,
                                                                         mmap, verify))

    @classmethod
    def _read(cls, root: Path, version: Path, handles: dict, expect_model, mmap: bool | None = False,
              verify: bool = False) -> GalleryIndex:
        meta_path = version / META_FILE
        meta = parse_meta(handles[META_FILE].read(), meta_path)
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
            index = read_index_mapped(index_path, f, meta, checksums, verify)
            index_digest = None  # read_index_mapped checked what it could
        else:
            index_digest = sha256_stream(f) if checksums else None
            f.seek(0)
            try:
                index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
            except RuntimeError as exc:
                raise DataError(
                    f"{index_path}: expected a FAISS index, could not read it ({short_error(exc)})"
                ) from None
        if index.d != meta["dim"]:
            raise DataError(
                f"{index_path}: dim: expected {meta['dim']} (meta.json), index has {index.d}"
            )
        if index.ntotal != meta["ntotal"]:
            raise DataError(
                f"{index_path}: ntotal: expected {meta['ntotal']} (meta.json), index has {index.ntotal}"
            )
        if index.metric_type != METRICS[meta["metric"]]:
            raise DataError(
                f"{index_path}: metric: expected {meta['metric']!r} (meta.json), index differs"
            )

        items_path = version / ITEMS_FILE
        if mapped:
            raw = None  # checked against its sha256 as it is opened; parsed row by row when used
            items = JsonlItems(handles[ITEMS_FILE], sha256=checksums[ITEMS_FILE] if checksums else None,
                               where=str(items_path))
        else:
            raw = handles[ITEMS_FILE].read()
            items = parse_items(raw, items_path)
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
            if raw is not None and labels_sha256(items) != checksums["labels"]:  # mapped: in the sha256
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
            f"model={model_label(self.model_info)!r})"
        )
