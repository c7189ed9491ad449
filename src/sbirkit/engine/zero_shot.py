"""The zero-shot protocol shared by every method: which classes training may see, what is evaluated.

``data.zero_shot`` names a class split (a manifest such as ``sketchy_25``, or ``random:N:SEED``;
see :func:`sbirkit.data.splits.resolve_split`). Every sample of an unseen class belongs to the
test split; the trainer holds :meth:`ZeroShotProtocol.training_view`, seen classes only, of which
``data.zero_shot_val_classes`` may be held out as the validation split (model selection on
classes training never saw, as the unseen ones will be). Evaluation ranks unseen-class queries
against unseen-class items (zero-shot, ZSL) or against unseen items plus the seen-class items of
the evaluated split (generalised zero-shot, GZSL), in the four directions of ZSCMR (Chaudhuri
et al., CVPRW 2020). The splitting itself is :mod:`sbirkit.data.splits`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..data.splits import class_split, hold_out_validation_classes, seen_view, validation_classes
from ..errors import ConfigError, DataError
from ..eval import DIRECTIONS, RetrievalResult, evaluate_retrieval
from ..eval import metrics as M
from .evaluator import Evaluator
from .options import EvalOptions
from .protocol_base import Evaluation, Protocol

DEFAULT_METRICS: tuple[str, ...] = ("map", "p@100")
# published protocols that report more than mAP@all and P@100, in their own mAP@200 convention
PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    "sketchy_21": ("map", "p@100", "map@200:yelamarthi", "p@200"),  # Yelamarthi et al., ECCV 2018
}



def metrics_for(spec: str) -> tuple[str, ...]:
    """mAP@all and P@100; a protocol listed in ``PROTOCOL_METRICS`` adds its mAP@200 and P@200."""
    return PROTOCOL_METRICS.get(str(spec).strip(), DEFAULT_METRICS)


def _subset(values: np.ndarray | torch.Tensor, mask: np.ndarray):
    return values[torch.from_numpy(mask)] if isinstance(values, torch.Tensor) else values[mask]


def evaluate_zero_shot(sketch_emb: np.ndarray, sketch_labels: np.ndarray, photo_emb: np.ndarray,
                       photo_labels: np.ndarray, unseen: Iterable[int], *, gzsl: bool = False,
                       directions: Iterable[str] = DIRECTIONS, metrics: Sequence[str] = DEFAULT_METRICS,
                       distance: str = "cosine", labels_suffix: str = "") -> dict[str, RetrievalResult]:
    """Rank unseen-class queries in each direction; rows are every evaluated item of a modality.

    ZSL: the gallery is the unseen-class items. GZSL: every item given (unseen and seen classes).
    Same-modality directions remove the query from its own ranking. ``labels_suffix`` is added to
    the direction names (e.g. ``" (64-bit ITQ, Hamming)"``).
    """
    unseen = {int(c) for c in unseen}
    sides = {"sketch": (sketch_emb, np.asarray(sketch_labels)), "photo": (photo_emb, np.asarray(photo_labels))}
    results: dict[str, RetrievalResult] = {}
    for direction in directions:
        if direction not in DIRECTIONS:
            raise ValueError(f"directions: expected names from {DIRECTIONS}, got {direction!r}")
        q_side, g_side = direction.split("2")
        q_emb, q_lab = sides[q_side]
        g_emb, g_lab = sides[g_side]
        q_mask = np.isin(q_lab, list(unseen))
        g_mask = np.ones(len(g_lab), bool) if gzsl else np.isin(g_lab, list(unseen))
        if not q_mask.any() or not g_mask.any():
            raise DataError(f"zero-shot {direction}: expected unseen-class {q_side}s and a {g_side} gallery, got "
                            f"{int(q_mask.sum())} queries and {int(g_mask.sum())} gallery items")
        name = direction + labels_suffix
        if q_side != g_side:
            results[name] = evaluate_retrieval(_subset(q_emb, q_mask), _subset(g_emb, g_mask), q_lab[q_mask],
                                               g_lab[g_mask], metrics=metrics, distance=distance)
        elif not gzsl:
            results[name] = evaluate_retrieval(_subset(q_emb, q_mask), _subset(q_emb, q_mask), q_lab[q_mask],
                                               q_lab[q_mask], metrics=metrics, distance=distance, exclude_self=True)
        else:  # every item is in the gallery; score all with the self match removed, keep unseen queries
            full = evaluate_retrieval(q_emb, q_emb, q_lab, q_lab, metrics=metrics, distance=distance,
                                      exclude_self=True, return_per_query=True)
            keep = torch.from_numpy(q_mask)
            values, undefined = {}, {}
            for metric, per_query in full.per_query.items():
                values[metric], undefined[metric] = M.mean_defined(per_query[keep])
            results[name] = RetrievalResult(metrics=values, undefined=undefined, conventions=full.conventions,
                                            num_queries=int(q_mask.sum()), gallery_size=full.gallery_size,
                                            distance=full.distance, exclude_self=True, average=full.average)
    return results


def chance_levels(sketch_labels: np.ndarray, photo_labels: np.ndarray, unseen: Iterable[int], gzsl: bool,
                  directions: Iterable[str]) -> dict[str, float]:
    """Per direction, the mean fraction of relevant gallery items over the queries: the expected
    P@K of a random ranking (and, up to a small-gallery correction, its mAP)."""
    unseen = list({int(c) for c in unseen})
    sides = {"sketch": np.asarray(sketch_labels), "photo": np.asarray(photo_labels)}
    out = {}
    for direction in directions:
        q_side, g_side = direction.split("2")
        q, g = sides[q_side], sides[g_side]
        q = q[np.isin(q, unseen)]
        g = g if gzsl else g[np.isin(g, unseen)]
        counts = {int(c): int(n) for c, n in zip(*np.unique(g, return_counts=True))}
        same = q_side == g_side
        size = len(g) - int(same)
        out[direction] = float(np.mean([(counts.get(int(c), 0) - int(same)) / size for c in q])) if len(q) else 0.0
    return out


class ZeroShotProtocol(Protocol):
    """``data.zero_shot``: seen classes for training, unseen ones for evaluation (module docstring)."""

    name = "zero_shot"

    def __init__(self, data, seed: int = 0):
        super().__init__(data, seed)
        if not self.data.get("zero_shot"):
            raise ConfigError("data.zero_shot: expected a split manifest name or random:N:SEED, got null")
        self.spec = self.data["zero_shot"]

    def training_view(self, dataset, seed: int = 0):
        """Seen classes only; ``data.zero_shot_val_classes`` > 0 turns that many of them into the
        validation split. The record names the split, its classes and the validation classes."""
        split = class_split(dataset, self.spec)
        view = seen_view(dataset, split)
        count = int(self.data.get("zero_shot_val_classes") or 0)
        held: tuple[str, ...] = ()
        if count:
            held = validation_classes(split, count, seed)
            view = hold_out_validation_classes(view, held, self.data.get("train_split"), self.data.get("val_split"))
        self.class_split, self.val_classes = split, held
        record = {"spec": self.spec, "name": split.name, "seen": list(split.seen), "unseen": list(split.unseen),
                  "validation_classes": list(held)}
        return view, record

    def evaluate(self, evaluator: Evaluator, split: str, directions: Sequence[str], ev: EvalOptions, *,
                 gzsl: bool = False, per_query: bool = False) -> Evaluation:
        """Rank the unseen classes of ``split`` (ZSL), or against every item of it (GZSL). With
        ``eval.binary_bits`` > 0, ITQ (:mod:`sbirkit.eval.itq`) is fitted on the seen-class
        samples of the training split only and its Hamming-ranking rows are added, labelled."""
        from ..eval.itq import fit_itq

        dataset, data = evaluator.dataset, self.data
        cs = class_split(dataset, self.spec)
        unseen = set(cs.unseen_indices(dataset))
        sketches, photos = dataset.sketches(split), dataset.photos(split)
        if not gzsl:
            sketches = [s for s in sketches if s.class_index in unseen]
            photos = [p for p in photos if p.class_index in unseen]
        n_unseen = {"sketch": sum(s.class_index in unseen for s in sketches),
                    "photo": sum(p.class_index in unseen for p in photos)}
        if not n_unseen["sketch"] and not n_unseen["photo"]:
            raise DataError(f"{dataset.name}: split {split!r}: expected samples of the {len(cs.unseen)} unseen "
                            f"classes of {cs.name}, got none (splits: {', '.join(dataset.splits)})")
        usable = [d for d in directions if all(n_unseen[side] for side in d.split("2"))]
        if not usable:
            raise DataError(f"{dataset.name}: split {split!r}: none of the directions {list(directions)} has "
                            f"unseen-class queries and gallery items ({n_unseen['sketch']} sketches, "
                            f"{n_unseen['photo']} photos)")
        metrics = metrics_for(self.spec)
        empty = (np.zeros((0, 1), np.float32), np.zeros(0, np.int64), [])
        s_emb, s_lab, _ = evaluator.embed(sketches) if sketches else empty
        p_emb, p_lab, _ = evaluator.embed(photos) if photos else empty
        results = evaluate_zero_shot(s_emb, s_lab, p_emb, p_lab, unseen, gzsl=gzsl, directions=usable,
                                     metrics=metrics, distance=ev.distance)
        bits = int(ev.binary_bits or 0)
        itq_record = None
        if bits > 0:
            train_split = data.get("train_split")
            seen = set(cs.seen_indices(dataset))
            fit_samples = [[s for s in dataset.sketches(train_split) if s.class_index in seen],
                           [p for p in dataset.photos(train_split) if p.class_index in seen]]
            fit = [evaluator.embed(group)[0] for group in fit_samples if group]
            if not fit:
                raise DataError(f"eval.binary_bits: expected seen-class samples in split {train_split!r} to fit "
                                "ITQ, got none")
            itq = fit_itq(np.concatenate(fit), bits=bits, seed=self.seed)
            s_codes = itq.encode(s_emb) if len(s_emb) else s_emb
            p_codes = itq.encode(p_emb) if len(p_emb) else p_emb
            results.update(evaluate_zero_shot(s_codes, s_lab, p_codes, p_lab, unseen, gzsl=gzsl, directions=usable,
                                              metrics=metrics, distance="euclidean",
                                              labels_suffix=f" ({bits}-bit ITQ, Hamming)"))
            itq_record = {"bits": bits, "fitted_on": f"{sum(len(f) for f in fit)} seen-class embeddings of split "
                          f"{train_split!r} (sketches and photos; no unseen-class sample, no labels)",
                          "ranking": "Hamming distance = squared euclidean distance of the ±1 codes / 4; ties as "
                                     "below"}
        chance = chance_levels(s_lab, p_lab, unseen, gzsl, usable)
        setting = "generalised zero-shot (GZSL)" if gzsl else "zero-shot (ZSL)"
        gallery = (f"{setting}, split {cs.name} ({len(cs.seen)} seen / {len(cs.unseen)} unseen classes): queries = "
                   f"unseen-class samples of split {split!r} (sketches: {n_unseen['sketch']}, photos: "
                   f"{n_unseen['photo']}); "
                   + ("gallery = every sample of that split, unseen and seen classes "
                      f"(sketches: {len(sketches)}, photos: {len(photos)})" if gzsl
                      else "gallery = the same unseen-class samples")
                   + "; same-modality directions exclude the query itself; chance (random ranking, P@K ~ mAP): "
                   + ", ".join(f"{d} {v:.3f}" for d, v in chance.items())
                   + "".join(f"; skipped {d}: no unseen-class items on one side" for d in directions
                             if d not in usable))
        protocol = {
            "dataset": data["name"],
            "root": data.get("root"),
            "split": split,
            "setting": "gzsl" if gzsl else "zsl",
            "zero_shot": {"spec": self.spec, "name": cs.name, "seen": list(cs.seen), "unseen": list(cs.unseen)},
            "queries": {"sketch": n_unseen["sketch"], "photo": n_unseen["photo"]},
            "gallery_items": {"sketch": len(sketches), "photo": len(photos)},
            "gallery": gallery,
            "directions": usable,
            "skipped_directions": [d for d in directions if d not in usable],
            "metrics": list(metrics),
            "distance": ev.distance,
            "chance": chance,
            "chance_note": "expected P@K of a random ranking (mean fraction of relevant gallery items); mAP is about "
                           "the same",
            "binary": itq_record,
            "instance_level": False,
        }
        return Evaluation(results, protocol, {"sketch": s_emb, "photo": p_emb})
