"""``GalleryIndex``: a persistent FAISS index of gallery embeddings plus one item dict per row.

A gallery is embedded once with a trained model, saved as a folder (``index.faiss``,
``items.jsonl``, ``meta.json``) and searched later with sketch embeddings from the same model.
Embeddings are L2-normalised float32, so the default metric ``"ip"`` (inner product) is cosine.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .. import __version__
from ..errors import DataError

INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.jsonl"
META_FILE = "meta.json"
FORMAT = "sbirkit-gallery-index"
FORMAT_VERSION = 1
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


def _fit_nlist(factory: str, n_train: int) -> str:
    """Shrink ``IVF{nlist}`` when the training set has fewer points than lists (FAISS cannot train)."""
    m = re.search(r"IVF(\d+)", factory)
    if not m or int(m.group(1)) <= n_train:
        return factory
    nlist = int(m.group(1))
    new = max(1, n_train // 39)  # FAISS's guidance: at least 39 training points per centroid
    fixed = factory[: m.start(1)] + str(new) + factory[m.end(1) :]
    warnings.warn(
        f"factory {factory!r}: nlist {nlist} > {n_train} training vectors; using {fixed!r}",
        stacklevel=3,
    )
    return fixed


def _short(exc: BaseException) -> str:
    """The last line of a (often multi-line) FAISS error: the part that says what went wrong."""
    text = str(exc).strip().splitlines()
    return text[-1].strip() if text else type(exc).__name__


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
    ):
        self._index = index
        self.items = items
        self.model_info = dict(model_info)
        self.factory = factory
        self.metric = metric
        self.created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")

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
        """
        model_info = dict(model_info or {})
        if metric not in _METRICS:
            raise ValueError(f"metric: expected one of {sorted(_METRICS)}, got {metric!r}")
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
        factory = _fit_nlist(factory, n_train)
        try:
            index = faiss.index_factory(d, factory, _METRICS[metric])
        except RuntimeError as exc:
            raise ValueError(
                f"factory: could not build FAISS index {factory!r}: {_short(exc)}"
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
        gallery = cls(index, [], model_info, factory, metric)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            gallery.nprobe = nprobe if nprobe is not None else max(1, round(math.sqrt(ivf.nlist)))
        elif nprobe is not None:
            raise ValueError(f"nprobe: only IVF indexes have nprobe; this index is {factory!r}")
        gallery._add_rows(x, items, progress)
        return gallery

    def add(self, embeddings: Any, items: Sequence[dict], progress: bool = False) -> None:
        """Append rows to the index (exact, HNSW, or IVF after training); ids must be new."""
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

    def _add_rows(self, x: np.ndarray, items: list[dict], progress: bool) -> None:
        from tqdm.auto import tqdm

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
            raise ValueError(
                f"nprobe: only IVF indexes have nprobe; this index is {self.factory!r}"
            )
        if int(value) < 1:
            raise ValueError(f"nprobe: expected a positive integer, got {value}")
        ivf.nprobe = int(value)

    # ---- search ------------------------------------------------------------------------------
    def search(self, queries: Any, k: int = 10, nprobe: int | None = None) -> SearchResult:
        """Top-``k`` gallery rows for each query (Q, d); ``k`` larger than the gallery returns all.

        ``nprobe`` overrides the index's value for this call only (IVF; thread-safe, no mutation).
        """
        q = _as_matrix(queries, "query embeddings")
        if q.shape[1] != self.dim:
            raise DataError(
                f"query embeddings: dim: query dim {q.shape[1]} differs from index dim {self.dim} "
                f"(index built with model {_model_label(self.model_info)})"
            )
        if k < 1:
            raise ValueError(f"k: expected a positive integer, got {k}")
        k = min(int(k), len(self))
        if k == 0 or len(q) == 0:
            empty = np.zeros((len(q), 0))
            return SearchResult(
                empty.astype(np.float32), empty.astype(np.int64), self.items, self.metric
            )
        params = None
        if nprobe is not None:
            if not self.is_ivf:
                raise ValueError(
                    f"nprobe: only IVF indexes have nprobe; this index is {self.factory!r}"
                )
            if int(nprobe) < 1:
                raise ValueError(f"nprobe: expected a positive integer, got {nprobe}")
            params = faiss.SearchParametersIVF(nprobe=int(nprobe))
            if isinstance(self._index, faiss.IndexPreTransform):
                params = faiss.SearchParametersPreTransform(index_params=params)
        scores, indices = self._index.search(q, k, params=params)
        return SearchResult(scores, indices.astype(np.int64, copy=False), self.items, self.metric)

    # ---- persistence ---------------------------------------------------------------------------
    def meta(self) -> dict:
        """What ``meta.json`` holds: the model, the index recipe and its size, versions, time."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_info": self.model_info,
            "factory": self.factory,
            "metric": self.metric,
            "ntotal": len(self),
            "dim": self.dim,
            "nprobe": self.nprobe,
            "sbirkit_version": __version__,
            "faiss_version": faiss.__version__,
            "created": self.created,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index folder atomically: files go to a temporary sibling folder, then renamed.

        A crash mid-save leaves the previous index (if any) in place. An existing folder is only
        replaced when it holds nothing but a gallery index's own files.
        """
        target = Path(directory)
        if target.exists():
            if not target.is_dir():
                raise DataError(f"{target}: expected a folder for the index, found a file")
            extra = sorted(
                p.name
                for p in target.iterdir()
                if p.name not in (INDEX_FILE, ITEMS_FILE, META_FILE)
            )
            if extra:
                raise DataError(
                    f"{target}: refusing to overwrite a folder holding files other than an index: {extra[:5]}"
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        tmp = target.parent / f".{target.name}.tmp-{tag}"
        old = target.parent / f".{target.name}.old-{tag}"
        tmp.mkdir()
        try:
            faiss.write_index(self._index, str(tmp / INDEX_FILE))
            with open(tmp / ITEMS_FILE, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in self.items)
            (tmp / META_FILE).write_text(
                json.dumps(self.meta(), indent=2, default=str) + "\n", encoding="utf-8"
            )
            for name in (INDEX_FILE, ITEMS_FILE, META_FILE):
                _fsync(tmp / name)
            _fsync(tmp)
            if target.exists():
                os.rename(target, old)
            os.rename(tmp, target)
            _fsync(target.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not target.exists():
                os.rename(old, target)  # put the previous index back
            raise
        shutil.rmtree(old, ignore_errors=True)
        return target

    @classmethod
    def load(
        cls, directory: str | os.PathLike, expect_model: dict | str | None = None
    ) -> GalleryIndex:
        """Read an index folder written by :meth:`save`, checking its files agree with each other.

        ``expect_model`` (a model_info dict or a fingerprint string) must match the model the
        index was built with; otherwise :class:`ModelMismatchError` names both.
        """
        root = Path(directory)
        if not root.is_dir():
            raise DataError(f"{root}: expected a gallery index folder, found nothing there")
        for name in (META_FILE, INDEX_FILE, ITEMS_FILE):
            if not (root / name).is_file():
                raise DataError(f"{root / name}: expected the index's {name} file, it is missing")
        meta_path = root / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{meta_path}: expected JSON, could not parse it ({_short(exc)})"
            ) from None
        for field in ("format", "factory", "metric", "ntotal", "dim", "model_info"):
            if field not in meta:
                raise DataError(f"{meta_path}: {field}: expected this field, it is missing")
        if meta["format"] != FORMAT:
            raise DataError(f"{meta_path}: format: expected {FORMAT!r}, got {meta['format']!r}")
        if meta["metric"] not in _METRICS:
            raise DataError(
                f"{meta_path}: metric: expected one of {sorted(_METRICS)}, got {meta['metric']!r}"
            )
        if expect_model is not None:
            check_model(meta["model_info"], expect_model, where=str(root))

        index_path = root / INDEX_FILE
        try:
            index = faiss.read_index(str(index_path))
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

        items_path = root / ITEMS_FILE
        items = []
        with open(items_path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    why = (
                        "the file is truncated" if not line.endswith("\n") else "could not parse it"
                    )
                    raise DataError(
                        f"{items_path}:{lineno}: expected one JSON object per line, {why}"
                    ) from None
                if not isinstance(item, dict) or not ("id" in item or "path" in item):
                    raise DataError(
                        f"{items_path}:{lineno}: expected an object with 'id' or 'path'"
                    )
                items.append(item)
        if len(items) != index.ntotal:
            raise DataError(
                f"{items_path}: rows: expected {index.ntotal} items (one per indexed vector), got {len(items)}"
            )
        return cls(
            index, items, meta["model_info"], meta["factory"], meta["metric"], meta.get("created")
        )

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


def suggested_ivf_factory(n: int) -> str:
    """``IVF{~4·sqrt(n)},Flat``, the usual starting point for an approximate index of ``n`` vectors."""
    return f"IVF{max(1, round(4 * math.sqrt(n)))},Flat"
