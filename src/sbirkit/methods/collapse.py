"""Collapse monitors: is a shared feature extractor still spreading its inputs out?

A regulariser that pulls features together (a domain loss that F can satisfy by mapping everything
to one point, a classifier on nearly collinear features) can destroy retrieval while every logged
loss looks fine. These numbers, computed on a fixed probe batch at each validation, say so early:

* :func:`effective_rank` -- ``exp(H(p))`` with ``p`` the singular values of the row-normalised
  feature matrix divided by their sum (Roy & Vetterli, "The effective rank", EUSIPCO 2007): 1 when
  every feature points the same way, up to ``min(n, d)`` when they fill the space evenly. Rows are
  L2-normalised and *not* centred, so a collapse onto one point (or one direction) reads ~1 rather
  than the rank of the residual noise around it.
* :func:`mean_pairwise_distance` -- the mean Euclidean distance between distinct rows (unit
  embeddings: 0 when they coincide, sqrt(2) ~ 1.41 when orthogonal).
* :func:`mean_feature_cosine` -- the cosine between the mean sketch and the mean photo feature
  (the modality gap a domain regulariser should shrink: 1 = no gap in the means).
* :func:`gradient_norms` -- the norm of each loss term's gradient on a set of parameters (what each
  term asks of the feature extractor; a term whose gradient dwarfs the retrieval loss's acts
  unopposed).

:class:`CollapseWatch` turns the effective rank into a one-line warning when it falls below a
fraction (a third) of its starting value; :class:`MonitoredProtocol` adds a method's monitors to
each validation record (``metrics.jsonl``) without changing what the wrapped protocol scores.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..engine.protocols import Protocol

PREFIX = "monitor/"


def effective_rank(features: torch.Tensor) -> float:
    """``exp`` of the entropy of the normalised singular values of the L2-normalised rows."""
    x = F.normalize(torch.as_tensor(features).detach().double().flatten(1), dim=1)
    if x.shape[0] == 0:
        return float("nan")
    s = torch.linalg.svdvals(x)
    total = s.sum()
    if not bool(total > 0):
        return float("nan")
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mean_pairwise_distance(embeddings: torch.Tensor) -> float:
    """Mean Euclidean distance over the pairs of distinct rows (nan with fewer than two rows)."""
    x = torch.as_tensor(embeddings).detach().double().flatten(1)
    if len(x) < 2:
        return float("nan")
    return float(torch.pdist(x).mean())


def mean_feature_cosine(sketch_features: torch.Tensor, photo_features: torch.Tensor) -> float:
    """Cosine between the mean sketch feature and the mean photo feature."""
    s = torch.as_tensor(sketch_features).detach().double().flatten(1).mean(0)
    p = torch.as_tensor(photo_features).detach().double().flatten(1).mean(0)
    return float(F.cosine_similarity(s, p, dim=0))


def gradient_norms(terms: Mapping[str, torch.Tensor], params: Sequence[torch.Tensor]) -> dict[str, float]:
    """``{name: ||d term / d params||_2}`` for each term (graphs are kept until the last term);
    0 for a term that does not reach the parameters, nan with no parameter to take it on."""
    params = [p for p in params if p.requires_grad]
    out: dict[str, float] = {}
    names = list(terms)
    for i, name in enumerate(names):
        value = terms[name]
        if not params or not isinstance(value, torch.Tensor) or not value.requires_grad:
            out[name] = float("nan") if not params else 0.0
            continue
        grads = torch.autograd.grad(value, params, retain_graph=i < len(names) - 1, allow_unused=True)
        sq = sum(float(g.detach().double().pow(2).sum()) for g in grads if g is not None)
        out[name] = math.sqrt(sq)
    return out


class CollapseWatch:
    """Remembers the first effective rank of a run and warns once it falls below ``fraction`` of it.

    A resumed run recovers its starting value from the ``metrics.jsonl`` it logged it to (``log``).
    """

    def __init__(self, key: str = PREFIX + "effective_rank", fraction: float = 1.0 / 3.0,
                 log: str | Path | None = None):
        self.key, self.fraction, self.log = key, float(fraction), Path(log) if log is not None else None
        self.start: float | None = None
        self.start_step: int | None = None

    def _from_log(self) -> None:
        if self.log is None or not self.log.is_file():
            return
        for line in self.log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            value = rec.get(self.key) if isinstance(rec, dict) else None
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.start, self.start_step = float(value), rec.get("step")
                return

    def check(self, value: float, step: int | None = None) -> str | None:
        """The warning text when ``value`` is below ``fraction`` x the start, else None."""
        if value is None or not math.isfinite(value):
            return None
        if self.start is None:
            self._from_log()
        if self.start is None:
            self.start, self.start_step = float(value), step
            return None
        if value < self.fraction * self.start:
            where = f"step {step}: " if step is not None else ""
            return (f"{where}feature collapse: effective rank {value:.2f} fell below {self.fraction:.2g} of its start "
                    f"{self.start:.2f} (step {self.start_step}); see docs/adaptive_fg.md, 'Collapse monitors'")
        return None


class MonitoredProtocol(Protocol):
    """``inner``'s validation numbers plus ``monitor()``'s (prefixed ``monitor/``), and a ``warning``
    entry (also issued as a Python warning) when the watched effective rank collapses. Every other
    call goes to ``inner``, so evaluation and ``eval.select`` are unchanged."""

    def __init__(self, inner: Protocol, monitor: Callable[[Any, str], Mapping[str, float]],
                 watch: CollapseWatch | None = None, step: Callable[[], int | None] | None = None):
        self.inner, self.monitor, self.watch = inner, monitor, watch
        self.step = step or (lambda: None)
        self.data, self.seed, self.name = inner.data, inner.seed, inner.name

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def training_view(self, dataset: Any, seed: int = 0):
        return self.inner.training_view(dataset, seed)

    def metric_names(self, directions: Sequence[str], instance_level: bool) -> list[str]:
        return self.inner.metric_names(directions, instance_level)

    def evaluate(self, *args: Any, **kwargs: Any):
        return self.inner.evaluate(*args, **kwargs)

    def validate(self, evaluator: Any, split: str, ev: Any) -> dict[str, Any]:
        flat: dict[str, Any] = dict(self.inner.validate(evaluator, split, ev))
        if not flat:  # nothing to validate on (the trainer then skips the record): no monitors either
            return flat
        values = self.monitor(evaluator, split)
        flat.update({k if k.startswith(PREFIX) else PREFIX + k: float(v) for k, v in values.items()})
        if self.watch is not None:
            message = self.watch.check(flat.get(self.watch.key, float("nan")), self.step())
            if message:
                flat["warning"] = message
                warnings.warn(message, stacklevel=2)
        return flat


def finite_mean(values: Iterable[float]) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else float("nan")
