"""Evaluation protocols as objects: what training may see, and how a split is scored.

A :class:`Protocol` gives the trainer its *training view* of the dataset and runs evaluation
through an :class:`~sbirkit.engine.evaluator.Evaluator`, returning the results and a record of
the protocol (queries, gallery, conventions) that ``eval.json`` keeps beside the numbers.

* :class:`StandardProtocol`: every sample of the split is a query and a gallery item;
  same-modality directions leave the query out; Acc@K where sketches pair with photos.
* :class:`~sbirkit.engine.zero_shot.ZeroShotProtocol` (``data.zero_shot``): training sees seen
  classes only; evaluation ranks the unseen classes (ZSL) or everything (GZSL).

:func:`create_protocol` picks one from a config's ``data`` section. The base class and
:class:`Evaluation` live in :mod:`.protocol_base` (re-exported here), so both protocols import
them and this module imports the zero-shot one without a circle. The class/instance splitting
itself (zero-shot splits, ``val_fraction``) lives in :mod:`sbirkit.data.splits`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError, DataError
from .evaluator import Evaluator
from .options import EvalOptions
from .protocol_base import FINE_GRAINED_METRICS, Evaluation, Protocol

__all__ = ["FINE_GRAINED_METRICS", "Evaluation", "Protocol", "StandardProtocol", "create_protocol"]


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
                                                         per_query=per_query)
        protocol = {
            "dataset": self.data.get("name"),
            "root": self.data.get("root"),
            "split": split,
            "queries": {"sketch": len(sketches), "photo": len(photos)},
            "gallery": f"every {split!r} sample of the target modality (photos: {len(photos)}, "
                       f"sketches: {len(sketches)}); same-modality directions exclude the query itself",
            "directions": list(directions),
            "distance": ev.distance,
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
