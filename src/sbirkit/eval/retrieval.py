"""Blocked retrieval evaluation: distances, ranking and metrics one block of queries at a time.

The full queries x gallery matrix is never materialised: each block of ``block_size`` query rows
gets a (block, gallery) distance matrix from one matmul and one values-only sort per row; each
query's relevant distances (its class's gallery columns) are then located in the sorted row by
binary search (:mod:`sbirkit.eval.ranking`), and :mod:`sbirkit.eval.metrics` turns that into
per-query values. Memory stays bounded by ``block_size * gallery``.
Metric names (:mod:`sbirkit.eval.metric_names`): ``map`` / ``map:<convention>`` (mAP@all),
``map@K`` / ``map@K:<convention>``, ``p@K`` / ``p@K:<convention>`` and ``acc@K`` (fine-grained,
needs instance ids); ties follow a named policy (:mod:`sbirkit.eval.ties`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError
from . import metrics as M
from . import ties as T
from .hamming import hamming_block, sign_codes
from .metric_names import MetricSpec, describe_metric, parse_metric
from .ranking import RankedRelevant, locate

Distance = Literal["cosine", "euclidean", "hamming"]
DISTANCES: tuple[str, ...] = ("cosine", "euclidean", "hamming")
DEFAULT_METRICS: tuple[str, ...] = ("map", "map@200", "p@100", "p@200")
DEFAULT_BLOCK_ELEMENTS = 2**25  # distances per block: 128 MiB in float32, sorted in place
DIRECTIONS: tuple[str, ...] = ("sketch2photo", "photo2sketch", "sketch2sketch", "photo2photo")

@dataclass
class RetrievalResult:
    """Averaged metric values, how many queries each metric left undefined, and the conventions."""

    metrics: dict[str, float]
    undefined: dict[str, int]
    conventions: dict[str, str]
    num_queries: int
    gallery_size: int
    distance: str
    exclude_self: bool
    average: str
    tie_policy: str = M.TIE_POLICY
    per_query: dict[str, Tensor] = field(default_factory=dict, repr=False)
    ties: str | None = None  # None: a record written before tie policies were named
    no_relevant: str = "exclude"
    tie_stderr: dict[str, float] = field(default_factory=dict)  # metrics estimated from sampled tie orders

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (no per-query tensors)."""
        return {
            "metrics": dict(self.metrics),
            "undefined": dict(self.undefined),
            "conventions": dict(self.conventions),
            "num_queries": self.num_queries,
            "gallery_size": self.gallery_size,
            "distance": self.distance,
            "exclude_self": self.exclude_self,
            "average": self.average,
            "tie_policy": self.tie_policy,
            "ties": self.ties,
            "no_relevant": self.no_relevant,
            "tie_stderr": dict(self.tie_stderr),
        }


def evaluate_retrieval(
    query_emb: Tensor | np.ndarray,
    gallery_emb: Tensor | np.ndarray,
    query_labels: Any,
    gallery_labels: Any,
    *,
    query_instances: Any = None,
    gallery_instances: Any = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    distance: Distance = "cosine",
    exclude_self: bool = False,
    block_size: int | None = None,
    device: str | torch.device | None = None,
    map_convention: str = "sake",
    interpolation: str = "none",
    average: Literal["query", "class"] = "query",
    ties: str = T.DEFAULT_TIES,
    no_relevant: str = "exclude",
    tie_samples: int = T.TIE_SAMPLES,
    return_per_query: bool = False,
    progress: bool = False,
) -> RetrievalResult:
    """Rank the gallery for every query and average the requested metrics, block by block.

    Relevant = same class label. ``exclude_self`` removes gallery item i from query i's ranking
    (same set as query and gallery). ``average="class"`` averages mAP metrics per class first.
    ``block_size`` = query rows per block (default: block x gallery <= 2**25 distances).
    ``device=None`` uses the embeddings' device, ``"auto"`` CUDA when available.
    ``map_convention`` names the mAP@K convention and ``interpolation`` the mAP@all one for
    metric names that do not carry their own (``map@200:yelamarthi``, ``map:voc``).
    ``distance="hamming"`` ranks binary codes (+-1, 0/1, bool or packed uint8) by exact integer
    Hamming distance (:mod:`sbirkit.eval.hamming`).
    ``ties``: ``"pessimistic"``, ``"expected"`` or ``"optimistic"`` (:mod:`sbirkit.eval.ties`);
    VOC metrics under ``"expected"`` are estimated from ``tie_samples`` random tie orders per
    query (exact when no tie mixes relevant and non-relevant items), with their standard error in
    ``tie_stderr``. ``no_relevant``: a query whose value is undefined (no relevant or true item)
    is left out of the mean (``"exclude"``, counted in ``undefined``) or scored 0 (``"zero"``).
    """
    specs = [parse_metric(m, interpolation=interpolation, map_convention=map_convention) for m in metrics]
    if not specs:
        raise ValueError("metrics: expected at least one metric name")
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"metrics: names repeat in {list(metrics)}")
    if distance not in DISTANCES:
        raise ValueError(f"distance: expected one of {DISTANCES}, got {distance!r}")
    if average not in ("query", "class"):
        raise ValueError(f"average: expected 'query' or 'class', got {average!r}")
    T.check_ties(ties)
    if no_relevant not in M.NO_RELEVANT:
        raise ValueError(f"no_relevant: expected one of {tuple(M.NO_RELEVANT)}, got {no_relevant!r}")
    if isinstance(tie_samples, bool) or not isinstance(tie_samples, int) or tie_samples < 1:
        raise ValueError(f"tie_samples: expected an integer >= 1, got {tie_samples!r}")

    dev = _resolve_device(device, query_emb)
    if distance == "hamming":
        query, gallery = sign_codes(query_emb, gallery_emb, dev)
    else:
        query = _embeddings(query_emb, "query_emb", dev)
        gallery = _embeddings(gallery_emb, "gallery_emb", dev)
    num_queries, num_gallery = query.shape[0], gallery.shape[0]
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"gallery_emb: expected dimension {query.shape[1]} (as query_emb), got {gallery.shape[1]}"
        )
    if exclude_self and num_queries != num_gallery:
        raise ValueError(
            f"exclude_self: expected the same set as query and gallery, got {num_queries} queries "
            f"and {num_gallery} gallery items"
        )
    query_codes, gallery_codes = encode_labels(
        query_labels, gallery_labels, ("query_labels", "gallery_labels"), num_queries, num_gallery
    )
    wants_acc = any(s.kind == "acc@k" for s in specs)
    if wants_acc:
        if query_instances is None or gallery_instances is None:
            raise ValueError(
                "query_instances/gallery_instances: acc@K needs instance ids for both sides"
            )
        query_inst, gallery_inst = encode_labels(
            query_instances, gallery_instances, ("query_instances", "gallery_instances"),
            num_queries, num_gallery, allow_none=True,
        )
        query_inst, gallery_inst = query_inst.to(dev), gallery_inst.to(dev)
    query_codes, gallery_codes = query_codes.to(dev, torch.int32), gallery_codes.to(dev, torch.int32)

    if distance == "cosine":
        query = _unit_rows(query, "query_emb")
        gallery = _unit_rows(gallery, "gallery_emb")
    gallery_sq = (gallery * gallery).sum(dim=1) if distance == "euclidean" else None
    gallery_t = gallery.t()

    length = num_gallery - int(exclude_self)
    if length < 1:
        raise ValueError("gallery_emb: expected at least one gallery item besides the query itself")
    rows = _block_rows(block_size, length, num_queries)
    # Gallery items grouped by class (CSR): class c owns class_items[class_start[c]:][:count[c]].
    num_classes = int(max(int(query_codes.max()), int(gallery_codes.max()))) + 1
    class_counts = torch.bincount(gallery_codes, minlength=num_classes)
    class_start = torch.cumsum(class_counts, 0) - class_counts
    class_items = torch.sort(gallery_codes, stable=True).indices

    ranked = [s for s in specs if s.kind != "acc@k"]
    with_below = ties != "pessimistic" or any(s.convention == "sem-pcyc" for s in ranked)
    per_query = {s.name: torch.empty(num_queries, dtype=torch.float64) for s in specs}
    variance = {s.name: torch.zeros(num_queries, dtype=torch.float64) for s in specs}
    acc_specs = [s for s in specs if s.kind == "acc@k"]
    blocks = range(0, num_queries, rows)
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc="evaluate_retrieval", unit="block")
    for start in blocks:
        stop = min(start + rows, num_queries)
        q = query[start:stop]
        labels = query_codes[start:stop]
        dist = _block_distances(q, gallery_t, gallery_sq, distance)
        if not ranked and not bool(torch.isfinite(dist).all()):
            _raise_non_finite(start, stop)
        own = torch.arange(start, stop, device=dev)
        if exclude_self:
            dist[torch.arange(stop - start, device=dev), own] = float("inf")
        if acc_specs:
            is_true = query_inst[start:stop, None] == gallery_inst[None, :]
            match = M.true_match(dist, is_true)
            for s in acc_specs:
                per_query[s.name][start:stop] = M.accuracy_at_k(match, s.k, ties).cpu()
            del is_true
        if not ranked:
            continue
        excluded = (gallery_codes[own] == labels) if exclude_self else None
        ranked_relevant = _rank_block(dist, labels, class_counts, class_start, class_items, length,
                                      excluded, with_below)
        del dist
        if ranked_relevant is None:
            _raise_non_finite(start, stop)
        for s in ranked:
            value, spread = score_metric(s, ranked_relevant, ties, tie_samples, first_query=start)
            per_query[s.name][start:stop] = value.cpu()
            variance[s.name][start:stop] = spread.cpu()
        del ranked_relevant

    values: dict[str, float] = {}
    undefined: dict[str, int] = {}
    stderr: dict[str, float] = {}
    query_codes_cpu = query_codes.cpu()
    for s in specs:
        by_class = average == "class" and s.kind in ("map", "map@k")
        if by_class:
            values[s.name], undefined[s.name] = M.class_mean(per_query[s.name], query_codes_cpu, no_relevant)
        else:
            values[s.name], undefined[s.name] = M.mean_defined(per_query[s.name], no_relevant)
        if bool((variance[s.name] > 0).any()):
            weights = M.mean_weights(per_query[s.name], query_codes_cpu if by_class else None, no_relevant)
            stderr[s.name] = float((weights.square() * variance[s.name]).sum().sqrt())
    conventions = {s.name: describe_metric(s) for s in specs}
    return RetrievalResult(
        metrics=values,
        undefined=undefined,
        conventions=conventions,
        num_queries=num_queries,
        gallery_size=length,
        distance=distance,
        exclude_self=exclude_self,
        average=average,
        tie_policy=f"{ties}: {T.TIE_POLICIES[ties]}",
        per_query=per_query if return_per_query else {},
        ties=ties,
        no_relevant=no_relevant,
        tie_stderr=stderr,
    )


def score_metric(spec: MetricSpec, ranked: RankedRelevant, ties: str, samples: int = T.TIE_SAMPLES,
                 first_query: int = 0) -> tuple[Tensor, Tensor]:
    """``(per-query values, variance of each value's estimate)`` of one ranked metric (the
    variance is 0 except for VOC metrics estimated from sampled tie orders; the block's first
    query index seeds those, so they do not depend on the block size)."""
    sampled = {"samples": samples, "first_query": first_query, "return_variance": True}
    if spec.kind == "map":
        return M.average_precision(ranked, interpolation=spec.convention, ties=ties, **sampled)
    if spec.kind == "map@k":
        return M.average_precision_at_k(ranked, spec.k, convention=spec.convention, ties=ties, **sampled)
    value = M.precision_at_k(ranked, spec.k, convention=spec.convention, ties=ties)
    return value, torch.zeros_like(value)


def evaluate_directions(
    sketch_emb: Tensor | np.ndarray,
    sketch_labels: Any,
    photo_emb: Tensor | np.ndarray,
    photo_labels: Any,
    directions: Iterable[str] = DIRECTIONS,
    *,
    sketch_instances: Any = None,
    photo_instances: Any = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    fine_grained_metrics: Sequence[str] = ("acc@1", "acc@5", "acc@10"),
    **kwargs: Any,
) -> dict[str, RetrievalResult]:
    """Evaluate sketch->photo, photo->sketch, sketch->sketch and photo->photo (ZSCMR protocol).

    Same-modality directions rank the set against itself with the query removed
    (``exclude_self``). ``fine_grained_metrics`` (Acc@K) are added to the cross-modal directions
    when both ``sketch_instances`` and ``photo_instances`` are given.
    """
    if "exclude_self" in kwargs:
        raise ValueError("exclude_self: set per direction by evaluate_directions; do not pass it")
    if any(parse_metric(m).kind == "acc@k" for m in metrics):
        raise ValueError("metrics: put acc@K in fine_grained_metrics (cross-modal directions only)")
    sides = {
        "sketch": (sketch_emb, sketch_labels, sketch_instances),
        "photo": (photo_emb, photo_labels, photo_instances),
    }
    fine = sketch_instances is not None and photo_instances is not None
    results: dict[str, RetrievalResult] = {}
    for direction in directions:
        if direction not in DIRECTIONS:
            raise ValueError(f"directions: expected names from {DIRECTIONS}, got {direction!r}")
        q_side, g_side = direction.split("2")
        q_emb, q_labels, q_inst = sides[q_side]
        g_emb, g_labels, g_inst = sides[g_side]
        same = q_side == g_side
        wanted = list(metrics) + ([] if same or not fine else list(fine_grained_metrics))
        results[direction] = evaluate_retrieval(
            q_emb, g_emb, q_labels, g_labels,
            query_instances=None if same else q_inst,
            gallery_instances=None if same else g_inst,
            metrics=wanted,
            exclude_self=same,
            **kwargs,
        )
    return results


def encode_labels(
    query: Any,
    gallery: Any,
    names: tuple[str, str],
    num_queries: int,
    num_gallery: int,
    *,
    allow_none: bool = False,
) -> tuple[Tensor, Tensor]:
    """Map query and gallery labels (integer tensors/arrays, or sequences of str/int) to shared
    non-negative int64 codes. With ``allow_none`` a None id gets a code matching nothing."""
    out = []
    for value, name, n in ((query, names[0], num_queries), (gallery, names[1], num_gallery)):
        if isinstance(value, Tensor) or (isinstance(value, np.ndarray) and value.dtype.kind in "biuf"):
            t = torch.as_tensor(value)
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ValueError(f"{name}: expected integer or string labels, got dtype {t.dtype}")
            t = t.reshape(-1).to(torch.int64).cpu()
            if t.numel() and int(t.min()) < 0:
                raise ValueError(f"{name}: expected labels >= 0, got {int(t.min())}")
        else:
            t = list(value)
        if len(t) != n:
            raise ValueError(f"{name}: expected {n} entries (one per embedding row), got {len(t)}")
        out.append(t)
    if all(isinstance(t, Tensor) for t in out):
        both = torch.cat(out)
        if both.numel() and int(both.max()) >= 4 * both.numel():  # sparse ids: compact them
            _, both = torch.unique(both, return_inverse=True)  # (keeps bincount small)
        return both[: len(out[0])], both[len(out[0]) :]
    vocab: dict[Any, int] = {}
    codes = []
    for t, name in zip(out, names):
        items = t.tolist() if isinstance(t, Tensor) else t
        row = []
        for i, item in enumerate(items):
            if item is None:
                if not allow_none:
                    raise ValueError(f"{name}[{i}]: expected a label, got None")
                row.append(-1)
                continue
            row.append(vocab.setdefault(item, len(vocab)))
        codes.append(torch.tensor(row, dtype=torch.int64))
    # None: distinct negative codes per side so a missing id never matches (shifted to >= 0).
    query_codes, gallery_codes = codes
    offset = 2
    query_codes = torch.where(query_codes < 0, torch.zeros_like(query_codes), query_codes + offset)
    gallery_codes = torch.where(gallery_codes < 0, torch.ones_like(gallery_codes), gallery_codes + offset)
    return query_codes, gallery_codes


def _rank_block(dist: Tensor, labels: Tensor, class_counts: Tensor, class_start: Tensor,
                class_items: Tensor, length: int, excluded: Tensor | None,
                with_below: bool = False) -> RankedRelevant | None:
    """Gather each query's class columns, then sort ``dist`` rows in place (values only) and
    locate the relevant distances in them. An excluded self match is at +inf in both
    (``excluded``: whether it was relevant). None if a distance is not finite."""
    counts = class_counts[labels]
    width = int(counts.max())
    j = torch.arange(width, device=dist.device)
    slots = (class_start[labels][:, None] + j[None, :]).clamp_(max=class_items.numel() - 1)
    relevant = dist.gather(1, class_items[slots]).masked_fill_(j[None, :] >= counts[:, None], float("inf"))
    num_relevant = counts if excluded is None else counts - excluded.to(counts.dtype)
    ranked, sorted_rows = locate(dist, relevant, length, num_relevant, with_below=with_below)
    # Ascending with NaN last: a finite first entry and a finite last non-excluded entry mean
    # every distance of the block is finite.
    return ranked if bool(torch.isfinite(sorted_rows[:, [0, length - 1]]).all()) else None


def _raise_non_finite(start: int, stop: int) -> None:
    raise DataError(
        f"query_emb/gallery_emb: queries {start}..{stop - 1} give non-finite distances "
        "(overflow); expected finite embeddings of moderate size"
    )


def _resolve_device(device: str | torch.device | None, reference: Any) -> torch.device:
    if device is None:
        return reference.device if isinstance(reference, Tensor) else torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _embeddings(value: Tensor | np.ndarray, name: str, device: torch.device) -> Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (rows, dim) matrix, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)  # half precision would create spurious ties
    t = t.detach().to(device)
    sums = t.sum(dim=1)  # finite sums (one cheap pass) mean finite rows; check the rest exactly
    suspects = (~torch.isfinite(sums)).nonzero().flatten()
    finite = torch.isfinite(t[suspects]).all(dim=1)
    if not bool(finite.all()):
        row = int(suspects[~finite][0])
        raise DataError(f"{name}: row {row} has non-finite values; expected finite embeddings")
    return t


def _unit_rows(t: Tensor, name: str) -> Tensor:
    norms = t.norm(dim=1)
    if not bool((norms > 0).all()):
        row = int((norms == 0).nonzero()[0, 0])
        raise DataError(f"{name}: row {row} is all zeros; cosine distance needs non-zero embeddings")
    return F.normalize(t, dim=1)


def _block_rows(block_size: int | None, length: int, num_queries: int) -> int:
    if block_size is None:
        return max(1, min(num_queries, DEFAULT_BLOCK_ELEMENTS // (length + 1)))
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected an integer >= 1, got {block_size!r}")
    return block_size


def _block_distances(q: Tensor, gallery_t: Tensor, gallery_sq: Tensor | None, distance: str) -> Tensor:
    """Cosine: negated similarity of unit rows (exact negation adds no ties); euclidean: squared
    distance ||q||^2 + ||g||^2 - 2 q.g, clamped at 0 (same order as the distance); hamming: the
    exact integer count of differing bits."""
    if distance == "cosine":
        return torch.mm(q, gallery_t).neg_()
    if distance == "hamming":
        return hamming_block(q, gallery_t)
    dist = torch.addmm(gallery_sq.unsqueeze(0), q, gallery_t, beta=1, alpha=-2)
    return dist.add_((q * q).sum(dim=1, keepdim=True)).clamp_min_(0)
