"""Where each query's relevant items fall in its ranking, from one values-only sort per row.

Retrieval metrics need, for every relevant item, how many gallery items and how many relevant
items lie at or below its distance, and (for the tie policies other than pessimistic) strictly
below it: together they give the tie group [below, at_or_below) the item belongs to. Sorting the
(query, gallery) distance rows by value (no indices) and binary-searching the few relevant
distances in them gives exactly that. ``RankedRelevant`` holds the result;
:mod:`sbirkit.eval.metrics` computes every metric from it (:mod:`sbirkit.eval.ties` the
tie-order expectations).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

_executor: tuple[int, ThreadPoolExecutor] | None = None
_PAST_END = 2**62  # position given to padding entries: past any real rank


@dataclass
class RankedRelevant:
    """Each query's relevant items in rank order (one row per query, padded with +inf).

    ``distances``: the relevant items' distances, ascending; ``at_or_below``: how many gallery
    items have a distance <= each one (the rank of its tie group's last member; a huge value
    for padding, which puts padding past every rank);
    ``relevant_at_or_below``: how many relevant items do; ``num_relevant`` and ``gallery_size``
    per query. Entries at or past ``num_relevant`` are padding. ``below`` and
    ``relevant_below`` (None unless asked for: ``locate(with_below=True)``) count the gallery
    and relevant items strictly below: the item's tie group holds ``at_or_below - below`` items,
    ``relevant_at_or_below - relevant_below`` of them relevant.
    """

    distances: Tensor
    at_or_below: Tensor
    relevant_at_or_below: Tensor
    num_relevant: Tensor
    gallery_size: Tensor
    below: Tensor | None = None
    relevant_below: Tensor | None = None

    @cached_property
    def valid(self) -> Tensor:
        """(queries, N) mask of real (non-padding) entries."""
        j = torch.arange(self.distances.shape[1], device=self.distances.device)
        return j[None, :] < self.num_relevant[:, None]

    @cached_property
    def positions(self) -> Tensor:
        """0-based rank of each relevant item when, inside a tie group, relevant items come after
        the non-relevant ones (ties count against the query): at_or_below - relevant_at_or_below
        + j. Ascending along each row; padding holds a huge value."""
        j = torch.arange(self.distances.shape[1], device=self.distances.device)
        return (self.at_or_below - self.relevant_at_or_below).add_(j[None, :])

    @cached_property
    def optimistic_positions(self) -> Tensor:
        """0-based rank of each relevant item when, inside a tie group, relevant items come first:
        below + j - relevant_below. Ascending along each row; padding holds a huge value."""
        below, relevant_below = self.tie_groups()
        j = torch.arange(self.distances.shape[1], device=self.distances.device)
        return (below - relevant_below).add_(j[None, :])

    def tie_groups(self) -> tuple[Tensor, Tensor]:
        """``(below, relevant_below)``; a ValueError if they were not computed."""
        if self.below is None or self.relevant_below is None:
            raise ValueError("RankedRelevant: below/relevant_below were not computed; "
                             "expected locate(..., with_below=True) for this tie policy")
        return self.below, self.relevant_below

    def count_in_top(self, k: int | Tensor, positions: Tensor | None = None) -> Tensor:
        """Per query, how many relevant items rank in the top ``k`` (an int, or one per query),
        at ``positions`` (default: the pessimistic ones, :attr:`positions`)."""
        positions = self.positions if positions is None else positions
        bound = _per_query(k, positions)
        return torch.searchsorted(positions, bound).squeeze(1)


def _per_query(k: int | Tensor, like: Tensor) -> Tensor:
    """``k`` as a (queries, 1) tensor of ``like``'s dtype and device."""
    if isinstance(k, Tensor):
        return k.to(like.device, like.dtype).reshape(-1, 1)
    return torch.full((like.shape[0], 1), int(k), dtype=like.dtype, device=like.device)


def locate(rows: Tensor, relevant_distances: Tensor, gallery_size: Tensor | int,
           num_relevant: Tensor | None = None, *, with_below: bool = False) -> tuple[RankedRelevant, Tensor]:
    """Sort ``rows`` and ``relevant_distances`` (per query; +inf = padding or excluded) and
    locate each relevant distance in its sorted row; return that and the sorted rows.
    ``with_below`` also counts the items strictly below each relevant distance (its tie group's
    start; only the few tied distances need a second search on the CPU path).

    On CPU each row is sorted and searched with NumPy (SIMD sort; binary search that reuses the
    previous bound for sorted keys; several times faster than ``torch.sort``, which also builds
    indices, and ``torch.searchsorted``), rows split over ``torch.get_num_threads()`` threads
    (NumPy releases the GIL). Elsewhere ``torch.sort`` and ``torch.searchsorted``.
    """
    if rows.shape[0] != relevant_distances.shape[0] or rows.dtype != relevant_distances.dtype:
        raise ValueError(
            f"relevant_distances: expected {rows.shape[0]} rows of {rows.dtype}, got "
            f"{relevant_distances.shape[0]} of {relevant_distances.dtype}"
        )
    if _numpy_backend(rows):  # sorted in place
        rows, relevant_distances = rows.contiguous(), relevant_distances.contiguous()
        at_or_below = torch.empty(relevant_distances.shape, dtype=torch.int64)
        relevant_at_or_below = torch.empty_like(at_or_below)
        below = torch.empty_like(at_or_below) if with_below else None
        relevant_below = torch.empty_like(at_or_below) if with_below else None
        arrays = (rows.numpy(), relevant_distances.numpy(), at_or_below.numpy(),
                  relevant_at_or_below.numpy(), None if below is None else below.numpy(),
                  None if relevant_below is None else relevant_below.numpy())
        _over_rows(_sort_and_search, rows.shape[0], rows.numel(), arrays)
    else:
        rows = torch.sort(rows, dim=1).values
        relevant_distances = torch.sort(relevant_distances, dim=1).values
        padding = torch.isinf(relevant_distances)
        at_or_below = torch.searchsorted(rows, relevant_distances, right=True)
        at_or_below.masked_fill_(padding, _PAST_END)
        relevant_at_or_below = torch.searchsorted(relevant_distances, relevant_distances, right=True)
        below = relevant_below = None
        if with_below:
            below = torch.searchsorted(rows, relevant_distances).masked_fill_(padding, _PAST_END)
            relevant_below = torch.searchsorted(relevant_distances, relevant_distances)
    if num_relevant is None:
        num_relevant = torch.isfinite(relevant_distances).sum(dim=1)
    if not isinstance(gallery_size, Tensor):
        gallery_size = torch.full_like(num_relevant, int(gallery_size))
    ranked = RankedRelevant(relevant_distances, at_or_below, relevant_at_or_below, num_relevant,
                            gallery_size, below, relevant_below)
    return ranked, rows


def rank_relevant(distances: Tensor, relevant: Tensor, *, with_below: bool = True) -> RankedRelevant:
    """:class:`RankedRelevant` from a dense (queries, gallery) distance matrix and relevance mask.

    An item at +inf distance is treated as absent (this is how a query is removed from its own
    ranking); other distances must be finite. ``with_below`` (default here) also locates each
    relevant item's tie group, which every tie policy but pessimistic needs.
    """
    if distances.dim() != 2 or distances.shape != relevant.shape:
        raise ValueError(
            f"expected two (queries, gallery) matrices of one shape, got {tuple(distances.shape)} "
            f"and {tuple(relevant.shape)}"
        )
    if torch.isnan(distances).any() or torch.isneginf(distances).any():
        raise ValueError("distances: expected finite values (or +inf for an absent item)")
    inf = torch.tensor(float("inf"), dtype=distances.dtype, device=distances.device)
    present = ~torch.isinf(distances)
    relevant = relevant.to(torch.bool) & present
    width = int(relevant.sum(dim=1).max()) if relevant.numel() else 0
    chosen = torch.sort(torch.where(relevant, distances, inf), dim=1).values[:, :width]
    return locate(distances.detach().clone(), chosen.detach().contiguous(), present.sum(dim=1),
                  with_below=with_below)[0]


def sort_rows_(rows: Tensor) -> Tensor:
    """Sort each row of a matrix by value, in place when it is a contiguous CPU tensor (NumPy's
    SIMD sort, rows split over the torch thread count), else with ``torch.sort``; return it."""
    if not _numpy_backend(rows) or not rows.is_contiguous():
        return torch.sort(rows, dim=1).values
    _over_rows(_sort_only, rows.shape[0], rows.numel(), (rows.numpy(),))
    return rows


def _numpy_backend(t: Tensor) -> bool:
    return t.device.type == "cpu"


def _sort_only(lo: int, hi: int, rows: np.ndarray) -> None:
    rows[lo:hi].sort(axis=1)


def _sort_and_search(lo: int, hi: int, rows: np.ndarray, relevant: np.ndarray,
                     at_or_below: np.ndarray, relevant_at_or_below: np.ndarray,
                     below: np.ndarray | None, relevant_below: np.ndarray | None) -> None:
    rows[lo:hi].sort(axis=1)
    relevant[lo:hi].sort(axis=1)
    width = relevant.shape[1]
    counts = np.arange(width + 1)
    tied_rows = []  # rows where two relevant distances are equal (rare with float embeddings)
    for i in range(lo, hi):
        row, values = rows[i], relevant[i]
        at = at_or_below[i]
        np.copyto(at, np.searchsorted(row, values, side="right"))
        real = int(np.searchsorted(values, np.inf))
        # Relevant items at or below / strictly below the j-th: j + 1 / j unless relevant
        # distances tie (fixed below); padding (+inf) counts every relevant item / the real ones.
        relevant_at_or_below[i, :real] = counts[1:real + 1]
        relevant_at_or_below[i, real:] = width
        if relevant_below is not None:
            relevant_below[i, :real] = counts[:real]
            relevant_below[i, real:] = real
        if real > 1 and bool(np.any(values[1:real] == values[:real - 1])):
            tied_rows.append(i)
        if below is not None:
            # An item starts its tie group unless the item before it is equal (a cheap gather);
            # only the tied ones need the second binary search.
            start = below[i]
            np.subtract(at, 1, out=start)
            tied = np.flatnonzero(row.take(at[:real] - 2, mode="clip") == values[:real])
            tied = tied[at[tied] >= 2]
            if tied.size:  # one search per distinct distance (binary codes: a few dozen per row)
                tied_values = values[tied]
                new = np.empty(tied.size, dtype=bool)
                new[0] = True
                np.not_equal(tied_values[1:], tied_values[:-1], out=new[1:])
                firsts = np.flatnonzero(new)
                left = np.searchsorted(row, tied_values[firsts], side="left")
                start[tied] = np.repeat(left, np.diff(firsts, append=tied.size))
            start[real:] = _PAST_END
        at[real:] = _PAST_END  # padding
    if tied_rows:
        _tied_relevant_counts(relevant[tied_rows], tied_rows, relevant_at_or_below, relevant_below)


def _tied_relevant_counts(values: np.ndarray, rows: list[int], relevant_at_or_below: np.ndarray,
                          relevant_below: np.ndarray | None) -> None:
    """Relevant items at or below each one (1 + the index of the last item equal to it) and
    strictly below it (the index of the first equal one), for rows whose relevant distances tie."""
    width = values.shape[1]
    last = np.ones(values.shape, dtype=bool)
    np.not_equal(values[:, 1:], values[:, :-1], out=last[:, :-1])
    marks = np.where(last, np.arange(1, width + 1), width)
    relevant_at_or_below[rows] = np.minimum.accumulate(marks[:, ::-1], axis=1)[:, ::-1]
    if relevant_below is not None:
        first = np.ones(values.shape, dtype=bool)
        np.not_equal(values[:, 1:], values[:, :-1], out=first[:, 1:])
        marks = np.where(first, np.arange(width), 0)
        relevant_below[rows] = np.maximum.accumulate(marks, axis=1)


def _over_rows(work, num_rows: int, size: int, arrays: tuple) -> None:
    """Run ``work(lo, hi, *arrays)`` over row ranges, one per torch thread (small jobs inline)."""
    threads = min(torch.get_num_threads(), num_rows)
    if threads <= 1 or size < 2**16:
        work(0, num_rows, *arrays)
        return
    step = -(-num_rows // threads)
    jobs = [_pool(threads).submit(work, lo, min(lo + step, num_rows), *arrays)
            for lo in range(0, num_rows, step)]
    for job in jobs:
        job.result()


def _pool(threads: int) -> ThreadPoolExecutor:
    global _executor
    if _executor is None or _executor[0] < threads:
        _executor = (threads, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sbirkit-sort"))
    return _executor[1]
