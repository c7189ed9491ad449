"""The zero-shot protocol shared by every method: which classes training may see, what is evaluated.

``data.zero_shot`` names a class split (a manifest such as ``sketchy_25``, or ``random:N:SEED``;
see :func:`sbirkit.data.splits.resolve_split`). Every sample of an unseen class belongs to the
test split; the trainer holds :func:`training_view`, seen classes only, of which
``data.zero_shot_val_classes`` may be held out as the validation split (model selection on
classes training never saw, as the unseen ones will be). Evaluation ranks unseen-class queries against unseen-class items (zero-shot, ZSL) or against
unseen items plus the seen-class items of the evaluated split (generalised zero-shot, GZSL), in
the four directions of ZSCMR (Chaudhuri et al., CVPRW 2020).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..data import SBIRDataset
from ..data.records import DataError, Sample
from ..data.splits import ClassSplit, resolve_split
from ..eval import DIRECTIONS, RetrievalResult, evaluate_retrieval
from ..eval import metrics as M
from .config import ConfigError

DEFAULT_METRICS: tuple[str, ...] = ("map", "p@100")
# published protocols that report more than mAP@all and P@100, in their own mAP@200 convention
PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    "sketchy_21": ("map", "p@100", "map@200:yelamarthi", "p@200"),  # Yelamarthi et al., ECCV 2018
}



def class_split(dataset: SBIRDataset, spec: str) -> ClassSplit:
    """The seen/unseen classes ``spec`` names for ``dataset`` (a manifest or ``random:N[:SEED]``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data.zero_shot: expected a split manifest name or random:N:SEED, got {spec!r}")
    try:
        return resolve_split(dataset, spec.strip())
    except (KeyError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"data.zero_shot: {str(exc).strip(chr(39) + chr(34))}") from None


def metrics_for(spec: str) -> tuple[str, ...]:
    """mAP@all and P@100; a protocol listed in ``PROTOCOL_METRICS`` adds its mAP@200 and P@200."""
    return PROTOCOL_METRICS.get(str(spec).strip(), DEFAULT_METRICS)


def assign_splits(dataset: SBIRDataset, split: ClassSplit, train_split: str | None,
                  test_split: str | None) -> SBIRDataset:
    """A view where every unseen-class sample is in ``test_split`` and unsplit seen samples in ``train_split``.

    Unseen classes are never trained on, so all their samples are test items (the usual zero-shot
    SBIR protocol); seen-class samples keep their split (their test items form the GZSL gallery).
    """
    if test_split is None:
        raise DataError("data.test_split: expected a split name for the unseen classes under data.zero_shot, got null")
    unseen = set(split.unseen_indices(dataset))

    def assign(sample: Sample) -> str | None:
        if sample.class_index in unseen:
            return test_split
        return sample.split if sample.split is not None else train_split

    return dataset.with_split(assign)


def seen_view(dataset: SBIRDataset, split: ClassSplit) -> SBIRDataset:
    """The samples of seen classes only: all that training, model selection and fitting may read."""
    seen = set(split.seen_indices(dataset))
    return dataset.subset(s for s in dataset.samples if s.class_index in seen)


def training_view(dataset: SBIRDataset, data: Mapping[str, Any],
                  seed: int = 0) -> tuple[SBIRDataset, ClassSplit | None, tuple[str, ...]]:
    """What a trainer may hold: ``(dataset, class split, validation classes)``.

    Without ``data.zero_shot`` the dataset is returned as is. With it, only seen classes remain,
    and ``data.zero_shot_val_classes`` > 0 turns that many of them into the validation split.
    """
    count = int(data.get("zero_shot_val_classes") or 0)
    if not data.get("zero_shot"):
        if count:
            raise ConfigError("data.zero_shot_val_classes: expected 0 without data.zero_shot (it holds out seen classes)")
        return dataset, None, ()
    split = class_split(dataset, data["zero_shot"])
    view = seen_view(dataset, split)
    held: tuple[str, ...] = ()
    if count:
        held = validation_classes(split, count, seed)
        view = hold_out_validation_classes(view, held, data.get("train_split"), data.get("val_split"))
    return view, split, held


def validation_classes(split: ClassSplit, count: int, seed: int = 0) -> tuple[str, ...]:
    """``count`` seen classes held out for model selection, chosen by a seeded permutation."""
    if not 0 < count < len(split.seen) - 1:
        raise ValueError(f"data.zero_shot_val_classes: expected 0 (off) or 1..{len(split.seen) - 2} "
                         f"(of the {len(split.seen)} seen classes), got {count}")
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A11]).permutation(len(split.seen))
    return tuple(split.seen[i] for i in sorted(order[:count]))


def hold_out_validation_classes(dataset: SBIRDataset, names: Iterable[str], train_split: str | None,
                                val_split: str) -> SBIRDataset:
    """Zero-shot model selection: the non-test samples of classes ``names`` become ``val_split``
    (ranked among themselves, as unseen classes will be); the val samples of the other classes
    join ``train_split``. The held-out classes are then absent from training."""
    if val_split is None:
        raise DataError("data.val_split: expected a split name for data.zero_shot_val_classes, got null")
    held = {dataset.class_index(n) for n in names}

    def assign(sample: Sample) -> str | None:
        if sample.split not in (train_split, val_split):
            return sample.split
        return val_split if sample.class_index in held else train_split

    return dataset.with_split(assign)


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


def evaluate_run_zero_shot(config: Mapping[str, Any], dataset: SBIRDataset, data: Mapping[str, Any], split: str,
                           directions: Sequence[str], gzsl: bool,
                           embed: Callable[[Sequence[Sample]], tuple[np.ndarray, np.ndarray, list]],
                           ) -> tuple[dict[str, RetrievalResult], dict[str, Any]]:
    """Zero-shot evaluation of a trained run: (results per direction, the protocol record).

    ``embed(samples)`` returns ``(embeddings, labels, instances)`` for samples of one modality.
    With ``eval.binary_bits`` > 0, ITQ (:mod:`sbirkit.engine.itq`) is fitted on the seen-class
    samples of the training split only and its Hamming-ranking rows are added, labelled.
    """
    from .itq import fit_itq

    cs = class_split(dataset, data["zero_shot"])
    unseen = set(cs.unseen_indices(dataset))
    sketches, photos = dataset.sketches(split), dataset.photos(split)
    if not gzsl:
        sketches = [s for s in sketches if s.class_index in unseen]
        photos = [p for p in photos if p.class_index in unseen]
    n_unseen = {"sketch": sum(s.class_index in unseen for s in sketches),
                "photo": sum(p.class_index in unseen for p in photos)}
    if not n_unseen["sketch"] and not n_unseen["photo"]:
        raise DataError(f"{dataset.name}: split {split!r}: expected samples of the {len(cs.unseen)} unseen classes of "
                        f"{cs.name}, got none (splits: {', '.join(dataset.splits)})")
    usable = [d for d in directions if all(n_unseen[side] for side in d.split("2"))]
    if not usable:
        raise DataError(f"{dataset.name}: split {split!r}: none of the directions {list(directions)} has unseen-class "
                        f"queries and gallery items ({n_unseen['sketch']} sketches, {n_unseen['photo']} photos)")
    ev = config["eval"]
    metrics = metrics_for(data["zero_shot"])
    s_emb, s_lab, _ = embed(sketches) if sketches else (np.zeros((0, 1), np.float32), np.zeros(0, np.int64), [])
    p_emb, p_lab, _ = embed(photos) if photos else (np.zeros((0, 1), np.float32), np.zeros(0, np.int64), [])
    results = evaluate_zero_shot(s_emb, s_lab, p_emb, p_lab, unseen, gzsl=gzsl, directions=usable,
                                 metrics=metrics, distance=ev["distance"])
    bits = int(ev.get("binary_bits") or 0)
    itq_record = None
    if bits > 0:
        train_split = data.get("train_split")
        seen = set(cs.seen_indices(dataset))
        fit_samples = [[s for s in dataset.sketches(train_split) if s.class_index in seen],
                       [p for p in dataset.photos(train_split) if p.class_index in seen]]
        fit = [embed(group)[0] for group in fit_samples if group]
        if not fit:
            raise DataError(f"eval.binary_bits: expected seen-class samples in split {train_split!r} to fit ITQ, got none")
        itq = fit_itq(np.concatenate(fit), bits=bits, seed=int(config.get("seed") or 0))
        s_codes = itq.encode(s_emb) if len(s_emb) else s_emb
        p_codes = itq.encode(p_emb) if len(p_emb) else p_emb
        results.update(evaluate_zero_shot(s_codes, s_lab, p_codes, p_lab, unseen, gzsl=gzsl, directions=usable,
                                          metrics=metrics, distance="euclidean",
                                          labels_suffix=f" ({bits}-bit ITQ, Hamming)"))
        itq_record = {"bits": bits, "fitted_on": f"{sum(len(f) for f in fit)} seen-class embeddings of split "
                      f"{train_split!r} (sketches and photos; no unseen-class sample, no labels)",
                      "ranking": "Hamming distance = squared euclidean distance of the ±1 codes / 4; ties as below"}
    chance = chance_levels(s_lab, p_lab, unseen, gzsl, usable)
    setting = "generalised zero-shot (GZSL)" if gzsl else "zero-shot (ZSL)"
    gallery = (f"{setting}, split {cs.name} ({len(cs.seen)} seen / {len(cs.unseen)} unseen classes): queries = "
               f"unseen-class samples of split {split!r} (sketches: {n_unseen['sketch']}, photos: {n_unseen['photo']}); "
               + ("gallery = every sample of that split, unseen and seen classes "
                  f"(sketches: {len(sketches)}, photos: {len(photos)})" if gzsl else "gallery = the same unseen-class samples")
               + "; same-modality directions exclude the query itself; chance (random ranking, P@K ~ mAP): "
               + ", ".join(f"{d} {v:.3f}" for d, v in chance.items())
               + "".join(f"; skipped {d}: no unseen-class items on one side" for d in directions if d not in usable))
    protocol = {
        "dataset": data["name"],
        "root": data.get("root"),
        "split": split,
        "setting": "gzsl" if gzsl else "zsl",
        "zero_shot": {"spec": data["zero_shot"], "name": cs.name, "seen": list(cs.seen), "unseen": list(cs.unseen)},
        "queries": {"sketch": n_unseen["sketch"], "photo": n_unseen["photo"]},
        "gallery_items": {"sketch": len(sketches), "photo": len(photos)},
        "gallery": gallery,
        "directions": usable,
        "skipped_directions": [d for d in directions if d not in usable],
        "metrics": list(metrics),
        "distance": ev["distance"],
        "chance": chance,
        "chance_note": "expected P@K of a random ranking (mean fraction of relevant gallery items); mAP is about the same",
        "binary": itq_record,
        "instance_level": False,
    }
    return results, protocol
