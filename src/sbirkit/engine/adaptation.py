"""The adaptation protocol: adapt on k support pairs of each task, then rank the task's queries.

The setting of Bhunia et al., "Adaptive Fine-Grained Sketch-Based Image Retrieval" (ECCV 2022):
a model meets a new category (category-level tasks, ``group_by="class"``) or a new person's
drawing style (user-level, ``group_by="user"``) with k sketch-photo pairs, adapts, and is then
scored on that category's or user's other sketches. docs/adaptive_fg.md states the protocol:

* a *task* is a group g (a class, or a user id) and a *draw* d of its support set: k (sketch, own
  photo) pairs of g in the split with k distinct photos, chosen by a generator seeded with
  ``(seed, g, d)``; the support triplets' negatives are the other support photos, plus
  ``negatives`` more photos of g's gallery that no support sketch shows (default: one when k = 1,
  else none);
* the **queries** are g's sketches whose photo is not a support photo: disjoint from the support
  sketches and from every sketch of a support photo; ``max_queries`` caps them (a seeded subset);
* the **gallery** is every photo of category g in the split (category level), or every photo of the
  split (user level); the support photos stay in it;
* the method's ``adapt(support) -> encoder`` adapts; queries and gallery are embedded with the
  adapted encoder through :meth:`~sbirkit.engine.evaluator.Evaluator.embed`, and Acc@1/5/10 is
  scored by :func:`sbirkit.eval.evaluate_retrieval` under the run's tie policy (``eval.ties``,
  default ``expected``: the probability that the true photo is within K when photos at its exact
  distance are ordered at random; ``pessimistic`` counts them all before it);
* reported: the mean over groups of each group's mean over its queries, averaged over the
  ``draws`` (>= 5 for reporting) with the standard deviation over draws as the spread
  (``acc@K:sd``); and a second row, the micro average over all queries of a draw.

:class:`AdaptationProtocol` is a :class:`~sbirkit.engine.protocols.Protocol`: a method returns one
from :meth:`~sbirkit.methods.base.Method.validation_protocol` (model selection on validation
tasks), and ``evaluate_run(run, protocol=protocol_for_run(run, k=5))`` (``sbirkit eval RUN --adapt 5
--tasks class``; :mod:`sbirkit.engine.adapt_run`, the runner's side) writes
``eval-<split>-<which>-adapt5-class.json``. It only needs the method to have ``adapt``;
:func:`sbirkit.engine.adapt_run.adapt_run` (``sbirkit adapt``) writes an adapted run folder.
"""

from __future__ import annotations

import functools
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.records import Sample
from ..data.samplers import group_user, task_group
from ..errors import ConfigError, DataError, UsageError
from ..eval import DEFAULT_TIES, TIE_POLICIES, RetrievalResult, evaluate_retrieval
from .evaluator import Evaluator
from .options import EvalOptions
from .protocols import FINE_GRAINED_METRICS, Evaluation, Protocol

GROUP_BY = ("class", "user")
Pair = tuple[Sample, Sample]


@dataclass(frozen=True)
class AdaptationTask:
    """One task of the protocol: a group, a draw of its support set, and what is scored."""

    group: str
    draw: int
    support: list[Pair]
    negatives: list[Sample]
    queries: list[Pair]
    gallery: list[Sample]


def _rng(seed: int, group: str, draw: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(group).encode()), int(draw), 0xADA])


def default_negatives(k: int) -> int:
    """Extra negative photos of a support set: none when the k >= 2 support photos are each other's
    negatives, one for a 1-shot support set (which has no other photo)."""
    return 1 if int(k) == 1 else 0


def draw_tasks(dataset: Any, split: str | None, group_by: str, k: int, draws: int, *,
               groups: Sequence[str] | None = None, negatives: int | None = None, max_queries: int | None = None,
               seed: int = 0, within_class: bool = False) -> tuple[list[AdaptationTask], dict[str, str]]:
    """The protocol's tasks (module docstring) and the groups left out, with the reason. With
    ``within_class`` (user tasks) a task is one user's sketches of one category (``"user/class"``),
    its gallery that category's photos; ``groups`` then names users."""
    if group_by not in GROUP_BY:
        raise ConfigError(f"group_by (--tasks): expected one of {', '.join(GROUP_BY)}, got {group_by!r}")
    if int(k) < 1:
        raise UsageError(f"k (--adapt): expected a positive integer, got {k}")
    if int(draws) < 1:
        raise UsageError(f"draws: expected a positive integer, got {draws}")
    within_class = bool(within_class) and group_by == "user"
    members: dict[str, list[Pair]] = defaultdict(list)
    for s, p in dataset.pairs(split):
        g = task_group(dataset, s, group_by, within_class)
        if g is not None:
            members[g].append((s, p))
    wanted = list(groups) if groups is not None else sorted(members)
    if within_class:
        users = set(wanted)
        unknown = sorted(users - {group_user(g, True) for g in members})
        if groups is not None and unknown:
            raise DataError(f"{dataset.name} split {split!r}: user {unknown[0]!r} has no (sketch, photo) pairs "
                            f"(users: {', '.join(sorted({group_user(g, True) for g in members}))})")
        wanted = [g for g in sorted(members) if group_user(g, True) in users]
    elif group_by == "class":
        def canon(name: str) -> str:
            try:
                return dataset.classes[dataset.class_index(name)]
            except KeyError:
                raise DataError(f"{dataset.name} split {split!r}: class {name!r} not found "
                                f"(classes: {', '.join(dataset.classes)})") from None

        wanted = [canon(g) for g in wanted]
    all_photos = dataset.photos(split)
    tasks: list[AdaptationTask] = []
    skipped: dict[str, str] = {}
    n_neg = default_negatives(k) if negatives is None else int(negatives)
    for g in wanted:
        pool = members.get(g, [])
        photos = {p.key for _, p in pool}
        if len(photos) < k + 1:
            skipped[g] = (f"{len(pool)} pairs with {len(photos)} distinct photos in split {split!r}; "
                          f"k={k} support photos and at least one query need {k + 1}")
            continue
        per_class = group_by == "class" or within_class
        gallery = [p for p in all_photos if not per_class or p.class_index == pool[0][0].class_index]
        for d in range(int(draws)):
            rng = _rng(seed, g, d)
            support, used = [], set()
            for i in rng.permutation(len(pool)):
                s, p = pool[int(i)]
                if p.key not in used:
                    support.append((s, p))
                    used.add(p.key)
                if len(support) == k:
                    break
            queries = [(s, p) for s, p in pool if p.key not in used]
            if max_queries is not None and len(queries) > int(max_queries):
                keep = sorted(rng.choice(len(queries), int(max_queries), replace=False).tolist())
                queries = [queries[i] for i in keep]
            candidates = [p for p in gallery if p.key not in used]
            chosen = sorted(rng.choice(len(candidates), min(n_neg, len(candidates)), replace=False).tolist()) \
                if candidates and n_neg > 0 else []
            tasks.append(AdaptationTask(g, d, support, [candidates[i] for i in chosen], queries, gallery))
    return tasks, skipped


def _images(dataset: Any, samples: Sequence[Sample]) -> torch.Tensor:
    from ..data import SampleDataset

    items = SampleDataset(dataset, list(samples))
    return torch.stack([items[i]["image"] for i in range(len(items))]) if len(items) else torch.zeros(0)


def support_batch(dataset: Any, support: Sequence[Pair], negatives: Sequence[Sample] = (), *,
                  store: Any | None = None, encoder: torch.nn.Module | None = None) -> dict[str, Any]:
    """The tensors a method's ``adapt`` takes: ``sketch``, ``photo`` (sketch i drawn from photo i),
    ``negative`` photos, and ids that mark repeated photos (``photo_id``, ``negative_id``); images are
    read as the evaluator reads them (the dataset's size and preprocessing). With a feature ``store``
    (:class:`~sbirkit.engine.feature_cache.FeatureStore`) and the ``encoder`` whose backbone it caches,
    the slots hold its cached features or maps instead (``inputs: "features"``, ``feature_stage``)."""
    keys: dict[str, int] = {}
    photo_ids = [keys.setdefault(p.key, len(keys)) for _, p in support]
    negative_ids = [keys.setdefault(p.key, len(keys)) for p in negatives]
    sketches, photos = [s for s, _ in support], [p for _, p in support]
    if store is None:
        sides = [_images(dataset, sketches), _images(dataset, photos), _images(dataset, list(negatives))]
        extra: dict[str, Any] = {"inputs": "images"}
    else:
        if encoder is None:
            raise ValueError("support_batch: a feature store needs the encoder whose backbone it caches")

        def cached(samples):
            if not samples:
                return torch.zeros(0)
            rows = store.features(encoder.branch(samples[0].modality), dataset, samples)
            return torch.from_numpy(np.array(rows, dtype=np.float32))

        sides = [cached(sketches), cached(photos), cached(list(negatives))]
        extra = {"inputs": "features", "feature_stage": store.stage}
    return {"sketch": sides[0], "photo": sides[1], "negative": sides[2],
            "photo_id": torch.tensor(photo_ids, dtype=torch.long),
            "negative_id": torch.tensor(negative_ids, dtype=torch.long), **extra}


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


class AdaptationProtocol(Protocol):
    """Adapt on each task's support set, then score its queries (module docstring).

    ``adapt``: ``support batch -> encoder`` (a method's ``adapt``; :meth:`for_method` wraps a
    trained method's, :func:`sbirkit.engine.adapt_run.protocol_for_run` a run folder's). ``groups``: the classes or users to draw tasks from (None: every group of the
    split). ``seed`` seeds the draws, so every model evaluated with the same seed meets the same
    support sets and queries (paired comparisons).
    """

    def __init__(self, data: Mapping[str, Any], seed: int = 0, *, adapt: Callable[[dict], torch.nn.Module],
                 k: int, group_by: str = "class", groups: Sequence[str] | None = None, draws: int = 5,
                 negatives: int | None = None, max_queries: int | None = None, strategy: str = "meta",
                 within_class: bool = False):
        super().__init__(data, seed)
        self.within_class = bool(within_class) and group_by == "user"
        if group_by not in GROUP_BY:
            raise ConfigError(f"group_by (--tasks): expected one of {', '.join(GROUP_BY)}, got {group_by!r}")
        if int(k) < 1:
            raise UsageError(f"k (--adapt): expected a positive integer, got {k}")
        self.adapt, self.k, self.group_by = adapt, int(k), group_by
        self.groups = list(groups) if groups is not None else None
        self.draws, self.negatives, self.max_queries = int(draws), negatives, max_queries
        self.strategy = strategy
        self.name = f"adapt{self.k}-{group_by}" + ("" if strategy == "meta" else f"-{strategy}")

    @classmethod
    def for_method(cls, method: Any, config: Mapping[str, Any], *, k: int, group_by: str | None = None,
                   groups: Sequence[str] | None = None, draws: int = 5, strategy: str | None = None,
                   steps: int | None = None, lr: float | None = None, optimizer: str | None = None,
                   negatives: int | None = None,
                   max_queries: int | None = None, seed: int = 0, where: str | Path = "method") -> AdaptationProtocol:
        """The protocol around a trained method's own ``adapt`` (``method, config`` of a run:
        :func:`sbirkit.engine.adapt_run.protocol_for_run` loads them): its test groups by default
        (the ``method.test_groups`` of a run whose tasks were of the same kind), else every group."""
        if int(k) < 1:
            raise UsageError(f"k (--adapt): expected a positive integer, got {k}")
        require_adaptive(method, config, where)
        options = dict(config.get("method") or {})
        trained_by = options.get("group_by", "class")
        group_by = group_by or trained_by
        if groups is None and group_by == trained_by:
            groups = options.get("test_groups")
        # user tasks are scored the way the run was trained on them: within one category or across all
        within_class = group_by == "user" and trained_by == "user" and bool(options.get("within_class", False))
        options = {"strategy": strategy, "steps": steps, "lr": lr}
        if optimizer is not None:  # only methods with test-time fine-tuning take it
            options["optimizer"] = optimizer
        adapt = functools.partial(method.adapt, **options)
        return cls(config["data"], seed, adapt=adapt, k=k, group_by=group_by, groups=groups, draws=draws,
                   negatives=negatives, max_queries=max_queries,
                   strategy=strategy or getattr(method, "default_strategy", "meta"), within_class=within_class)

    def metric_names(self, directions: Sequence[str], instance_level: bool) -> list[str]:
        return [f"sketch2photo/{m}" for m in FINE_GRAINED_METRICS]

    # ---- scoring --------------------------------------------------------------------------------
    def run_tasks(self, evaluator: Evaluator, split: str, distance: str = "cosine",
                  ties: str = DEFAULT_TIES) -> dict[str, Any]:
        """Adapt and score every task: per task its group, draw, per-query values and timings."""
        dataset = evaluator.dataset
        tasks, skipped = draw_tasks(dataset, split, self.group_by, self.k, self.draws, groups=self.groups,
                                    negatives=self.negatives, max_queries=self.max_queries, seed=self.seed,
                                    within_class=self.within_class)
        scored = []
        for task in tasks:
            if evaluator.features is None:
                batch = support_batch(dataset, task.support, task.negatives)
            else:  # the run trains on cached features or maps: the support set comes from the same cache
                batch = support_batch(dataset, task.support, task.negatives, store=evaluator.features,
                                      encoder=evaluator.encoder)
            started = time.perf_counter()
            adapted = self.adapt(batch)
            adapt_seconds = time.perf_counter() - started
            q_emb, q_lab, q_inst = evaluator.embed([s for s, _ in task.queries], encoder=adapted)
            g_emb, g_lab, g_inst = evaluator.embed(task.gallery, encoder=adapted)
            result = evaluate_retrieval(q_emb, g_emb, q_lab, g_lab, query_instances=q_inst, gallery_instances=g_inst,
                                        metrics=list(FINE_GRAINED_METRICS), distance=distance, ties=ties,
                                        return_per_query=True)
            scored.append({"group": task.group, "draw": task.draw, "queries": len(task.queries),
                           "gallery": len(task.gallery), "adapt_seconds": adapt_seconds,
                           "record": dict(getattr(adapted, "record", {}) or {}),
                           "per_query": {m: result.per_query[m].numpy() for m in FINE_GRAINED_METRICS},
                           "undefined": dict(result.undefined), "conventions": dict(result.conventions)})
        return {"tasks": scored, "skipped": skipped}

    def summarise(self, scored: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Macro (over groups) and micro (over queries) means per draw, then mean and sd over draws."""
        by_draw: dict[int, list] = defaultdict(list)
        for t in scored:
            by_draw[t["draw"]].append(t)
        macro: dict[str, list[float]] = defaultdict(list)
        micro: dict[str, list[float]] = defaultdict(list)
        per_group: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for d in sorted(by_draw):
            for m in FINE_GRAINED_METRICS:
                means = []
                for t in by_draw[d]:
                    v = np.nanmean(t["per_query"][m])
                    means.append(float(v))
                    per_group[t["group"]][m].append(float(v))
                macro[m].append(float(np.mean(means)))
                micro[m].append(float(np.nanmean(np.concatenate([t["per_query"][m] for t in by_draw[d]]))))
        return {"macro": {m: _mean_sd(v) for m, v in macro.items()}, "micro": {m: _mean_sd(v) for m, v in micro.items()},
                "macro_per_draw": {m: v for m, v in macro.items()}, "micro_per_draw": {m: v for m, v in micro.items()},
                "per_group": {g: {m: float(np.mean(v)) for m, v in ms.items()} for g, ms in sorted(per_group.items())}}

    def validate(self, evaluator: Evaluator, split: str, ev: EvalOptions) -> dict[str, float]:
        """Mean over validation groups and draws of Acc@1/5/10 (empty when no group has k + 1 pairs)."""
        out = self.run_tasks(evaluator, split, ev.distance, ev.ties)
        if not out["tasks"]:
            return {}
        summary = self.summarise(out["tasks"])
        return {f"sketch2photo/{m}": v[0] for m, v in summary["macro"].items()}

    def evaluate(self, evaluator: Evaluator, split: str, directions: Sequence[str], ev: EvalOptions, *,
                 gzsl: bool = False, per_query: bool = False) -> Evaluation:
        if gzsl:
            raise ConfigError("gzsl: the adaptation protocol has no generalised zero-shot setting")
        out = self.run_tasks(evaluator, split, ev.distance, ev.ties)
        dataset = evaluator.dataset
        if not out["tasks"]:
            detail = "; ".join(f"{g}: {why}" for g, why in out["skipped"].items()) or "no group found"
            raise DataError(f"{dataset.name} split {split!r}: adaptation tasks: expected a {self.group_by} with "
                            f"more than k={self.k} pairs, got none ({detail})")
        scored = out["tasks"]
        summary = self.summarise(scored)
        first = [t for t in scored if t["draw"] == scored[0]["draw"]]
        queries, gallery = sum(t["queries"] for t in first), round(float(np.mean([t["gallery"] for t in first])))
        conventions = dict(scored[0]["conventions"])
        results = {}
        one, many = ("category", "categories") if self.group_by == "class" else \
            (("user's category", "(user, category) groups") if self.within_class else ("user", "users"))
        for row, key, how, average in (
                ("sketch2photo", "macro", f"mean over {many} of each {one}'s mean over its queries", f"{one} (macro)"),
                ("sketch2photo (micro)", "micro", "mean over every query of the draw", "query (micro)")):
            metrics, conv = {}, {}
            for m in FINE_GRAINED_METRICS:
                metrics[m], metrics[f"{m}:sd"] = summary[key][m]
                conv[m] = (f"{conventions[m]}; {how}, after adapting on k={self.k} pairs, "
                           f"then mean over {self.draws} support draws")
                conv[f"{m}:sd"] = f"{m} spread: standard deviation over the {self.draws} support draws"
            results[row] = RetrievalResult(metrics=metrics, undefined={m: 0 for m in metrics}, conventions=conv,
                                           num_queries=queries, gallery_size=gallery, distance=ev.distance,
                                           exclude_self=False, average=average, ties=ev.ties,
                                           tie_policy=f"{ev.ties}: {TIE_POLICIES[ev.ties]}")
        seconds = [t["adapt_seconds"] for t in scored]
        margins = [t["record"]["margin"] for t in scored if t["record"].get("margin") is not None]
        gallery_text = ("every photo of the task's category in the split" if self.group_by == "class" or
                        self.within_class else "every photo of the split")
        who = "category" if self.group_by == "class" else ("user's category" if self.within_class else "user")
        protocol = {
            "name": self.name,
            "dataset": self.data.get("name"),
            "root": self.data.get("root"),
            "split": split,
            "tasks": self.group_by,
            "within_class": self.within_class,
            "k": self.k,
            "draws": self.draws,
            "seed": self.seed,
            "strategy": self.strategy,
            "ties": ev.ties,
            "groups": sorted({t["group"] for t in scored}),
            "skipped_groups": out["skipped"],
            "negatives": default_negatives(self.k) if self.negatives is None else int(self.negatives),
            "max_queries": self.max_queries,
            "gallery": (f"{gallery_text} (mean size {gallery}); queries: the {who}'s sketches whose photo is "
                        f"not a support photo ({queries} per draw); support: k={self.k} pairs with distinct photos, "
                        f"{self.draws} seeded draws"),
            "support_disjoint_from_queries": True,
            "directions": ["sketch2photo"],
            "distance": ev.distance,
            "macro_per_draw": summary["macro_per_draw"],
            "micro_per_draw": summary["micro_per_draw"],
            "per_group": summary["per_group"],
            "adapt_seconds": {"mean": float(np.mean(seconds)), "max": float(np.max(seconds))},
            "margin": {"mean": float(np.mean(margins)), "min": float(np.min(margins)),
                       "max": float(np.max(margins))} if margins else None,
        }
        return Evaluation(results, protocol, {})


# ---- adapting a run folder (sbirkit adapt) ---------------------------------------------------------------
def require_adaptive(method: Any, config: Mapping[str, Any], run_dir: str | Path) -> None:
    if not callable(getattr(method, "adapt", None)):
        name = (config.get("method") or {}).get("name")
        raise UsageError(f"{run_dir}: method {name!r} has no adaptive head (no adapt()); train one with "
                         "method.name=adaptive_fg, e.g. 'sbirkit train adaptive_fg-synthetic'")


def read_support(root: str | Path, support_format: str = "folder", *, image_size: int | None = None,
                 stroke_width: float | None = None, options: Mapping[str, Any] | None = None) -> Any:
    """A support folder as a dataset (``folder`` layout or ``qmul-v1`` files), read at the run's size."""
    from ..data import create_dataset, list_datasets

    if support_format not in ("folder", "qmul-v1"):
        known = ", ".join(f for f in ("folder", "qmul-v1") if f in list_datasets())
        raise UsageError(f"--support-format: expected one of {known}, got {support_format!r}")
    kwargs = dict(options or {})
    if image_size is not None:
        kwargs.setdefault("image_size", int(image_size))
    if stroke_width is not None:
        kwargs.setdefault("stroke_width", float(stroke_width))
    return create_dataset(support_format, str(root), **kwargs)


def choose_support(dataset: Any, k: int, *, seed: int = 0, split: str | None = None,
                   where: str | Path = "support") -> tuple[list[Pair], list[Sample]]:
    """k (sketch, photo) pairs with distinct photos, drawn with ``seed``, and (k = 1) one other photo of
    the folder as the negative; one-line errors for unpaired sketches and too few pairs."""
    if int(k) < 1:
        raise UsageError(f"-k: expected a positive integer, got {k}")
    sketches = dataset.sketches(split)
    pairs = dataset.pairs(split)
    paired = {s.key for s, _ in pairs}
    unpaired = [s for s in sketches if s.key not in paired]
    if unpaired:
        raise DataError(f"{where}: {len(unpaired)} of {len(sketches)} sketches have no paired photo (e.g. "
                        f"{unpaired[0].location()}); a sketch X-N.png needs its photo X.* in photo/<class>/")
    by_photo: dict[str, Pair] = {}
    for s, p in pairs:
        by_photo.setdefault(p.key, (s, p))
    if len(by_photo) < k:
        raise DataError(f"{where}: expected at least k={k} sketch-photo pairs (with distinct photos), found "
                        f"{len(by_photo)}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xADA7])
    keys = sorted(by_photo)
    chosen = [keys[int(i)] for i in rng.permutation(len(keys))[:k]]
    support = [by_photo[key] for key in chosen]
    others = [p for p in dataset.photos(split) if p.key not in set(chosen)]
    picked = sorted(rng.permutation(len(others))[:default_negatives(k)].tolist()) if others else []
    negatives = [others[i] for i in picked]
    if k == 1 and not negatives:
        raise DataError(f"{where}: k=1 needs at least one more photo in the folder (a negative for the support "
                        "triplet); found only the support pair")
    return support, negatives
