"""Indexes for large collections: build from shards in bounded memory, choose a FAISS index for a
memory budget, and measure its recall against exact search.

:func:`build_index` builds a :class:`~sbirkit.index.gallery.GalleryIndex` from an embedding
source (a :class:`~sbirkit.index.shards.ShardSet` folder or arrays in memory) without holding
all vectors at once: it trains on a seeded sample, then adds the vectors one shard (memory
map) at a time. With ``max_memory`` it picks the index itself (:func:`choose`).

How the index is chosen (:func:`candidates`, in this order; the first that fits the budget wins):

1. ``Flat`` (exact) for fewer than :data:`FLAT_MAX_ROWS` vectors: a scan of 20k vectors is
   about a millisecond, and nothing is trained;
2. ``HNSW32``, then ``HNSW16``, up to :data:`HNSW_MAX_ROWS` vectors: the fastest search at
   high recall, but the graph lives in memory (it cannot be memory-mapped) and building it is
   slow (hours for 10M vectors on two cores), so larger collections use IVF;
3. ``IVF{nlist},Flat``: the vectors themselves in inverted lists;
4. ``IVF{nlist},PQ{m}`` with the largest ``m`` (bytes per vector) that fits, ``m = d/2, d/4 ...``
   down to 4; with ``OPQ{m}`` (a learned rotation, FAISS ``OPQMatrix``) in front once each
   sub-quantizer covers 4 dimensions or more, where it helps most.

``nlist`` (:func:`~.faiss_ops.default_nlist`) is the power of two nearest to ``sqrt(N)`` (at
most one list per 39 training vectors). FAISS's guide suggests 4 to 16·sqrt(N) for the fastest search; sqrt(N) keeps k-means
training and the assignment of every vector (both cost in proportion to ``nlist``) within
minutes on a small machine, and the ``nprobe`` tuning below pays for it at search time.

Memory is estimated from FAISS's storage layout (:func:`estimate_bytes`): codes and ids in the
inverted lists, centroids, graph links, PQ tables. The budget covers the index itself; the
build also holds a training sample and one shard (both reported), and the item dicts stay on
disk (:mod:`sbirkit.index.items`).

After the build, the search parameter (``nprobe`` for IVF, ``efSearch`` for HNSW) is raised in
powers of two until recall@10 on a set of *tuning* queries reaches ``target_recall``; recall@10
is then measured again on separate *held-out* queries and recorded with the choice, the budget
and every candidate's estimate in ``meta.json`` (``build.autotune``). Queries are gallery
vectors left out of the training sample; each one's own row is left out of both the exact and
the approximate top-k. Exact neighbours come from a blocked scan over the shards
(:func:`exact_knn`), never the whole matrix at once.

Why not autofaiss: it does this for FAISS, but ``pip install autofaiss`` (2.18) requires
``numpy<2`` (this project has numpy 2.x; the install would downgrade it under torch and faiss)
and brings pandas, pyarrow (55 MB), embedding-reader, fire, pytz, six and termcolor; it also
reads its own embedding-folder layout, and records no recall. The rules above follow the same
FAISS guidelines, and the search parameters are set through FAISS's ``ParameterSpace``.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from ..errors import DataError, UsageError
from .faiss_ops import METRICS, as_matrix, check_factory, default_nlist, fit_nlist, short_error
from .gallery import GalleryIndex
from .items import check_items
from .sizes import format_bytes, parse_memory  # noqa: F401  (parse_memory: used by the CLI from here)

#: fewer vectors than this: exact search (``Flat``) when it fits
FLAT_MAX_ROWS = 20_000
#: more vectors than this: no HNSW (slow to build, cannot be memory-mapped)
HNSW_MAX_ROWS = 1_000_000
#: training vectors per IVF list (FAISS's k-means samples at most 256 per list itself)
TRAIN_PER_LIST = 64
#: least training sample for an index with PQ codes (256 centroids per sub-quantizer)
MIN_PQ_TRAIN = 65_536
#: default number of gallery vectors drawn as queries to tune and measure recall (half each)
DEFAULT_QUERIES = 1000
_ADD_ROWS = 65536
def check_target_recall(value: float | None, flag: str = "--target-recall") -> float | None:
    if value is None:
        return None
    if not (isinstance(value, (int, float)) and 0 < float(value) <= 1):
        raise UsageError(f"{flag}: expected a recall in (0, 1], e.g. 0.95, got {value!r}")
    return float(value)


# ---- candidates and their memory ---------------------------------------------------------------
@dataclass
class Candidate:
    """One index the chooser considered: its factory, kind and estimated memory."""

    factory: str
    kind: str  # Flat, HNSW, IVF-Flat, IVF-PQ, OPQ+IVF-PQ
    estimated_bytes: int
    fits: bool = False
    note: str | None = None


def default_train_size(n: int, factory: str) -> int:
    """Training vectors for ``factory`` over ``n`` rows: 64 per IVF list, 65,536 at least with PQ."""
    m = re.search(r"IVF(\d+)", factory)
    want = TRAIN_PER_LIST * int(m.group(1)) if m else 0
    if "PQ" in factory:
        want = max(want, MIN_PQ_TRAIN)
    return int(min(n, max(want, 1)))


def _pq_bits(n_train: int) -> int:
    """Bits per PQ code: 8 (256 centroids) when there are 39·256 training vectors, fewer below."""
    return int(max(4, min(8, math.floor(math.log2(max(1, n_train / 39))))))


def estimate_bytes(factory: str, n: int, d: int) -> int:
    """Memory of a FAISS index of ``n`` ``d``-dim vectors built from ``factory`` (the layouts the
    chooser uses: Flat, HNSW{M}, [OPQ{m},]IVF{L},Flat|PQ{m}[x{b}])."""
    if factory == "Flat":
        return 4 * n * d
    m = re.fullmatch(r"HNSW(\d+)(?:,Flat)?", factory)
    if m:
        links = int(m.group(1))
        # level 0 holds 2M links per vector, upper levels ~M/(M-1) more; plus levels and offsets
        return n * (4 * d + 4 * 2 * links + 4 * links // max(1, links - 1) * links + 16)
    m = re.fullmatch(r"(?:OPQ(\d+)(?:_\d+)?,)?IVF(\d+),(Flat|PQ(\d+)(?:x(\d+))?)", factory)
    if not m:
        raise UsageError(f"factory {factory!r}: no memory estimate for this layout")
    nlist = int(m.group(2))
    size = 4 * nlist * d + 48 * nlist  # centroids, and two std::vectors per inverted list
    if m.group(3) == "Flat":
        size += n * (4 * d + 8)
    else:
        pq_m, bits = int(m.group(4)), int(m.group(5) or 8)
        size += n * (math.ceil(pq_m * bits / 8) + 8) + 4 * d * (1 << bits)  # codes + ids, codebooks
    if m.group(1):
        size += 4 * d * d  # the OPQ rotation
    return int(size)


def _pq_dims(d: int) -> list[int]:
    """Sub-quantizer counts to try, most accurate first: d/2, d/4, d/8 ... (divisors of ``d``), down to 4."""
    out, m = [], d // 2
    while m >= 4:
        if d % m == 0:
            out.append(m)
        m //= 2
    return out


def candidates(n: int, d: int, n_train: int | None = None) -> list[Candidate]:
    """Every index the chooser may use for ``n`` ``d``-dim vectors, most preferred first."""
    n_train = min(n, n_train) if n_train is not None else None
    out = []
    if n < FLAT_MAX_ROWS:
        out.append(Candidate("Flat", "Flat", estimate_bytes("Flat", n, d)))
    if n <= HNSW_MAX_ROWS and n >= FLAT_MAX_ROWS:
        for links in (32, 16):
            f = f"HNSW{links}"
            out.append(Candidate(f, "HNSW", estimate_bytes(f, n, d)))
    train_ivf = n_train if n_train is not None else min(n, TRAIN_PER_LIST * default_nlist(n))
    nlist = default_nlist(n, train_ivf)
    if n >= FLAT_MAX_ROWS:
        f = f"IVF{nlist},Flat"
        out.append(Candidate(f, "IVF-Flat", estimate_bytes(f, n, d)))
    train_pq = n_train if n_train is not None else min(n, max(TRAIN_PER_LIST * nlist, MIN_PQ_TRAIN))
    bits = _pq_bits(train_pq)
    if train_pq >= 16 * 39:
        suffix = "" if bits == 8 else f"x{bits}"
        for m in _pq_dims(d):
            if d // m >= 4:
                f, kind = f"OPQ{m},IVF{nlist},PQ{m}{suffix}", "OPQ+IVF-PQ"
            else:
                f, kind = f"IVF{nlist},PQ{m}{suffix}", "IVF-PQ"
            out.append(Candidate(f, kind, estimate_bytes(f, n, d)))
    if not out:
        out.append(Candidate("Flat", "Flat", estimate_bytes("Flat", n, d)))
    return out


def choose(n: int, d: int, budget: int, n_train: int | None = None,
           flag: str = "--max-memory") -> tuple[Candidate, list[Candidate]]:
    """The first of :func:`candidates` whose estimate fits ``budget`` bytes, and all of them."""
    cands = candidates(n, d, n_train)
    for c in cands:
        c.fits = c.estimated_bytes <= budget
    for c in cands:
        if c.fits:
            return c, cands
    smallest = min(cands, key=lambda c: c.estimated_bytes)
    raise UsageError(
        f"{flag}: {format_bytes(budget)} is too small for {n:,} {d}-dim vectors: the smallest index "
        f"({smallest.factory}) needs about {format_bytes(smallest.estimated_bytes)}; give at least that"
    )


# ---- embedding sources -------------------------------------------------------------------------
class ArraySource:
    """Embeddings already in memory (``embed`` of a folder, an ``.npz``) as a build source."""

    def __init__(self, embeddings: np.ndarray, items: Sequence[dict], model_info: dict | None = None,
                 what: str = "gallery embeddings"):
        self.x = as_matrix(embeddings, what)
        self._items = check_items(items, len(self.x), "gallery")
        self.model_info = dict(model_info or {})
        self.dim = int(self.x.shape[1])
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.x)

    def blocks(self, rows: int = _ADD_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        for a in range(0, len(self.x), rows):
            yield a, self.x[a : a + rows]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.x[np.asarray(rows, dtype=np.int64)]

    def items(self) -> list[dict]:
        return self._items


def open_source(path, flag: str = "--from-embeddings"):
    """A shard folder (``embed --shard``) or an ``.npz`` file (``embed --out x.npz``) as a source."""
    import json
    from pathlib import Path

    from .shards import ShardSet

    p = Path(path)
    if p.is_file() and p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                x, ids, paths, labels = z["embeddings"], z["ids"], z["paths"], z["labels"]
                info = json.loads(str(z["model"]))
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{flag} {p}: expected an .npz from 'sbirkit embed' (embeddings, ids, paths, "
                            f"labels, model), could not read it ({exc})") from None
        items = []
        for i, pth, lab in zip(ids.tolist(), paths.tolist(), labels.tolist()):
            item = {"id": i, "path": pth}
            if lab:
                item["class_name"] = lab
            items.append(item)
        return ArraySource(x, items, info, what=str(p))
    return ShardSet.open(p, flag=flag)


# ---- exact neighbours and recall ---------------------------------------------------------------
def exact_knn(source, queries: np.ndarray, k: int, metric: str = "ip", exclude: np.ndarray | None = None,
              block: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``queries`` over every vector of ``source``, scanned ``block`` rows at a
    time (FAISS ``knn`` per block, merged in a ``ResultHeap``). ``exclude[i]`` (a row number) is
    left out of query ``i``'s results (the query's own row)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    extra = 1 if exclude is not None else 0
    kk = min(k + extra, len(source))
    heap = faiss.ResultHeap(len(q), kk, keep_max=(metric == "ip"))
    for start, x in source.blocks(block):
        kb = min(kk, len(x))
        if metric == "ip":
            d, i = faiss.knn(q, np.ascontiguousarray(x), kb, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            d, i = faiss.knn(q, np.ascontiguousarray(x), kb)
        heap.add_result(np.ascontiguousarray(d, dtype=np.float32), np.ascontiguousarray(i + start, dtype=np.int64))
    heap.finalize()
    return _drop_self(heap.D, heap.I, exclude, k)


def _drop_self(d: np.ndarray, i: np.ndarray, exclude: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    if exclude is None:
        return d[:, :k], i[:, :k]
    out_d = np.empty((len(i), min(k, i.shape[1])), d.dtype)
    out_i = np.empty_like(out_d, dtype=np.int64)
    for r in range(len(i)):
        keep = np.flatnonzero(i[r] != exclude[r])[: out_i.shape[1]]
        out_i[r, : len(keep)], out_d[r, : len(keep)] = i[r, keep], d[r, keep]
        out_i[r, len(keep):], out_d[r, len(keep):] = -1, np.nan
    return out_d, out_i


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k (``truth``, -1 = none) found in ``found``."""
    hits, total = 0, 0
    for f, t in zip(found, truth):
        t = set(t[t >= 0].tolist())
        hits += len(t & set(f[f >= 0].tolist()))
        total += len(t)
    return hits / total if total else 1.0


def _search_param(index: faiss.Index) -> str | None:
    if faiss.try_extract_index_ivf(index) is not None:
        return "nprobe"
    inner = index.index if isinstance(index, faiss.IndexPreTransform) else index
    return "efSearch" if hasattr(faiss.downcast_index(inner), "hnsw") else None


def _param_values(index: faiss.Index, name: str | None) -> list[int]:
    if name == "nprobe":
        nlist = faiss.try_extract_index_ivf(index).nlist
        return sorted({min(nlist, 2**e) for e in range(0, 11)})
    if name == "efSearch":
        return [16, 32, 64, 128, 256, 512, 1024]
    return []


def _measure(index: faiss.Index, q: np.ndarray, truth: np.ndarray, exclude: np.ndarray, k: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    d, i = index.search(q, min(k + 1, index.ntotal))
    ms = (time.perf_counter() - t0) * 1e3 / max(1, len(q))
    _, i = _drop_self(d, i, exclude, k)
    return recall_at_k(i, truth), ms


def tune(index: faiss.Index, q_tune: np.ndarray, t_tune: np.ndarray, x_tune: np.ndarray, target: float,
         k: int = 10) -> tuple[str | None, int | None, list[dict]]:
    """The smallest search parameter (``nprobe``/``efSearch``, set with FAISS ``ParameterSpace``)
    whose recall@k on the tuning queries reaches ``target`` (else the best tried). Returns the
    parameter's name, its value (left set on ``index``) and every (value, recall, ms) tried."""
    name = _search_param(index)
    values = _param_values(index, name)
    if name is None or not values:
        return None, None, []
    ps = faiss.ParameterSpace()
    curve, best, flat = [], None, 0
    for v in values:
        ps.set_index_parameter(index, name, v)
        r, ms = _measure(index, q_tune, t_tune, x_tune, k)
        curve.append({name: v, f"recall@{k}": round(r, 4), "ms_per_query": round(ms, 4)})
        gained = best is None or r > best[1] + 0.002
        if best is None or r > best[1] + 1e-9:
            best = (v, r) if gained or best is None else best
        if r >= target:
            best = (v, r)
            break
        flat = 0 if gained else flat + 1
        if flat >= 2:  # two doublings without gain: the codes, not the probes, limit recall
            break
    ps.set_index_parameter(index, name, best[0])
    return name, int(best[0]), curve


# ---- the build ---------------------------------------------------------------------------------
def _peak_rss() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kB on Linux
    except (ImportError, OSError):  # pragma: no cover
        return None


def build_index(
    source,
    factory: str | None = None,
    max_memory: int | str | None = None,
    target_recall: float | None = None,
    metric: str = "ip",
    seed: int = 0,
    train_size: int | None = None,
    queries: int = DEFAULT_QUERIES,
    k: int = 10,
    nprobe: int | None = None,
    mmap: bool = True,
    progress: bool = True,
    echo: Callable[[str], Any] | None = None,
    source_info: dict | None = None,
) -> GalleryIndex:
    """Build a :class:`GalleryIndex` from ``source`` (a :class:`~sbirkit.index.shards.ShardSet`
    or :class:`ArraySource`) holding one block of vectors at a time (see the module docstring).

    Give ``factory`` (as ``GalleryIndex.build``) or ``max_memory`` (bytes or ``"4GB"``: the index
    is chosen by :func:`choose`); ``target_recall`` (default 0.95 with ``max_memory``) tunes the
    search parameter and measures recall@``k`` on held-out queries, recorded in the index's
    ``build`` metadata with the choice. ``mmap`` records that ``load`` should memory-map the index.
    Training uses ``train_size`` rows (default :func:`default_train_size`) drawn with ``seed``,
    or every row in order when that covers them all (then the index equals ``GalleryIndex.build``'s).
    """
    from tqdm.auto import tqdm

    say = echo or (lambda s: None)
    if metric not in METRICS:
        raise UsageError(f"metric: expected one of {sorted(METRICS)}, got {metric!r}")
    if factory is not None and max_memory is not None:
        raise UsageError("--factory, --max-memory: expected one of them (--max-memory chooses the factory)")
    target_recall = check_target_recall(target_recall)
    if max_memory is not None and target_recall is None:
        target_recall = 0.95
    n, d = len(source), int(source.dim)
    if n == 0:
        raise DataError("gallery embeddings: expected at least one vector, got none")
    dim = source.model_info.get("embed_dim")
    if dim is not None and int(dim) != d:
        raise DataError(f"gallery embeddings: dim: expected model_info embed_dim {dim}, got {d}")
    t_start = time.perf_counter()
    budget = parse_memory(max_memory) if max_memory is not None else None
    considered: list[Candidate] = []
    if budget is not None:
        chosen, considered = choose(n, d, budget, n_train=train_size)
        factory = chosen.factory
        say(f"chose {factory} ({chosen.kind}, about {format_bytes(chosen.estimated_bytes)}) for {n:,} "
            f"{d}-dim vectors within {format_bytes(budget)}")
    factory = factory or "Flat"
    check_factory(factory, d, metric)
    n_train = default_train_size(n, factory) if train_size is None else max(1, min(int(train_size), n))
    requested = factory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the change is recorded in factory_note below
        factory, note = fit_nlist(factory, n_train)
    index = faiss.index_factory(d, factory, METRICS[metric])
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.seed = int(seed)
        ivf = faiss.downcast_index(ivf)
        if getattr(ivf, "do_polysemous_training", False):
            # FAISS trains a code permutation for polysemous (Hamming) filtering by default; search
            # never uses it here, and it is by far the slowest step (over a minute even for 10k vectors)
            ivf.do_polysemous_training = False
    rng = np.random.default_rng(seed)
    train_rows = np.arange(n) if n_train >= n else np.sort(rng.choice(n, n_train, replace=False))
    t0 = time.perf_counter()
    needs_training = not index.is_trained
    if needs_training:
        sample = source.take(train_rows)
        say(f"training {factory} on {len(sample):,} vectors ({format_bytes(sample.nbytes)})")
        try:
            index.train(sample)
        except RuntimeError as exc:
            raise DataError(f"gallery embeddings: training {factory!r} on {len(sample)} vectors failed: "
                            f"{short_error(exc)}") from None
        del sample
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if ivf is not None and isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.ArrayInvertedLists):
        _add_ivf_presized(index, source, n, factory, metric, progress)
    else:
        with tqdm(total=n, desc=f"indexing ({factory})", unit="vec", disable=not progress) as bar:
            for _, x in source.blocks(_ADD_ROWS):
                _check_block(x, metric)
                index.add(np.ascontiguousarray(x))
                bar.update(len(x))
    add_s = time.perf_counter() - t0
    items = source.items()
    gallery = GalleryIndex(index, items, source.model_info, factory, metric, requested_factory=requested,
                           factory_note=note)
    if ivf is not None:
        gallery.nprobe = nprobe if nprobe is not None else max(1, round(math.sqrt(ivf.nlist)))
    elif nprobe is not None:
        raise UsageError(f"nprobe: only IVF indexes have nprobe; this index is {factory!r}")
    build: dict[str, Any] = {
        "mmap": bool(mmap),
        "rows": n,
        "dim": d,
        "train_size": int(len(train_rows)) if needs_training else 0,
        "seed": int(seed),
        "train_s": round(train_s, 2),
        "add_s": round(add_s, 2),
        **({"source": source_info} if source_info else {}),
    }
    if target_recall is not None:
        build["autotune"] = _tune_and_measure(gallery, source, train_rows if needs_training else None,
                                              n_train >= n, target_recall, queries,
                                              k, metric, seed, budget, considered, factory, say)
    build["build_s"] = round(time.perf_counter() - t_start, 2)
    build["peak_rss_bytes"] = _peak_rss()
    gallery.build_info = build
    return gallery


def _check_block(x: np.ndarray, metric: str) -> None:
    if not np.isfinite(x).all():
        raise DataError("gallery embeddings: values: expected finite numbers, got NaN/inf")
    if metric == "ip" and len(x):
        norms = np.linalg.norm(x, axis=1)
        if np.abs(norms - 1).max() > 1e-3:
            warnings.warn(f"gallery embeddings: rows are not L2-normalised (norms {norms.min():.3g}.."
                          f"{norms.max():.3g}); inner-product scores are then not cosine similarities",
                          stacklevel=3)


def _transform(index: faiss.Index, x: np.ndarray) -> np.ndarray:
    """``x`` through an ``IndexPreTransform``'s chain (OPQ ...), as the index sees it."""
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            x = faiss.downcast_VectorTransform(index.chain.at(i)).apply(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _add_ivf_presized(index: faiss.Index, source, n: int, factory: str, metric: str, progress: bool) -> None:
    """Add every vector to an IVF index with each inverted list allocated once, at its final size.

    ``index.add`` appends to ``std::vector`` lists, which grow by doubling: at 10M vectors the
    lists held ~1.4 times the index's size (4.4 GiB for a 2.5 GiB IVF-Flat) at the end of the
    add. Here pass 1 assigns every vector to its list (FAISS's quantizer) and counts, each list
    is then sized exactly (``ArrayInvertedLists.resize``), and pass 2 encodes each block
    (``IndexIVF.encode_vectors``, residual PQ codes included) and writes it in place
    (``update_entries``), rows in order within each list exactly as ``add`` would put them.
    Both passes read one block (and map one shard) at a time; the list numbers (4 bytes a row)
    are kept between them.
    """
    from tqdm.auto import tqdm

    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    invlists = faiss.downcast_InvertedLists(ivf.invlists)
    labels = np.empty(n, dtype=np.int32)
    with tqdm(total=2 * n, desc=f"indexing ({factory})", unit="vec", disable=not progress) as bar:
        for start, x in source.blocks(_ADD_ROWS):
            _check_block(x, metric)
            _, assign = ivf.quantizer.search(_transform(index, x), 1)
            labels[start : start + len(x)] = assign[:, 0]
            bar.update(len(x))
        counts = np.bincount(labels, minlength=ivf.nlist)
        for list_no in np.flatnonzero(counts):
            invlists.resize(int(list_no), int(counts[list_no]))
        filled = np.zeros(ivf.nlist, dtype=np.int64)
        code_size = int(ivf.code_size)
        for start, x in source.blocks(_ADD_ROWS):
            xt = _transform(index, x)
            lab = labels[start : start + len(x)].astype(np.int64)
            codes = np.empty((len(x), code_size), dtype=np.uint8)
            ivf.encode_vectors(len(x), faiss.swig_ptr(xt), faiss.swig_ptr(lab), faiss.swig_ptr(codes))
            order = np.argsort(lab, kind="stable")  # rows of one list stay in row order
            lab_sorted = lab[order]
            ids = (order + start).astype(np.int64)
            codes = np.ascontiguousarray(codes[order])
            bounds = np.flatnonzero(np.diff(lab_sorted)) + 1
            for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(x)]])):
                list_no = int(lab_sorted[a])
                invlists.update_entries(list_no, int(filled[list_no]), int(b - a), faiss.swig_ptr(ids[a:b]),
                                        faiss.swig_ptr(codes[a:b]))
                filled[list_no] += b - a
            bar.update(len(x))
    if not np.array_equal(filled, counts):  # pragma: no cover - the two passes saw different data
        raise DataError("gallery embeddings: the shards changed while the index was being built")
    ivf.ntotal = n
    index.ntotal = n


def _tune_and_measure(gallery: GalleryIndex, source, train_rows: np.ndarray | None, trained_on_all: bool,
                      target: float, queries: int, k: int, metric: str, seed: int, budget: int | None,
                      considered: list[Candidate], factory: str, say) -> dict:
    n = len(source)
    index = gallery.index
    trained = train_rows is not None
    if trained and not trained_on_all:
        pool = np.setdiff1d(np.arange(n), train_rows, assume_unique=True)
    else:
        pool = np.arange(n)
    nq = int(min(queries, len(pool), max(2, n // 2)))
    rng = np.random.default_rng(seed + 1)
    q_rows = np.sort(rng.choice(pool, nq, replace=False)) if nq < len(pool) else pool.copy()
    q = source.take(q_rows)  # read in row order, then shuffled before the tuning/held-out split
    perm = rng.permutation(nq)
    q, q_rows = q[perm], q_rows[perm]
    half = max(1, nq // 2)
    t0 = time.perf_counter()
    _, truth = exact_knn(source, q, k, metric, exclude=q_rows)
    exact_s = time.perf_counter() - t0
    tune_q, eval_q = q[:half], q[half:] if nq > half else q[:half]
    tune_t, eval_t = truth[:half], truth[half:] if nq > half else truth[:half]
    tune_x, eval_x = q_rows[:half], q_rows[half:] if nq > half else q_rows[:half]
    name, value, curve = tune(index, tune_q, tune_t, tune_x, target, k)
    recall, ms = _measure(index, eval_q, eval_t, eval_x, k)
    if name == "nprobe":
        gallery.nprobe = value
    record = {
        "max_memory_bytes": budget,
        "target_recall": target,
        "k": k,
        "factory": factory,
        "kind": next((c.kind for c in considered if c.factory == factory), None),
        "estimated_bytes": next((c.estimated_bytes for c in considered if c.factory == factory),
                                _safe_estimate(factory, n, source.dim)),
        "search_param": {name: value} if name else {},
        f"recall@{k}": round(recall, 4),
        "ms_per_query": round(ms, 4),
        "target_reached": bool(recall >= target),
        "queries": {"tuning": int(len(tune_q)), "held_out": int(len(eval_q)),
                    "from": "gallery rows" if not trained
                    else "gallery rows left out of the training sample" if not trained_on_all
                    else "gallery rows (the training sample was every row)",
                    "own_row_excluded": True},
        "tuning": curve,
        "exact_search_s": round(exact_s, 2),
        "considered": [asdict(c) for c in considered],
    }
    say(f"recall@{k} {recall:.3f} on {len(eval_q)} held-out queries"
        + (f" at {name} {value}" if name else "") + f" (target {target:g}"
        + ("" if recall >= target else ", not reached") + ")")
    if recall < target:
        warnings.warn(f"target recall {target:g} not reached: recall@{k} {recall:.3f} with {factory}"
                      + (f" at {name} {value}" if name else "")
                      + (f"; a larger --max-memory than {format_bytes(budget)} allows a less compressed index"
                         if budget else ""), stacklevel=3)
    return record


def _safe_estimate(factory: str, n: int, d: int) -> int | None:
    try:
        return estimate_bytes(factory, n, d)
    except UsageError:
        return None
