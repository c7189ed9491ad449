"""Tie policies: what a metric is when several gallery items lie at exactly the same distance.

A ranking orders the items of a tie group arbitrarily; published evaluation code does so with an
unstable ``argsort`` (gallery order and the NumPy build decide). sbirkit names the order instead:

* ``pessimistic``: inside every tie group the relevant items come after the non-relevant ones
  (a lower bound: no tie order scores less);
* ``optimistic``: the relevant items come first (an upper bound);
* ``expected``: the exact expectation over uniformly random orders inside every tie group,
  independently across groups -- what code with an arbitrary tie order gives on average, and
  never dependent on gallery order.

Closed forms (McSherry & Najork, "Computing Information Retrieval Performance Measures
Efficiently in the Presence of Tied Scores", ECIR 2008, give AP and P@K; the rest follow the
same way). A tie group holds the ``n`` items at ranks N+1..N+n, ``r`` of them relevant, with R
relevant items ranked before it. In a uniformly random order each slot is relevant with
probability r/n and two slots both with probability r(r-1)/(n(n-1)), so

* relevant items among the top K: the groups wholly inside, plus r (K - N)/n from the one group
  that straddles rank K (hypergeometric mean);
* the sum of P@rank over the group's relevant items within the top K (m = min(n, K - N) slots):
  (r/n) * sum_{s=1..m} [(R + 1) + (s - 1)(r - 1)/(n - 1)] / (N + s), with the two sums
  sum 1/(N+s) = psi(N+m+1) - psi(N+1) (digamma) and sum (s-1)/(N+s) = m - (N+1) * that;
* metrics that are not linear in the order inside the straddling group (Sem-PCYC's AP of the
  top-K list, normalised by the hits found; ZSE's P@min(K, #relevant) is linear) sum over the
  hypergeometric number of its relevant items that enter the top K;
* Acc@K: the best-ranked of tau true items in a group of n is within the first m slots with
  probability 1 - C(n - tau, m) / C(n, m).

VOC-interpolated AP (``map:voc``, ``map@K:sake``) has no closed form under ``expected``: the
precision envelope is a running maximum over the rest of the ranking, and its expectation needs
the distribution of that maximum over every later tie group. It is estimated instead by
averaging over ``samples`` random tie orders (only the groups that mix relevant and
non-relevant items are redrawn, so without such groups the value is exact), each query's from a
generator seeded with its index; the result carries its standard error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .ranking import RankedRelevant, _per_query

TIE_POLICIES: dict[str, str] = {
    "pessimistic": "inside a tie the relevant items rank after the non-relevant ones (a lower bound)",
    "expected": "the exact expectation over uniformly random orders inside each tie (what code with an "
                "arbitrary tie order gives on average)",
    "optimistic": "inside a tie the relevant items rank before the non-relevant ones (an upper bound)",
}
DEFAULT_TIES = "expected"
TIE_SAMPLES = 100  # random tie orders behind the VOC estimates under "expected"
TIE_SEED = 0


def check_ties(ties: str) -> str:
    if ties not in TIE_POLICIES:
        raise ValueError(f"ties: expected one of {tuple(TIE_POLICIES)}, got {ties!r}")
    return ties


def positions(ranked: RankedRelevant, ties: str) -> Tensor:
    """0-based ranks of the relevant items under the pessimistic or optimistic order."""
    if ties == "pessimistic":
        return ranked.positions
    if ties == "optimistic":
        return ranked.optimistic_positions
    raise ValueError(f"ties: positions are fixed only for 'pessimistic' and 'optimistic', got {ties!r}")


def count_in_top(ranked: RankedRelevant, k: int | Tensor, ties: str) -> Tensor:
    """Per query, the (expected) number of relevant items in the top ``k`` (float64)."""
    if ties != "expected":
        return ranked.count_in_top(k, positions(ranked, ties)).to(torch.float64)
    below, _ = ranked.tie_groups()
    after, k = ranked.at_or_below, _per_query(k, ranked.at_or_below)
    whole = torch.searchsorted(after, k, right=True)  # relevant items whose group ends within the top k
    started = torch.searchsorted(below, k)  # ... whose group starts within it
    if after.shape[1] == 0:
        return whole.squeeze(1).to(torch.float64)
    i = whole.clamp(max=after.shape[1] - 1)
    start, end = below.gather(1, i), after.gather(1, i)
    share = (k - start).to(torch.float64) / (end - start).clamp(min=1).to(torch.float64)
    straddling = (started - whole).to(torch.float64)
    return (whole.to(torch.float64) + torch.where(started > whole, straddling * share, 0.0)).squeeze(1)


def precision_terms(ranked: RankedRelevant, k: int | None, ties: str) -> tuple[Tensor, Tensor]:
    """``(terms, count)``: per relevant item (columns, left to right) its (expected) P@rank
    counted only within the top ``k`` (None: the whole ranking), and per query how many leading
    columns can be non-zero. Summing a row's first ``count`` terms gives the AP numerator."""
    if ties != "expected":
        pos = positions(ranked, ties)
        count = ranked.num_relevant if k is None else ranked.count_in_top(k, pos)
        width = pos.shape[1] if k is None else min(pos.shape[1], k)
        hits = torch.arange(1, width + 1, device=pos.device, dtype=torch.float64)
        return hits[None, :] / (pos[:, :width] + 1), count
    below, relevant_below = ranked.tie_groups()
    after, relevant_after = ranked.at_or_below, ranked.relevant_at_or_below
    if k is None:
        count = ranked.num_relevant
    else:
        count = torch.searchsorted(below, _per_query(k, below)).squeeze(1)  # groups starting in the top k
    width = int(count.max()) if count.numel() else 0
    after, below = after[:, :width], below[:, :width]
    # An item alone in its group (no tie) has exactly j relevant items before it, so its P@rank is
    # (j + 1) / at_or_below, as without tie handling: one division for the whole block, then the
    # few tied items are overwritten. Columns at or past ``count`` are never summed.
    hits = torch.arange(1, width + 1, device=after.device, dtype=torch.float64)
    terms = hits[None, :] / after
    size = after - below
    tied = size > 1  # padding has size 0
    if k is not None:
        tied &= torch.arange(width, device=after.device)[None, :] < count[:, None]
    num_tied = int(tied.sum())
    if num_tied == 0:
        return terms, count
    relevant_below, relevant_after = relevant_below[:, :width], relevant_after[:, :width]
    if num_tied * 8 >= tied.numel():
        # Tie-heavy (binary codes: a row has at most b + 1 groups). Every input of the closed form
        # is the same for all relevant items of a group, so compute it once per group, at its first
        # relevant item (column relevant_below), and hand it to the others with one gather.
        j = torch.arange(width, device=after.device)
        first = (tied & (j[None, :] == relevant_below)).nonzero(as_tuple=True)
        value = torch.zeros_like(terms)
        value[first] = _tied_terms(size[first], below[first], relevant_below[first], relevant_after[first], k)
        group = value.gather(1, relevant_below.clamp(max=max(width - 1, 0)))
        return torch.where(tied, group, terms), count
    where = tied.nonzero(as_tuple=True)
    terms[where] = _tied_terms(size[where], below[where], relevant_below[where], relevant_after[where], k)
    return terms, count


def _tied_terms(size: Tensor, below: Tensor, relevant_below: Tensor, relevant_after: Tensor,
                k: int | None) -> Tensor:
    """The expected P@rank of a relevant item in a tie group of ``size`` items starting after rank
    ``below``, ``relevant_after - relevant_below`` of them relevant, counted within the top ``k``
    (McSherry & Najork's closed form; the module docstring)."""
    n = size.to(torch.float64)
    start = below.to(torch.float64)
    before = relevant_below.to(torch.float64)
    r = relevant_after.to(torch.float64) - before
    slots = n if k is None else torch.clamp(k - start, max=n)
    s0 = torch.special.digamma(start + slots + 1) - torch.special.digamma(start + 1)
    s1 = slots - (start + 1) * s0
    return ((before + 1) * s0 + (r - 1) / (n - 1) * s1) / n


def straddling_group(ranked: RankedRelevant, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per query, for the top-``k`` cut: ``(whole, group_size, group_relevant, slots, full_sum)``:
    the relevant items whose tie group ends within the top k, the size and relevant count of the
    group straddling rank k (0 if none), how many of its slots are in the top k, and the sum of
    tie-grouped precisions relevant_at_or_below / at_or_below over the ``whole`` items."""
    below, relevant_below = ranked.tie_groups()
    after, relevant_after = ranked.at_or_below, ranked.relevant_at_or_below
    bound = _per_query(k, after)
    whole = torch.searchsorted(after, bound, right=True).squeeze(1)
    started = torch.searchsorted(below, bound).squeeze(1)
    width = after.shape[1]
    grouped = relevant_after.to(torch.float64) / after.clamp(min=1).to(torch.float64)
    j = torch.arange(width, device=after.device)
    grouped = torch.where(j[None, :] < whole[:, None], grouped, 0.0)
    full_sum = torch.cumsum(grouped, dim=1)[:, -1] if width else torch.zeros(len(whole), dtype=torch.float64)
    zero = torch.zeros_like(whole)
    if width == 0:
        return whole, zero, zero, zero, full_sum
    i = whole.clamp(max=width - 1)[:, None]
    has = started > whole
    size = torch.where(has, (after.gather(1, i) - below.gather(1, i)).squeeze(1), zero)
    relevant = torch.where(has, (relevant_after.gather(1, i) - relevant_below.gather(1, i)).squeeze(1), zero)
    slots = torch.where(has, (bound - below.gather(1, i)).squeeze(1), zero)
    return whole, size, relevant, slots, full_sum


def hypergeometric_pmf(values: Tensor, size: Tensor, good: Tensor, draws: Tensor) -> Tensor:
    """P(X = values) for X the number of good items among ``draws`` drawn without replacement
    from ``size`` items of which ``good`` are good (float64; 0 outside the support)."""
    v, n, g, d = (t.to(torch.float64) for t in torch.broadcast_tensors(values, size, good, draws))
    ok = (v >= 0) & (v <= g) & (d - v >= 0) & (d - v <= n - g)
    lg = torch.lgamma
    vs = torch.where(ok, v, 0.0)
    log_p = (lg(g + 1) - lg(vs + 1) - lg(g - vs + 1)
             + lg(n - g + 1) - lg(d - vs + 1) - lg(n - g - d + vs + 1)
             - lg(n + 1) + lg(d + 1) + lg(n - d + 1))
    return torch.where(ok, torch.exp(log_p), 0.0)


def none_in_first(size: Tensor, marked: Tensor, slots: Tensor) -> Tensor:
    """Probability that none of ``marked`` items of a uniformly shuffled group of ``size`` lands in
    its first ``slots`` places: C(size - marked, slots) / C(size, slots) (float64)."""
    n, t, m = (x.to(torch.float64) for x in torch.broadcast_tensors(size, marked, slots))
    m = m.clamp(min=0)
    ok = m <= n - t
    lg = torch.lgamma
    ms = torch.where(ok, m, 0.0)
    log_p = lg(n - t + 1) - lg(n - t - ms + 1) - lg(n + 1) + lg(n - ms + 1)
    return torch.where(ok, torch.exp(log_p), 0.0)


# ---- sampled tie orders (the VOC metrics under "expected") ---------------------------------------

def sampled_mean(ranked: RankedRelevant, score: Callable[[RankedRelevant, Tensor], Tensor], *,
                 relevant_to: int | None = None, samples: int = TIE_SAMPLES, seed: int = TIE_SEED,
                 first_query: int = 0) -> tuple[Tensor, Tensor]:
    """``(mean, variance_of_mean)`` per query of ``score(ranked, positions)`` over ``samples``
    uniformly random orders inside the tie groups that mix relevant and non-relevant items.

    ``score`` maps 0-based ranks of the relevant items (one row per query, ascending, padding
    huge) to per-query values. Queries without such a group (within the first ``relevant_to``
    ranks, when given) are scored once, exactly. Query i's orders come from a generator seeded
    with ``(seed, first_query + i)``, so a query's value does not depend on the other queries
    evaluated with it (block size changes nothing).
    """
    fixed = score(ranked, ranked.positions)
    below, relevant_below = ranked.tie_groups()
    size = ranked.at_or_below - below
    relevant = ranked.relevant_at_or_below - relevant_below
    mixed = ranked.valid & (size > 1) & (relevant < size)
    if relevant_to is not None:
        mixed &= below < relevant_to
    rows = mixed.any(dim=1).nonzero().squeeze(1).cpu()
    variance = torch.zeros_like(fixed)
    if rows.numel() == 0:
        return fixed, variance
    out = fixed.clone()
    arrays = [t.cpu().numpy() for t in (below, relevant_below, size, relevant, mixed)]
    width = max(below.shape[1], 1)
    chunk = max(1, 2**22 // (samples * width))  # bounds the (queries x samples, relevant) blocks
    for lo in range(0, len(rows), chunk):
        part = rows[lo:lo + chunk]
        pos = np.concatenate([_query_orders(*(a[int(q)] for a in arrays), samples,
                                            np.random.default_rng([seed, first_query + int(q)]))
                              for q in part])
        repeated = part.repeat_interleave(samples).to(ranked.at_or_below.device)
        values = score(_rows(ranked, repeated), torch.from_numpy(pos).to(ranked.at_or_below.device))
        values = values.reshape(len(part), samples).cpu()
        mean = values.mean(dim=1)
        spread = values.var(dim=1) if samples > 1 else torch.zeros_like(mean)
        where = part.to(out.device)
        out[where] = mean.to(out.device, out.dtype)
        variance[where] = (spread / samples).to(out.device, out.dtype)
    return out, variance


def _rows(ranked: RankedRelevant, rows: Tensor) -> RankedRelevant:
    pick = lambda t: None if t is None else t[rows]  # noqa: E731
    return RankedRelevant(ranked.distances[rows], ranked.at_or_below[rows], ranked.relevant_at_or_below[rows],
                          ranked.num_relevant[rows], ranked.gallery_size[rows], pick(ranked.below),
                          pick(ranked.relevant_below))


def _query_orders(below: np.ndarray, relevant_below: np.ndarray, size: np.ndarray, relevant: np.ndarray,
                  mixed: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """(samples, relevant items) 0-based ranks of one query's relevant items, each row one
    uniformly random order inside its mixed tie groups (relevant first elsewhere: exact there)."""
    j = np.arange(len(below))
    base = below + j - relevant_below
    pos = np.repeat(base[None, :], samples, axis=0)
    cols = np.flatnonzero(mixed)  # each group's relevant items are contiguous
    for first in cols[cols == relevant_below[cols]]:
        n, r = int(size[first]), int(relevant[first])
        pos[:, first:first + r] = below[first] + random_subset_rows(rng, n, r, samples)
    return pos


def random_subset_rows(rng: np.random.Generator, n: int, r: int, rows: int) -> np.ndarray:
    """(rows, r): each row a uniformly random r-subset of range(n), ascending (the slots holding
    the r smallest of n uniform keys; a linear-time partition, then a sort of r)."""
    if r >= n:
        return np.repeat(np.arange(n)[None, :], rows, axis=0)
    chosen = np.argpartition(rng.random((rows, n)), r - 1, axis=1)[:, :r]
    chosen.sort(axis=1)
    return chosen
