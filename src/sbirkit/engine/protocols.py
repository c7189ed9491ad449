"""Evaluation protocols as objects: what training may see, and how a split is scored.

A :class:`Protocol` gives the trainer its *training view* of the dataset and runs evaluation
through an :class:`~sbirkit.engine.evaluator.Evaluator`, returning the results and a record of
the protocol (queries, gallery, conventions) that ``eval.json`` keeps beside the numbers.

* :class:`StandardProtocol`: every sample of the split is a query and a gallery item;
  same-modality directions leave the query out; Acc@K where sketches pair with photos.
* :class:`~sbirkit.engine.zero_shot.ZeroShotProtocol` (``data.zero_shot``): training sees seen
  classes only; evaluation ranks the unseen classes (ZSL) or everything (GZSL).

:func:`create_protocol` picks one from a config's ``data`` section. The class/instance splitting
itself (zero-shot splits, ``val_fraction``) lives in :mod:`sbirkit.data.splits`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, DataError
from ..eval import DEFAULT_METRICS
from .evaluator import Evaluator, flat_metrics, scoring_options
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
        results, _, _ = evaluator.directions(sketches, photos, ev.directions, ev.distance, **scoring_options(ev))
        return flat_metrics(results)

    def evaluate(self, evaluator: Evaluator, split: str, directions: Sequence[str], ev: EvalOptions, *,
                 gzsl: bool = False, per_query: bool = False) -> Evaluation:
        """Score ``split`` (``ev``: the eval options; ``ev.ties``, ``ev.no_relevant`` and, when a
        preset set it, ``ev.metrics`` decide the scoring)."""
        raise NotImplementedError


class StandardProtocol(Protocol):
    """Every sample of the split is a query and a gallery item (see the module docstring)."""

    name = "standard"

    def evaluate(self, evaluator: Evaluator, split: str, directions: Sequence[str], ev: EvalOptions, *,
                 gzsl: bool = False, per_query: bool = False) -> Evaluation:
        if gzsl:
            raise ConfigError("gzsl: expected a run trained with data.zero_shot, this one has none")
        if ev.binary_bits:
            raise ConfigError("eval.binary_bits: ITQ rows are reported for zero-shot runs (data.zero_shot) only")
        sketches, photos = evaluator.split(split)
        dataset = evaluator.dataset
        if not sketches or not photos:
            raise DataError(f"{dataset.name}: split {split!r}: expected sketches and photos, got "
                            f"{len(sketches)} sketches and {len(photos)} photos "
                            f"(splits: {', '.join(map(str, dataset.splits)) or '(none)'})")
        results, embeddings, fine = evaluator.directions(sketches, photos, directions, ev.distance,
                                                         per_query=per_query,
                                                         **scoring_options(ev, ev.metrics))
        protocol = {
            "dataset": self.data.get("name"),
            "root": self.data.get("root"),
            "split": split,
            "queries": {"sketch": len(sketches), "photo": len(photos)},
            "gallery": f"every {split!r} sample of the target modality (photos: {len(photos)}, "
                       f"sketches: {len(sketches)}); same-modality directions exclude the query itself",
            "directions": list(directions),
            "distance": ev.distance,
            "ties": ev.ties,
            "no_relevant": ev.no_relevant,
            "instance_level": fine,
        }
        return Evaluation(results, protocol, embeddings)


def create_protocol(data: Mapping[str, Any], seed: int = 0) -> Protocol:
    """The protocol a ``data`` section implies: zero-shot with ``data.zero_shot``, else standard."""
    if data.get("zero_shot"):
        from .zero_shot import ZeroShotProtocol

        return ZeroShotProtocol(data, seed)
    if int(data.get("zero_shot_val_classes") or 0):
        raise ConfigError("data.zero_shot_val_classes: expected 0 without data.zero_shot (it holds out seen classes)")
    return StandardProtocol(data, seed)
