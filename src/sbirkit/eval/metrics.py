"""Retrieval metrics as pure functions over a block of queries (torch-vectorised, any device).

Ranked metrics take a :class:`~sbirkit.eval.ranking.RankedRelevant` (build one from a distance
matrix and a relevance mask with :func:`rank_relevant`; lower distance = better): for each
relevant item, how many gallery items and how many relevant items lie below and at its
distance. Per-query outputs are float64 with NaN where the value is undefined; :func:`mean_defined`
and :func:`class_mean` average them and either leave the undefined queries out (counted) or
score them 0 (``no_relevant``).

Ties (items at exactly equal distance from the query) follow a named policy, ``ties`` =
``"pessimistic"`` | ``"expected"`` | ``"optimistic"`` (:mod:`sbirkit.eval.ties`; docs/metrics.md):
relevant items last inside a tie, the exact expectation over random orders inside every tie, or
relevant items first. With no ties the three agree. ``map:sklearn`` alone does not depend on the
order: a tie group is one threshold, as in ``sklearn.metrics.average_precision_score``.

P@K divides by min(K, gallery size), the length of the returned list (SAKE, Sem-PCYC);
``p@K:zse`` is P@min(K, #relevant) (ZSE-SBIR) and ``p@K:doodle2search`` divides the hits in the
top K by min(K, #relevant, gallery) (Doodle2Search's ``prec``). Yelamarthi's mAP@K divides by K
as its formula says, even when the gallery is shorter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from . import ties as T
from .ranking import RankedRelevant, rank_relevant
from .ties import DEFAULT_TIES, TIE_POLICIES, TIE_SAMPLES, TIE_SEED

__all__ = [
    "DEFAULT_TIES",
    "INTERPOLATIONS",
    "MAP_AT_K_CONVENTIONS",
    "MAP_CONVENTIONS",
    "NO_RELEVANT",
    "PRECISION_CONVENTIONS",
    "TIE_POLICIES",
    "TIE_POLICY",
    "RankedRelevant",
    "TrueMatch",
    "accuracy_at_k",
    "average_precision",
    "average_precision_at_k",
    "class_mean",
    "mean_defined",
    "precision_at_k",
    "rank_relevant",
    "true_match",
    "true_match_rank",
]

Interpolation = Literal["none", "voc", "sklearn"]
MapAtKConvention = Literal["sake", "yelamarthi", "standard", "sem-pcyc"]
Ties = Literal["pessimistic", "expected", "optimistic"]

MAP_CONVENTIONS: dict[str, str] = {
    "none": "non-interpolated AP over the full ranking: sum over relevant items of P@rank / #relevant",
    "voc": "VOC-interpolated AP over the full ranking (precision envelope; SAKE's eval_AP_inner/VOCap, "
           "ZSE-SBIR's voc_eval)",
    "sklearn": "non-interpolated AP with each tie group as one threshold (sklearn average_precision_score; "
               "Sem-PCYC, Doodle2Search); independent of tie order",
}
INTERPOLATIONS: tuple[str, ...] = tuple(MAP_CONVENTIONS)
MAP_AT_K_CONVENTIONS: dict[str, str] = {
    "sake": (
        "VOC-interpolated AP over the top K, recall normalised by min(K, #relevant) "
        "(SAKE's eval_AP_inner with top=K, as ZSE-SBIR prints it)"
    ),
    "yelamarthi": (
        "Yelamarthi et al. (ECCV 2018): (1/K) * sum_{i<=K} rel_i * P@i"
    ),
    "standard": (
        "non-interpolated AP of the top K: sum_{i<=K} rel_i * P@i / min(K, #relevant)"
    ),
    "sem-pcyc": (
        "Sem-PCYC (Dutta & Akata, CVPR 2019): sklearn AP of the top-K list alone, normalised by the hits "
        "found there, 0 when none"
    ),
}
PRECISION_CONVENTIONS: dict[str, str] = {
    "standard": "fraction relevant among the top min(K, gallery)",
    "zse": "P@min(K, #relevant) (ZSE-SBIR's precision_eval)",
    "doodle2search": "relevant in the top K / min(K, #relevant, gallery) (Doodle2Search's prec)",
}
NO_RELEVANT: dict[str, str] = {
    "exclude": "left out of the mean and counted",
    "zero": "scored 0 in the mean",
}
TIE_POLICY = TIE_POLICIES[DEFAULT_TIES]  # the default policy's description (kept for old imports)


def average_precision(ranked: RankedRelevant, *, interpolation: Interpolation = "none",
                      ties: Ties = DEFAULT_TIES, samples: int = TIE_SAMPLES,
                      seed: int = TIE_SEED, first_query: int = 0, return_variance: bool = False):
    """Per-query AP over the full ranking in a named convention (``MAP_CONVENTIONS``).

    ``"none"``: sum of P@rank over the relevant items / #relevant, under the tie policy;
    ``"voc"``: the same with P replaced by the best precision at that rank or any later one
    (PASCAL VOC 2010+; SAKE's mAP@all), under ``expected`` estimated from ``samples`` random tie
    orders per query (query i's seeded with ``(seed, first_query + i)``; :mod:`sbirkit.eval.ties`);
    ``"sklearn"``: tied distances form one threshold (sklearn's average_precision_score), whatever
    ``ties`` says. NaN for a query with no relevant
    item. ``return_variance`` also returns the variance of each value's estimate (0 where exact).
    """
    if interpolation not in MAP_CONVENTIONS:
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {interpolation!r}")
    T.check_ties(ties)
    num_relevant = ranked.num_relevant
    if interpolation == "sklearn":
        precision = ranked.relevant_at_or_below.to(torch.float64).div_(ranked.at_or_below.clamp(min=1))
        values = _divide_or_nan(_prefix_sum(precision, num_relevant), num_relevant)
    elif interpolation == "voc":
        return _voc(ranked, None, ties, samples, seed, first_query, return_variance)
    else:
        terms, count = T.precision_terms(ranked, None, ties)
        values = _divide_or_nan(_prefix_sum(terms, count), num_relevant)
    return (values, torch.zeros_like(values)) if return_variance else values


def average_precision_at_k(
    ranked: RankedRelevant, k: int, *, convention: MapAtKConvention = "sake", ties: Ties = DEFAULT_TIES,
    samples: int = TIE_SAMPLES, seed: int = TIE_SEED, first_query: int = 0, return_variance: bool = False,
):
    """Per-query AP@K in a named convention (see ``MAP_AT_K_CONVENTIONS``) under a tie policy.

    NaN where the query has no relevant item. Ranks beyond a gallery shorter than K count as
    not relevant. ``sake`` under ``expected`` is estimated from ``samples`` random tie orders;
    ``return_variance`` also returns each estimate's variance (0 where exact).
    """
    if convention not in MAP_AT_K_CONVENTIONS:
        raise ValueError(
            f"convention: expected one of {tuple(MAP_AT_K_CONVENTIONS)}, got {convention!r}"
        )
    _check_k(k)
    T.check_ties(ties)
    num_relevant = ranked.num_relevant
    if convention == "sake":
        return _voc(ranked, k, ties, samples, seed, first_query, return_variance)
    if convention == "sem-pcyc":
        values = _sem_pcyc(ranked, k, ties)
    else:
        terms, count = T.precision_terms(ranked, k, ties)
        total = _prefix_sum(terms, count)
        if convention == "yelamarthi":
            denominator = torch.where(num_relevant > 0, k, 0)
        else:
            denominator = num_relevant.clamp(max=k)
        values = _divide_or_nan(total, denominator)
    return (values, torch.zeros_like(values)) if return_variance else values


def precision_at_k(ranked: RankedRelevant, k: int, *, convention: str = "standard",
                   ties: Ties = DEFAULT_TIES) -> Tensor:
    """Per-query P@K in a named convention (``PRECISION_CONVENTIONS``) under a tie policy.

    ``standard``: relevant among the top min(K, gallery), defined (0) for a query with no
    relevant item; ``zse`` and ``doodle2search`` are NaN (undefined) for such a query.
    """
    if convention not in PRECISION_CONVENTIONS:
        raise ValueError(f"convention: expected one of {tuple(PRECISION_CONVENTIONS)}, got {convention!r}")
    _check_k(k)
    T.check_ties(ties)
    shown = ranked.gallery_size.clamp(max=k)
    num_relevant = ranked.num_relevant
    if convention == "zse":
        cut = num_relevant.clamp(max=k)
        count = T.count_in_top(ranked, cut, ties)
        return _divide_or_nan(count, cut)
    count = T.count_in_top(ranked, k, ties)
    if convention == "doodle2search":
        return _divide_or_nan(count, torch.minimum(num_relevant, shown))
    return torch.where(shown > 0, count / shown.clamp(min=1).to(torch.float64), float("nan"))


@dataclass
class TrueMatch:
    """Per query, where its best (closest) true item's tie group lies: ``below`` gallery items
    closer, ``tied`` items at exactly its distance (itself included), ``true_tied`` true items
    among them (0 where the query has no true item)."""

    below: Tensor
    tied: Tensor
    true_tied: Tensor

    def rank(self, ties: Ties = "pessimistic") -> Tensor:
        """1-based rank of the best true item (0 where none) under the pessimistic or optimistic
        order; ``expected`` has no single rank (use :func:`accuracy_at_k`)."""
        T.check_ties(ties)
        if ties == "expected":
            raise ValueError("ties: a rank is fixed only for 'pessimistic' and 'optimistic'; expected "
                             "Acc@K comes from accuracy_at_k(match, k, ties='expected')")
        rank = self.below + 1 if ties == "optimistic" else self.below + self.tied - self.true_tied + 1
        return torch.where(self.true_tied > 0, rank, torch.zeros_like(rank))


def true_match(distances: Tensor, is_true: Tensor) -> TrueMatch:
    """:class:`TrueMatch` of each query row (items at +inf distance, an excluded self match, are
    never counted)."""
    _check_pair(distances, is_true)
    inf = torch.tensor(float("inf"), dtype=distances.dtype, device=distances.device)
    is_true = is_true.to(torch.bool)
    best = torch.where(is_true, distances, inf).amin(dim=1, keepdim=True)
    at = distances == best
    none = torch.isinf(best.squeeze(1))
    zero = torch.zeros(distances.shape[0], dtype=torch.int64, device=distances.device)
    below = torch.where(none, zero, (distances < best).sum(dim=1))
    tied = torch.where(none, zero, at.sum(dim=1))
    true_tied = torch.where(none, zero, (at & is_true).sum(dim=1))
    return TrueMatch(below, tied, true_tied)


def true_match_rank(distances: Tensor, is_true: Tensor) -> Tensor:
    """Fine-grained rank of each query's best true gallery item (1 = first), 0 where it has none,
    with ties counted against the query (the pessimistic order; :func:`true_match` for the others).
    """
    return true_match(distances, is_true).rank("pessimistic")


def accuracy_at_k(ranks: Tensor | TrueMatch, k: int, ties: Ties = DEFAULT_TIES) -> Tensor:
    """Per-query Acc@K: 1.0 if the best true item ranks within K, else 0.0; NaN if no true item.

    ``ranks``: a :class:`TrueMatch` (the tie policy applies; ``expected`` is the probability
    under a random order inside the tie) or ranks from :func:`true_match_rank` (as given).
    """
    _check_k(k)
    if isinstance(ranks, TrueMatch):
        T.check_ties(ties)
        match = ranks
        if ties != "expected":
            return accuracy_at_k(match.rank(ties), k)
        hit = 1.0 - T.none_in_first(match.tied, match.true_tied, k - match.below)
        return torch.where(match.true_tied > 0, hit, torch.full_like(hit, float("nan")))
    hit = ((ranks >= 1) & (ranks <= k)).to(torch.float64)
    return torch.where(ranks >= 1, hit, torch.full_like(hit, float("nan")))


def mean_defined(values: Tensor, no_relevant: str = "exclude") -> tuple[float, int]:
    """Mean over the per-query values and how many were undefined (NaN: no relevant or true
    item): ``no_relevant="exclude"`` leaves those out of the mean, ``"zero"`` scores them 0."""
    values, undefined = _fill_undefined(values, no_relevant)
    defined = ~torch.isnan(values)
    mean = float(values[defined].mean()) if bool(defined.any()) else float("nan")
    return mean, undefined


def class_mean(values: Tensor, labels: Tensor, no_relevant: str = "exclude") -> tuple[float, int]:
    """Mean over classes of each class's mean value, and how many queries were undefined.

    ``no_relevant``: as in :func:`mean_defined`. A class whose queries are all left out is left out
    of the outer mean.
    """
    if values.shape != labels.shape:
        raise ValueError(f"labels: expected shape {tuple(values.shape)}, got {tuple(labels.shape)}")
    values, undefined = _fill_undefined(values, no_relevant)
    defined = ~torch.isnan(values)
    if not bool(defined.any()):
        return float("nan"), undefined
    classes, inverse = torch.unique(labels[defined], return_inverse=True)
    sums = torch.zeros(len(classes), dtype=torch.float64, device=values.device)
    counts = torch.zeros(len(classes), dtype=torch.float64, device=values.device)
    sums.index_add_(0, inverse, values[defined].to(torch.float64))
    counts.index_add_(0, inverse, torch.ones_like(sums[inverse]))
    return float((sums / counts).mean()), undefined


def mean_weights(values: Tensor, labels: Tensor | None = None, no_relevant: str = "exclude") -> Tensor:
    """Each query's weight in :func:`mean_defined` (``labels`` None) or :func:`class_mean`: the
    mean is the sum of weight * value over the counted queries (weight 0 for the others)."""
    counted = ~torch.isnan(_fill_undefined(values, no_relevant)[0])
    weights = torch.zeros(values.shape, dtype=torch.float64, device=values.device)
    if not bool(counted.any()):
        return weights
    if labels is None:
        weights[counted] = 1.0 / float(counted.sum())
        return weights
    classes, inverse = torch.unique(labels[counted], return_inverse=True)
    sizes = torch.bincount(inverse, minlength=len(classes)).to(torch.float64)
    weights[counted] = 1.0 / (sizes[inverse] * len(classes))
    return weights


def _fill_undefined(values: Tensor, no_relevant: str) -> tuple[Tensor, int]:
    """``(values, how many were undefined)``, the undefined ones set to 0 when ``"zero"``."""
    if no_relevant not in NO_RELEVANT:
        raise ValueError(f"no_relevant: expected one of {tuple(NO_RELEVANT)}, got {no_relevant!r}")
    undefined = int(torch.isnan(values).sum())
    return (torch.nan_to_num(values, nan=0.0) if no_relevant == "zero" else values), undefined


def _voc(ranked: RankedRelevant, k: int | None, ties: str, samples: int, seed: int, first_query: int,
         return_variance: bool):
    """VOC-interpolated AP over the full ranking (``k`` None) or the top k with recall normalised
    by min(k, #relevant) (SAKE's ``eval_AP_inner``), at fixed positions or sampled tie orders."""
    def score(r: RankedRelevant, pos: Tensor) -> Tensor:
        count = r.num_relevant if k is None else r.count_in_top(k, pos)
        width = pos.shape[1] if k is None else min(pos.shape[1], k)
        j = torch.arange(width, device=pos.device)
        precision = (j[None, :] + 1).to(torch.float64) / (pos[:, :width] + 1)
        # the envelope's max over later ranks is always reached at a relevant one
        precision = _envelope(precision.masked_fill_(j[None, :] >= count[:, None], 0))
        den = r.num_relevant if k is None else r.num_relevant.clamp(max=k)
        return _divide_or_nan(_prefix_sum(precision, count), den)

    if ties == "expected":
        values, variance = T.sampled_mean(ranked, score, relevant_to=k, samples=samples, seed=seed,
                                          first_query=first_query)
    else:
        values = score(ranked, T.positions(ranked, ties))
        variance = torch.zeros_like(values)
    return (values, variance) if return_variance else values


def _sem_pcyc(ranked: RankedRelevant, k: int, ties: str) -> Tensor:
    """Sem-PCYC's ``apsak``: sklearn AP of the top-k list (ties inside it one threshold),
    normalised by the hits found, 0 when none; the tie straddling rank k decides how many
    relevant items enter the list (hypergeometric: the exact expectation under ``expected``)."""
    whole, size, relevant, slots, full_sum = T.straddling_group(ranked, k)
    lo = (slots - (size - relevant)).clamp(min=0)
    hi = torch.minimum(slots, relevant)

    def value(h: Tensor) -> Tensor:
        h = h.to(torch.float64)
        hits = whole.to(torch.float64)[..., None] if h.dim() == 2 else whole.to(torch.float64)
        found = hits + h
        total = (full_sum[..., None] if h.dim() == 2 else full_sum) + h * found / k
        return torch.where(found > 0, total / found.clamp(min=1), 0.0)

    # The value depends on the order only through how many relevant items h enter the list, and
    # it is not monotone in h (more hits can lower the hit-normalised AP): pessimistic and
    # optimistic are the least and greatest value over the possible h.
    width = int(hi.max()) + 1 if hi.numel() else 1
    h = torch.arange(width, device=hi.device)[None, :].expand(len(hi), width)
    possible = (h >= lo[:, None]) & (h <= hi[:, None])
    values = value(h)
    if ties == "pessimistic":
        out = values.masked_fill(~possible, float("inf")).amin(dim=1)
    elif ties == "optimistic":
        out = values.masked_fill(~possible, float("-inf")).amax(dim=1)
    else:
        p = T.hypergeometric_pmf(h, size[:, None], relevant[:, None], slots[:, None])
        p = torch.where(size[:, None] > 0, p, (h == 0).to(torch.float64))
        out = (p * values).sum(dim=1)
    return torch.where(ranked.num_relevant > 0, out, float("nan"))


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
