"""Locating relevant items in sorted rows: the NumPy (CPU) and torch backends agree with a plain
count, with ties, signed zeros, padding and the threaded path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbirkit.eval import ranking


def _plain_counts(dist: np.ndarray, rel: np.ndarray):
    """Per query, per relevant item (ascending): #items <= it, #relevant items <= it, #items < it
    and #relevant items < it."""
    out = []
    for d, r in zip(dist, rel):
        values = np.sort(d[r])
        out.append(([(d <= v).sum() for v in values], [(values <= v).sum() for v in values],
                    [(d < v).sum() for v in values], [(values < v).sum() for v in values]))
    return out


def _check(ranked, expected):
    for i, (at, rel_at, below, rel_below) in enumerate(expected):
        n = len(at)
        assert int(ranked.num_relevant[i]) == n
        assert ranked.at_or_below[i, :n].tolist() == at
        assert ranked.relevant_at_or_below[i, :n].tolist() == rel_at
        assert ranked.below[i, :n].tolist() == below
        assert ranked.relevant_below[i, :n].tolist() == rel_below
        # positions: ascending, relevant last (first) inside a tie, within the gallery
        for pos in (ranked.positions[i, :n], ranked.optimistic_positions[i, :n]):
            assert torch.all(pos[1:] > pos[:-1]) and (n == 0 or int(pos[-1]) < ranked.gallery_size[i])
        assert torch.all(ranked.optimistic_positions[i, :n] <= ranked.positions[i, :n])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("shape", [(7, 40), (40, 2000)])  # the second takes the threaded path
def test_rank_relevant_matches_plain_counts(monkeypatch, backend, shape):
    if backend == "torch":
        monkeypatch.setattr(ranking, "_numpy_backend", lambda t: False)
    rng = np.random.default_rng(sum(shape))
    dist = (rng.integers(-4, 5, size=shape) / 4).astype(np.float32)  # many ties, signed zeros
    dist[dist == 0] = np.where(rng.random((dist == 0).sum()) < 0.5, -0.0, 0.0)
    rel = rng.random(shape) < 0.3
    rel[0] = False
    ranked = ranking.rank_relevant(torch.from_numpy(dist), torch.from_numpy(rel))
    _check(ranked, _plain_counts(dist, rel))


def test_backends_agree_and_sort_in_place(monkeypatch):
    rng = np.random.default_rng(1)
    dist = torch.from_numpy(rng.standard_normal((33, 3000)).astype(np.float32))
    dist[:, 100:110] = dist[:, :1]  # exact ties
    rel = torch.from_numpy(rng.random((33, 3000)) < 0.2)
    fast = ranking.rank_relevant(dist, rel)
    monkeypatch.setattr(ranking, "_numpy_backend", lambda t: False)
    slow = ranking.rank_relevant(dist, rel)
    for name in ("distances", "at_or_below", "relevant_at_or_below", "num_relevant", "positions", "below",
                 "relevant_below", "optimistic_positions"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
    monkeypatch.undo()
    rows = dist.clone()
    out = ranking.sort_rows_(rows)
    assert out.data_ptr() == rows.data_ptr()  # in place on CPU
    assert torch.equal(out, torch.sort(dist, dim=1).values)


def test_absent_items_at_inf_are_not_counted():
    dist = torch.tensor([[0.3, float("inf"), 0.1, 0.3]])
    rel = torch.tensor([[True, True, False, True]])
    ranked = ranking.rank_relevant(dist, rel)
    assert ranked.num_relevant.tolist() == [2] and ranked.gallery_size.tolist() == [3]
    assert ranked.at_or_below[0, :2].tolist() == [3, 3]
    assert ranked.positions[0, :2].tolist() == [1, 2]
    assert ranked.count_in_top(1).tolist() == [0] and ranked.count_in_top(2).tolist() == [1]
    assert ranked.below[0, :2].tolist() == [1, 1] and ranked.optimistic_positions[0, :2].tolist() == [1, 2]


def test_pessimistic_needs_no_tie_groups():
    ranked = ranking.rank_relevant(torch.tensor([[0.3, 0.3, 0.1]]), torch.tensor([[True, False, True]]),
                                   with_below=False)
    assert ranked.below is None and ranked.positions[0].tolist() == [0, 2]
