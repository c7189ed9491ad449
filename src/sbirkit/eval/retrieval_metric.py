"""``RetrievalMetric``: a thin stateful wrapper (torchmetrics-style) over :func:`evaluate_directions`.

Feed it batches of embeddings as they come out of the encoders; ``compute()`` concatenates them
and runs the functional engine once, so the values equal a single call on the whole set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..modality import Modality
from .retrieval import DIRECTIONS, RetrievalResult, evaluate_directions


class RetrievalMetric:
    """Accumulate sketch and photo embedding batches, then evaluate the chosen directions."""

    def __init__(self, directions: Iterable[str] = DIRECTIONS, **evaluate_kwargs: Any):
        self.directions = tuple(directions)
        unknown = [d for d in self.directions if d not in DIRECTIONS]
        if unknown:
            raise ValueError(f"directions: expected names from {DIRECTIONS}, got {unknown}")
        self.evaluate_kwargs = evaluate_kwargs
        self.reset()

    def reset(self) -> None:
        self._emb: dict[str, list[Tensor]] = {"sketch": [], "photo": []}
        self._labels: dict[str, list[Any]] = {"sketch": [], "photo": []}
        self._instances: dict[str, list[Any] | None] = {"sketch": [], "photo": []}

    def update(
        self, emb: Tensor | np.ndarray, labels: Any, instances: Any = None, modality: str = "sketch"
    ) -> None:
        """Add one batch: ``emb`` (batch, dim), a label per row, optional instance ids per row."""
        side = Modality.parse(modality).value
        emb = torch.as_tensor(emb).detach()
        if emb.dim() != 2:
            raise ValueError(f"emb: expected a (batch, dim) matrix, got shape {tuple(emb.shape)}")
        labels = _as_list(labels)
        if len(labels) != emb.shape[0]:
            raise ValueError(f"labels: expected {emb.shape[0]} entries (one per row), got {len(labels)}")
        seen = self._instances[side]
        if instances is None:
            if seen:
                raise ValueError(f"instances: earlier {side} batches had instance ids; this one has none")
            self._instances[side] = None
        else:
            if seen is None:
                raise ValueError(f"instances: earlier {side} batches had no instance ids; this one has")
            instances = _as_list(instances)
            if len(instances) != emb.shape[0]:
                raise ValueError(
                    f"instances: expected {emb.shape[0]} entries (one per row), got {len(instances)}"
                )
            seen.append(instances)
        self._emb[side].append(emb)
        self._labels[side].append(labels)

    def compute(self) -> dict[str, RetrievalResult]:
        """Evaluate every direction on everything seen since the last ``reset()``."""
        for direction in self.directions:
            for side in direction.split("2"):
                if not self._emb[side]:
                    raise ValueError(
                        f"RetrievalMetric.compute: direction {direction!r} needs {side} embeddings; "
                        "none were given to update()"
                    )
        data = {}
        for side in ("sketch", "photo"):
            if not self._emb[side]:
                data[side] = (None, None, None)
                continue
            emb = torch.cat([e.to(self._emb[side][0].device) for e in self._emb[side]])
            labels = [x for batch in self._labels[side] for x in batch]
            inst = self._instances[side]
            instances = None if not inst else [x for batch in inst for x in batch]
            data[side] = (emb, labels, instances)
        return evaluate_directions(
            data["sketch"][0], data["sketch"][1], data["photo"][0], data["photo"][1],
            self.directions,
            sketch_instances=data["sketch"][2],
            photo_instances=data["photo"][2],
            **self.evaluate_kwargs,
        )


def _as_list(values: Any) -> list[Any]:
    if isinstance(values, (Tensor, np.ndarray)):
        floating = values.is_floating_point() if isinstance(values, Tensor) else values.dtype.kind == "f"
        if floating:
            raise ValueError(f"labels/instances: expected integer or string ids, got {values.dtype}")
        return values.reshape(-1).tolist()
    return list(values)
