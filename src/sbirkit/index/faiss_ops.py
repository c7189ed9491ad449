"""FAISS operations the gallery index is built on: metrics, factory strings and their checks,
the number of IVF lists, row filters, removing rows, FAISS's error text on one line.

How many IVF lists (one rule, used by :func:`suggested_ivf_factory` and the chooser in
:mod:`sbirkit.index.autotune`): :func:`default_nlist`, the power of two nearest ``sqrt(N)``, at
most one list per :data:`MIN_TRAIN_PER_LIST` training vectors (a factory asked for with more
lists than that is shrunk by :func:`fit_nlist`). FAISS's guide gives
4 to 16·sqrt(N) for the fastest search at a given recall; sqrt(N) keeps k-means training and the
assignment of every vector (both in proportion to ``nlist``) within minutes on a small machine,
and ``nprobe`` (default ``round(sqrt(nlist))``, tuned by the chooser) pays for it at search time.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import faiss
import numpy as np

from ..errors import DataError, UsageError

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
#: FAISS's guidance: at least this many training vectors per IVF list
MIN_TRAIN_PER_LIST = 39


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

    def allowed(self) -> np.ndarray:
        """The allowed rows as a boolean mask of length ``n``."""
        return np.unpackbits(self._bitmap, bitorder="little")[: self.n].astype(bool)


def as_matrix(x: Any, what: str) -> np.ndarray:
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


def short_error(exc: BaseException) -> str:
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
    if metric not in METRICS:
        raise UsageError(f"metric: expected one of {sorted(METRICS)}, got {metric!r}")
    try:
        faiss.index_factory(int(dim), str(factory), METRICS[metric])
    except RuntimeError as exc:
        raise UsageError(
            f"factory: could not build FAISS index {factory!r} for {dim}-dim vectors: {short_error(exc)}"
        ) from None


def default_nlist(n: int, n_train: int | None = None) -> int:
    """The power of two nearest ``sqrt(n)``, at most one list per 39 training vectors."""
    n_train = n if n_train is None else n_train
    nlist = 2 ** max(0, round(math.log2(max(1.0, math.sqrt(n)))))
    while nlist > 1 and nlist * MIN_TRAIN_PER_LIST > n_train:
        nlist //= 2
    return max(1, nlist)


def suggested_ivf_factory(n: int) -> str:
    """``IVF{default_nlist(n)},Flat``: the usual starting point for an approximate index of ``n`` vectors."""
    return f"IVF{default_nlist(n)},Flat"


def fit_nlist(factory: str, n_train: int) -> tuple[str, str | None]:
    """Shrink ``IVF{nlist}`` when the training set has fewer points than lists (FAISS cannot train).

    Returns the factory to use and, when it differs from ``factory``, the reason in words.
    """
    m = re.search(r"IVF(\d+)", factory)
    if not m or int(m.group(1)) <= n_train:
        return factory, None
    nlist = int(m.group(1))
    new = max(1, n_train // MIN_TRAIN_PER_LIST)
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


def remove_rows(index: faiss.Index, drop: np.ndarray, keep: np.ndarray, factory: str) -> faiss.Index:
    """``index`` without rows ``drop``, the rows left numbered 0..n-1 in their old order."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        if ivf.direct_map.type != faiss.DirectMap.NoMap:  # rebuilt below, after renumbering
            ivf.set_direct_map_type(faiss.DirectMap.NoMap)
        index.remove_ids(faiss.IDSelectorBatch(len(drop), faiss.swig_ptr(drop)))
        renumber_ivf(ivf, keep)
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
            f"remove: index {factory!r} can neither remove rows nor give back its vectors ({short_error(exc)}); "
            "rebuild it with 'sbirkit index build' instead"
        ) from None
    fresh = faiss.clone_index(index)
    fresh.reset()
    fresh.add(np.ascontiguousarray(vectors[keep], dtype=np.float32))
    return fresh


def renumber_ivf(ivf: faiss.IndexIVF, keep: np.ndarray) -> None:
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


def search_widening(index: faiss.Index, q: np.ndarray, k: int, rows: RowFilter, nprobe: int | None):
    """Filtered top-``k`` for indexes whose search takes no selector: search 4k, 16k ... rows
    deep until ``k`` allowed rows are found (or the whole index was searched)."""
    allowed = rows.allowed()
    params = search_params(index, nprobe, None)
    depth = min(index.ntotal, 4 * k)
    while True:
        scores, indices = index.search(q, depth, params=params)
        ok = (indices >= 0) & allowed[np.clip(indices, 0, None)]
        if depth >= index.ntotal or (ok.sum(axis=1) >= k).all():
            break
        depth = min(index.ntotal, depth * 4)
    out_s = np.full((len(q), k), np.nan, dtype=np.float32)
    out_i = np.full((len(q), k), -1, dtype=np.int64)
    for r in range(len(q)):
        cols = np.flatnonzero(ok[r])[:k]
        out_s[r, : len(cols)] = scores[r, cols]
        out_i[r, : len(cols)] = indices[r, cols]
    return out_s, out_i


def search_params(index: faiss.Index, nprobe: int | None, rows: RowFilter | None):
    """FAISS search parameters for an ``nprobe`` override and a row filter (None: defaults)."""
    if nprobe is None and rows is None:
        return None
    sel = rows.selector if rows is not None else None
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params = faiss.SearchParametersIVF(nprobe=int(nprobe if nprobe is not None else ivf.nprobe))
        if sel is not None:
            params.sel = sel
    else:
        inner = index.index if isinstance(index, faiss.IndexPreTransform) else index
        hnsw = getattr(faiss.downcast_index(inner), "hnsw", None)
        params = faiss.SearchParametersHNSW(efSearch=int(hnsw.efSearch)) if hnsw is not None \
            else faiss.SearchParameters()
        params.sel = sel
    if isinstance(index, faiss.IndexPreTransform):
        params = faiss.SearchParametersPreTransform(index_params=params)
    return params
