"""``Evaluator``: the one path from a model and samples to retrieval metrics.

The trainer's periodic validation, :func:`sbirkit.engine.evaluate.evaluate_run` (``sbirkit
eval``), the zero-shot protocol and the demo all embed through an ``Evaluator`` and score through
a :class:`~sbirkit.engine.protocols.Protocol`. It embeds each set of samples once, from images or
from the run's feature cache, with the method's encoder or one handed in (an adapted encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data.records import Sample
from . import embedding

Embedded = tuple[np.ndarray, np.ndarray, list]  # (N×D float32 embeddings, class labels, instance ids)


class Evaluator:
    """Embeds samples of ``dataset`` with ``encoder`` (see the module docstring).

    ``features``: a :class:`~sbirkit.engine.feature_cache.FeatureStore` when the run trains on
    cached backbone features; samples are then embedded from the cache through the heads.
    """

    def __init__(self, encoder: torch.nn.Module, dataset: Any, *, batch_size: int = 128,
                 device: str | torch.device | None = None, features: Any | None = None, progress: bool = False,
                 dist: Any | None = None):
        from .distributed import SINGLE

        self.encoder, self.dataset = encoder, dataset
        self.batch_size, self.features, self.progress = int(batch_size), features, progress
        self.dist = dist if dist is not None else SINGLE
        self.device = torch.device(device) if device is not None else \
            next(iter(encoder.parameters()), torch.empty(0)).device

    def embed(self, samples: Sequence[Sample], encoder: torch.nn.Module | None = None) -> Embedded:
        """``(embeddings, labels, instances)`` of samples of one modality, in order."""
        encoder = encoder if encoder is not None else self.encoder
        samples = list(samples)
        if self.features is not None:  # cheap from the cache: every rank embeds all (nothing is written)
            return self.features.embedder(encoder, self.dataset)(samples)
        if not self.dist.enabled:
            return embedding.embed_samples(encoder, self.dataset, samples, self.batch_size, self.device, self.progress)
        # torchrun: each rank embeds its contiguous share; every rank gets all of them, in order
        from .distributed import all_gather_objects

        bounds = np.linspace(0, len(samples), self.dist.world_size + 1).round().astype(int)
        mine = samples[bounds[self.dist.rank]:bounds[self.dist.rank + 1]]
        emb = embedding.embed_samples(encoder, self.dataset, mine, self.batch_size, self.device, self.progress)[0]
        parts = all_gather_objects(emb, self.dist)
        dim = int(getattr(encoder, "embed_dim", 0))
        embeddings = np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) else \
            np.zeros((0, dim), np.float32)
        return (embeddings, np.array([s.class_index for s in samples], dtype=np.int64),
                [s.instance_id for s in samples])

    def split(self, split: str | None) -> tuple[list[Sample], list[Sample]]:
        """``(sketches, photos)`` of a split."""
        return self.dataset.sketches(split), self.dataset.photos(split)

    def directions(self, sketches: Sequence[Sample], photos: Sequence[Sample], directions: Sequence[str],
                   distance: str, *, per_query: bool = False, encoder: torch.nn.Module | None = None,
                   **scoring: Any):
        """Embed both sides once and score every direction: ``(results, {"sketch": emb, "photo": emb},
        instance_level)``. Acc@K is added to cross-modal directions where sketches pair with photos.
        ``scoring``: more :func:`~sbirkit.eval.evaluate_retrieval` arguments (``ties``,
        ``no_relevant``, ``metrics``; see :func:`scoring_options`)."""
        from ..eval import evaluate_directions

        s_emb, s_lab, s_inst = self.embed(sketches, encoder)
        p_emb, p_lab, p_inst = self.embed(photos, encoder)
        fine = any(i is not None for i in s_inst) and any(i is not None for i in p_inst)
        results = evaluate_directions(s_emb, s_lab, p_emb, p_lab, directions=list(directions),
                                      sketch_instances=s_inst if fine else None,
                                      photo_instances=p_inst if fine else None, distance=distance,
                                      return_per_query=per_query, **scoring)
        return results, {"sketch": s_emb, "photo": p_emb}, fine


def scoring_options(ev: Any, metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """The scoring arguments an ``eval`` section sets (``ties``, ``no_relevant``), plus ``metrics``
    when given (``eval.metrics``, or a protocol preset's: :mod:`sbirkit.eval.presets`); those are
    then all that is reported (no Acc@K added to the cross-modal directions)."""
    out: dict[str, Any] = {"ties": getattr(ev, "ties", "expected"), "no_relevant": getattr(ev, "no_relevant", "exclude")}
    if metrics is not None:
        out["metrics"] = [m for m in metrics if not m.startswith("acc@")]
        out["fine_grained_metrics"] = [m for m in metrics if m.startswith("acc@")]
    return out


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``{"<direction>/<metric>": value}`` of a results dict (what validation logs and selects on)."""
    return {f"{d}/{k}": v for d, r in results.items() for k, v in r.metrics.items()}
