"""Retrieval metrics as pure functions over a block of queries (torch-vectorised, any device).

Ranked metrics take a :class:`~sbirkit.eval.ranking.RankedRelevant` (build one from a distance
matrix and a relevance mask with :func:`rank_relevant`; lower distance = better): for each
relevant item, how many gallery items and how many relevant items lie at or below its distance.
Per-query outputs are float64 with NaN where the value is undefined; :func:`mean_defined` and
:func:`class_mean` average them and count the undefined queries instead of treating them as 0.

Tie policy (items at exactly equal distance from the query):

* mAP@all (:func:`average_precision`): a group of tied items is one threshold, exactly as
  ``sklearn.metrics.average_precision_score``: AP = sum over distinct distances t of
  (R(t) - R(t_prev)) * P(t), where P and R count every item with distance <= t. The VOC option
  applies the precision envelope to the same per-threshold points.
* Top-K metrics (:func:`precision_at_k`, :func:`average_precision_at_k`): position based; inside
  a tie group the relevant items are ranked after the non-relevant ones, so ties count against
  the query. The result never depends on gallery order.
* Acc@K (:func:`true_match_rank`): ties count against the query; rank = number of gallery items
  whose distance is <= the true item's distance.

Queries with no relevant item have an undefined AP (every mAP convention); P@K is 0 for them.
P@K divides by min(K, gallery size), the length of the returned list (as SAKE's code does);
Yelamarthi's mAP@K divides by K as its formula says, even when the gallery is shorter.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .ranking import RankedRelevant, rank_relevant

__all__ = [
    "INTERPOLATIONS",
    "MAP_AT_K_CONVENTIONS",
    "TIE_POLICY",
    "RankedRelevant",
    "accuracy_at_k",
    "average_precision",
    "average_precision_at_k",
    "class_mean",
    "mean_defined",
    "precision_at_k",
    "rank_relevant",
    "true_match_rank",
]

Interpolation = Literal["none", "voc"]
MapAtKConvention = Literal["sake", "yelamarthi", "standard"]

INTERPOLATIONS: tuple[str, ...] = ("none", "voc")
MAP_AT_K_CONVENTIONS: dict[str, str] = {
    "sake": (
        "SAKE (Liu et al., ICCV 2019): VOC-interpolated AP over the top K, "
        "recall normalised by min(K, #relevant)"
    ),
    "yelamarthi": (
        "Yelamarthi et al. (ECCV 2018): (1/K) * sum_{i<=K} rel_i * P@i"
    ),
    "standard": (
        "non-interpolated AP of the top K: sum_{i<=K} rel_i * P@i / min(K, #relevant)"
    ),
}
TIE_POLICY = (
    "mAP@all: tied distances form one threshold (sklearn average_precision_score); "
    "top-K metrics and Acc@K: ties count against the query (relevant items rank last in a tie)"
)


def average_precision(ranked: RankedRelevant, *, interpolation: Interpolation = "none") -> Tensor:
    """Per-query AP over the full ranking, tied distances grouped as one threshold.

    Each relevant item adds P(t)/#relevant at its distance t, P(t) = relevant_at_or_below /
    at_or_below. ``interpolation="none"`` is sklearn's non-interpolated AP; ``"voc"`` replaces
    P(t) by the best precision at any threshold >= t (PASCAL VOC 2010+ ``voc_ap``; with no ties
    this is SAKE's mAP@all). NaN for a query with no relevant item.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {interpolation!r}")
    precision = ranked.relevant_at_or_below.to(torch.float64).div_(ranked.at_or_below.clamp(min=1))
    if interpolation == "voc":
        # The envelope's maximum over later thresholds is always reached at a relevant item.
        precision = _envelope(precision.masked_fill_(~ranked.valid, 0))
    return _divide_or_nan(_prefix_sum(precision, ranked.num_relevant), ranked.num_relevant)


def average_precision_at_k(
    ranked: RankedRelevant, k: int, *, convention: MapAtKConvention = "sake"
) -> Tensor:
    """Per-query AP@K in a named convention (see ``MAP_AT_K_CONVENTIONS``), position based.

    NaN where the query has no relevant item. Ranks beyond a gallery shorter than K count as
    not relevant.
    """
    if convention not in MAP_AT_K_CONVENTIONS:
        raise ValueError(
            f"convention: expected one of {tuple(MAP_AT_K_CONVENTIONS)}, got {convention!r}"
        )
    _check_k(k)
    found = ranked.count_in_top(k)  # the relevant items in the top K are a prefix of each row
    positions = ranked.positions[:, :k]  # at most K of them
    hits = torch.arange(1, positions.shape[1] + 1, device=positions.device, dtype=torch.float64)
    precision = hits[None, :] / (positions + 1)  # P@i at the relevant ranks
    if convention == "sake":
        j = torch.arange(positions.shape[1], device=positions.device)
        # the envelope's max over later ranks (within the top K) is reached at a relevant one
        precision = _envelope(precision.masked_fill_(j[None, :] >= found[:, None], 0))
    total = _prefix_sum(precision, found)
    num_relevant = ranked.num_relevant
    if convention == "yelamarthi":
        denominator = torch.where(num_relevant > 0, k, 0)
    else:
        denominator = num_relevant.clamp(max=k)
    return _divide_or_nan(total, denominator)


def precision_at_k(ranked: RankedRelevant, k: int) -> Tensor:
    """Per-query P@K: fraction relevant among the top min(K, gallery) ranks (the returned list)."""
    _check_k(k)
    shown = ranked.gallery_size.clamp(max=k).to(torch.float64)
    count = ranked.count_in_top(k).to(torch.float64)
    return torch.where(shown > 0, count / shown.clamp(min=1), float("nan"))


def true_match_rank(distances: Tensor, is_true: Tensor) -> Tensor:
    """Fine-grained rank of each query's true gallery item (1 = first), 0 where it has none.

    rank = number of gallery items whose distance is <= the true item's distance, so ties count
    against the query. With several true items the best (closest) one is used. Items at +inf
    distance (an excluded self match) are never counted.
    """
    _check_pair(distances, is_true)
    inf = torch.tensor(float("inf"), dtype=distances.dtype, device=distances.device)
    best_true = torch.where(is_true.to(torch.bool), distances, inf).amin(dim=1, keepdim=True)
    rank = (distances <= best_true).sum(dim=1)
    return torch.where(torch.isinf(best_true.squeeze(1)), torch.zeros_like(rank), rank)


def accuracy_at_k(ranks: Tensor, k: int) -> Tensor:
    """Per-query Acc@K from :func:`true_match_rank`: 1.0 if rank <= K, else 0.0; NaN if no true item."""
    _check_k(k)
    hit = ((ranks >= 1) & (ranks <= k)).to(torch.float64)
    return torch.where(ranks >= 1, hit, torch.full_like(hit, float("nan")))


def mean_defined(values: Tensor) -> tuple[float, int]:
    """Mean over the defined (non-NaN) per-query values, and how many were undefined."""
    defined = ~torch.isnan(values)
    undefined = int(values.numel() - int(defined.sum()))
    mean = float(values[defined].mean()) if bool(defined.any()) else float("nan")
    return mean, undefined


def class_mean(values: Tensor, labels: Tensor) -> tuple[float, int]:
    """Mean over classes of each class's mean defined value, and how many queries were undefined.

    A class whose queries are all undefined is left out of the outer mean.
    """
    if values.shape != labels.shape:
        raise ValueError(f"labels: expected shape {tuple(values.shape)}, got {tuple(labels.shape)}")
    defined = ~torch.isnan(values)
    undefined = int(values.numel() - int(defined.sum()))
    if not bool(defined.any()):
        return float("nan"), undefined
    classes, inverse = torch.unique(labels[defined], return_inverse=True)
    sums = torch.zeros(len(classes), dtype=torch.float64, device=values.device)
    counts = torch.zeros(len(classes), dtype=torch.float64, device=values.device)
    sums.index_add_(0, inverse, values[defined].to(torch.float64))
    counts.index_add_(0, inverse, torch.ones_like(sums[inverse]))
    return float((sums / counts).mean()), undefined


def _prefix_sum(values: Tensor, count: Tensor) -> Tensor:
    """Sum of each row's first ``count`` entries, added left to right, so the result does not
    depend on how much padding the block added (block size never changes a value)."""
    if values.shape[1] == 0:
        return torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)
    running = torch.cumsum(values, dim=1)
    last = running.gather(1, (count.to(torch.int64) - 1).clamp(min=0)[:, None]).squeeze(1)
    return torch.where(count > 0, last, 0)


def _envelope(precision: Tensor) -> Tensor:
    """Precision envelope: at each rank, the maximum precision at that rank or any later one."""
    return torch.flip(torch.cummax(torch.flip(precision, dims=(1,)), dim=1).values, dims=(1,))


def _divide_or_nan(total: Tensor, denominator: Tensor) -> Tensor:
    denominator = denominator.to(torch.float64)
    nan = torch.full_like(total, float("nan"))
    return torch.where(denominator > 0, total / denominator.clamp(min=1), nan)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"expected two (queries, gallery) matrices of one shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
