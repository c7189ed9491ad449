"""The protocol base class and what an evaluation returns (see :mod:`sbirkit.engine.protocols`).

Its own module so that the protocols (:mod:`.protocols`, :mod:`.zero_shot`) import it and
:func:`~sbirkit.engine.protocols.create_protocol` can import them without a circle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..eval import DEFAULT_METRICS
from .evaluator import Evaluator, flat_metrics
from .options import EvalOptions

FINE_GRAINED_METRICS = ("acc@1", "acc@5", "acc@10")


@dataclass
class Evaluation:
    """What a protocol's evaluation returns: results per direction, the protocol record, and the
    embeddings it scored (``{"sketch": ..., "photo": ...}``, in the split's sample order)."""

    results: dict[str, Any]
    protocol: dict[str, Any]
    embeddings: dict[str, Any] = field(default_factory=dict)


class Protocol:
    """Base class (see the module docstring)."""

    name = "protocol"

    def __init__(self, data: Mapping[str, Any], seed: int = 0):
        self.data, self.seed = dict(data), int(seed)  # the run seed (fitting at evaluation, e.g. ITQ)

    def training_view(self, dataset: Any, seed: int = 0) -> tuple[Any, dict[str, Any] | None]:
        """``(what the trainer may hold, a record for meta.json or None)``."""
        return dataset, None

    def metric_names(self, directions: Sequence[str], instance_level: bool) -> list[str]:
        """The ``<direction>/<metric>`` names validation produces (what ``eval.select`` may name)."""
        out = []
        for d in directions:
            cross = d.split("2")[0] != d.split("2")[1]
            out += [f"{d}/{m}" for m in (*DEFAULT_METRICS, *(FINE_GRAINED_METRICS if cross and instance_level else ()))]
        return out

    def validate(self, evaluator: Evaluator, split: str, ev: EvalOptions) -> dict[str, float]:
        """Validation numbers on ``split`` (``eval.directions``), flat: ``{"sketch2photo/map": ...}``.
        Empty when the split has no sketches or no photos."""
        sketches, photos = evaluator.split(split)
        if not sketches or not photos:
            return {}
        results, _, _ = evaluator.directions(sketches, photos, ev.directions, ev.distance)
        return flat_metrics(results)

    def evaluate(self, evaluator: Evaluator, split: str, directions: Sequence[str], ev: EvalOptions, *,
                 gzsl: bool = False, per_query: bool = False) -> Evaluation:
        raise NotImplementedError
