"""Training sources: where a method's batches come from, in a resumable order.

A method names its source (:meth:`sbirkit.methods.base.Method.train_source`); the trainer only
iterates it. Every source has

* ``batches(start_step)``: the *plans* of steps ``start_step, start_step + 1, ...`` (small,
  picklable descriptions: index pairs, a task, a seed), a pure function of the run seed and
  the step, so a resumed run sees exactly the batches an uninterrupted one would have seen;
* ``collate(plan)``: the plan made into a batch of tensors (run inside DataLoader workers when
  ``train.num_workers > 0``).

Four kinds:

* :class:`PairSource`: (sketch, photo) pair batches from a :class:`~sbirkit.data.samplers.PairBatchSampler`;
  a batch is ``{"sketch", "photo", "label", "instance", "sketch_index", "photo_index", "inputs"}``.
* :class:`EpisodeSource`: k-shot tasks from an :class:`~sbirkit.data.samplers.EpisodicTaskSampler`;
  a batch is ``{"tasks": [{"group", "support": pair batch, "query": pair batch}, ...], "inputs"}``.
* :class:`SampleSource`: single samples of one modality (a classifier); a batch is
  ``{"image", "label", "instance", "user", "index", "inputs"}``.
* :class:`GeneratedSource`: no dataset; a batch is ``{"step", "seed", "batch_size", "inputs"}``
  for a method that makes its own data (seed it with ``batch["seed"]``).

``batch["inputs"]`` says what the image slots hold: ``"images"``, or ``"features"`` when the
source serves frozen-backbone features from the cache (:meth:`with_features`; the method then
embeds with ``encoder.encode_features``). Batches are nested dicts and lists; the trainer moves
every tensor in them to the device with one tree map (:func:`to_device`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from ..data.samplers import EpisodicTask, EpisodicTaskSampler, PairBatchSampler, PairDataset
from ..errors import ConfigError

SOURCE_KINDS = ("pairs", "episodes", "samples", "generated")


def to_device(batch: Any, device: torch.device, non_blocking: bool = False, channels_last: bool = False) -> Any:
    """Move every tensor of a nested batch (dicts, lists, tuples) to ``device``; leave the rest.
    ``channels_last``: 4-d tensors (image batches) in that memory format."""
    if isinstance(batch, torch.Tensor):
        if channels_last and batch.dim() == 4:
            return batch.to(device, non_blocking=non_blocking, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, non_blocking, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking, channels_last) for v in batch)
    return batch


class TrainSource:
    """Base class of the three source kinds (see the module docstring)."""

    kind = "source"
    inputs = "images"

    def batches(self, start_step: int = 0) -> Iterator[Any]:
        raise NotImplementedError

    def collate(self, plan: Any, step: int | None = None) -> dict[str, Any]:
        """The batch of ``plan``; ``step`` (the plan's step) seeds augmentation, when there is any."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What ``meta.json`` records about the source."""
        return {"kind": self.kind, "inputs": self.inputs}

    # the training samples, for what is fitted before the first step (head_init: pca)
    def samples(self, modality: str) -> list:
        raise ConfigError(f"a {self.kind} source has no training samples to fit on (train.head_init needs them)")

    def with_features(self, store, encoder) -> TrainSource:
        """The same source serving cached backbone features (``train.cached_features``)."""
        raise ConfigError(f"train.cached_features: a {self.kind} source has no images to cache features of")


def _check_views(augment, store, views: int) -> None:
    if augment is not None and views < 2:
        raise ConfigError("data.augment with train.cached_features: set train.cache_views >= 2 to cache augmented "
                          "views (view 0 plain), or augment end to end (train.cached_features=false)")
    if views > 1 and augment is None:
        raise ConfigError("train.cache_views > 1: expected data.augment to say how the views are augmented")


class _SampledSource(TrainSource):
    """A source over a dataset's training samples: pairs or episodes of (sketch, photo) items."""

    feature_stage = None  # with cached maps: the backbone stage they were cut at

    def __init__(self, sampler, items: PairDataset | None = None, augment: Any | None = None, seed: int = 0):
        self.sampler, self.augment, self.seed = sampler, augment, int(seed)
        self.items = items if items is not None else PairDataset.for_sampler(sampler, augment=augment)
        self.inputs = "features" if hasattr(self.items, "features_of") else "images"

    def samples(self, modality: str) -> list:
        return list(self.sampler.sketches if modality == "sketch" else self.sampler.photos)

    def cached_features(self, modality: str) -> np.ndarray | None:
        """The cached features of :meth:`samples` (None when the source serves images)."""
        return self.items.features_of(modality) if hasattr(self.items, "features_of") else None

    def pair_batch(self, pairs: Sequence[tuple[int, int]], step: int | None = None,
                   first_position: int = 0) -> dict[str, Any]:
        """Collated pairs; with augmentation and a step, item ``i`` is augmented from
        ``item_seed(seed, step, first_position + i)`` (or picks its cached views from it)."""
        if self.augment is None or step is None:
            batch = default_collate([self.items[p] for p in pairs])
        else:
            from ..data.augment import item_seed

            batch = default_collate([self.items[(si, pi, item_seed(self.seed, step, first_position + i))]
                                     for i, (si, pi) in enumerate(pairs)])
        if self.feature_stage is not None:
            batch["feature_stage"] = self.feature_stage
        return batch

    def with_features(self, store, encoder, views: int = 1) -> TrainSource:
        from .feature_cache import FeaturePairs

        _check_views(self.augment, store, views)
        encoder.freeze_backbones(store.stage)
        sampler = self.sampler
        items = FeaturePairs(sampler.dataset, sampler.sketches, sampler.photos,
                             store.features(encoder.branch("sketch"), sampler.dataset, sampler.sketches, views),
                             store.features(encoder.branch("photo"), sampler.dataset, sampler.photos, views),
                             views=views, shared_flip=self.augment is not None and self.augment.pair_flip == "same")
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.items, clone.inputs, clone.feature_stage = items, "features", store.stage
        return clone


class PairSource(_SampledSource):
    """Pair batches in the sampler's resumable order (batches of epoch ``e`` are a function of
    ``(seed, e)``; global step ``s`` is batch ``s % len`` of epoch ``s // len``)."""

    kind = "pairs"

    def __init__(self, sampler: PairBatchSampler, items: PairDataset | None = None, augment: Any | None = None,
                 seed: int = 0):
        super().__init__(sampler, items, augment, seed)

    def batches(self, start_step: int = 0) -> Iterator[list[tuple[int, int]]]:
        return self.sampler.batches(start_step)

    def collate(self, plan: Sequence[tuple[int, int]], step: int | None = None,
                first_position: int = 0) -> dict[str, Any]:
        batch = self.pair_batch(plan, step, first_position)
        batch["inputs"] = self.inputs
        return batch

    def describe(self) -> dict[str, Any]:
        s = self.sampler
        return {**super().describe(), "mode": s.mode, "batch_size": s.batch_size,
                "classes_per_batch": s.classes_per_batch, "pairs": len(s.sketches), "skipped": s.skipped}


class EpisodeSource(_SampledSource):
    """``tasks_per_step`` k-shot tasks per step: step ``s`` holds tasks ``s*T .. s*T + T - 1`` of
    the sampler's stream (task ``t`` is a function of ``(seed, t)``)."""

    kind = "episodes"

    def __init__(self, sampler: EpisodicTaskSampler, tasks_per_step: int = 1, items: PairDataset | None = None,
                 augment: Any | None = None, seed: int = 0):
        if int(tasks_per_step) < 1:
            raise ConfigError(f"tasks_per_step: expected a positive integer, got {tasks_per_step!r}")
        super().__init__(sampler, items, augment, seed)
        self.tasks_per_step = int(tasks_per_step)

    def batches(self, start_step: int = 0) -> Iterator[list[EpisodicTask]]:
        step = int(start_step)
        while True:
            first = step * self.tasks_per_step
            yield [self.sampler.task(first + j) for j in range(self.tasks_per_step)]
            step += 1

    def collate(self, plan: Sequence[EpisodicTask], step: int | None = None,
                first_position: int = 0) -> dict[str, Any]:
        tasks, position = [], int(first_position)
        for t in plan:
            support = self.pair_batch(t.support, step, position)
            query = self.pair_batch(t.query, step, position + len(t.support))
            position += len(t.support) + len(t.query)
            tasks.append({"group": t.group, "support": support, "query": query})
        return {"tasks": tasks, "inputs": self.inputs}

    def describe(self) -> dict[str, Any]:
        s = self.sampler
        return {**super().describe(), "group_by": s.group_by, "k_support": s.k_support, "k_query": s.k_query,
                "tasks_per_step": self.tasks_per_step, "groups": list(s.groups),
                "skipped_groups": dict(s.skipped_groups)}


class SampleSource(TrainSource):
    """Batches of single samples of one modality (a classifier on photos or sketches): epoch ``e``
    is a permutation of the split's samples drawn from ``(seed, e)``; a batch is ``{"image",
    "label", "instance", "user", "index", "inputs"}`` (``image`` holds features when cached)."""

    kind = "samples"

    def __init__(self, dataset, split: str | None, modality: str, batch_size: int, seed: int = 0, items=None,
                 augment: Any | None = None):
        from ..data import SampleDataset

        self.dataset, self.split, self.modality, self.augment = dataset, split, modality, augment
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.sample_list = dataset.select(split=split, modality=modality)
        if len(self.sample_list) < self.batch_size:
            raise ConfigError(f"{dataset.name} split {split!r}: expected at least train.batch_size={batch_size} "
                              f"{modality}s, got {len(self.sample_list)}")
        self.items = items if items is not None else SampleDataset(dataset, self.sample_list)
        self.inputs = "features" if items is not None else "images"

    def __len__(self) -> int:
        return len(self.sample_list) // self.batch_size

    def batches(self, start_step: int = 0) -> Iterator[list[int]]:
        epoch, offset = divmod(int(start_step), len(self))
        while True:
            order = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 0x5A3]).permutation(len(self.sample_list))
            for b in range(offset, len(self)):
                yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()
            epoch, offset = epoch + 1, 0

    def collate(self, plan: Sequence[int], step: int | None = None, first_position: int = 0) -> dict[str, Any]:
        if self.augment is None or step is None or self.inputs == "features":
            batch = default_collate([self.items[i] for i in plan])
        else:
            batch = default_collate([self._augmented(i, step, first_position + pos) for pos, i in enumerate(plan)])
        batch["inputs"] = self.inputs
        if getattr(self, "feature_stage", None) is not None:
            batch["feature_stage"] = self.feature_stage
        return batch

    def _augmented(self, i: int, step: int, position: int) -> dict[str, Any]:
        from ..data.augment import item_rng, item_seed, load_augmented
        from ..data.dataset import pil_to_tensor

        sample = self.sample_list[i]
        img = load_augmented(self.dataset, sample, self.augment, item_rng(item_seed(self.seed, step, position), 0))
        return {"image": pil_to_tensor(img), "label": sample.class_index,
                "instance": self.items._instance_idx.get(sample.instance_id, -1),
                "user": self.items._user_idx.get(sample.user_id, -1), "index": i}

    def samples(self, modality: str) -> list:
        if modality != self.modality:
            raise ConfigError(f"a {self.modality} sample source has no {modality} training samples")
        return list(self.sample_list)

    def cached_features(self, modality: str) -> np.ndarray | None:
        return self.items.features if self.inputs == "features" and modality == self.modality else None

    def with_features(self, store, encoder, views: int = 1) -> TrainSource:
        if self.augment is not None or views > 1:
            raise ConfigError("data.augment with train.cached_features: a sample source trains on plain cached "
                              "features; augment end to end (train.cached_features=false)")
        encoder.freeze_backbones(store.stage)
        feats = store.features(encoder.branch(self.modality), self.dataset, self.sample_list)
        source = SampleSource(self.dataset, self.split, self.modality, self.batch_size, self.seed,
                              items=_FeatureSamples(self.sample_list, feats))
        source.feature_stage = store.stage
        return source

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "modality": self.modality, "batch_size": self.batch_size,
                "samples": len(self.sample_list)}


class _FeatureSamples(torch.utils.data.Dataset):
    """Rows of cached features in the order of ``samples``, as SampleDataset items."""

    def __init__(self, samples, features: np.ndarray):
        self.samples, self.features = list(samples), features

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        return {"image": torch.from_numpy(np.array(self.features[i], dtype=np.float32)), "label": s.class_index,
                "instance": -1, "user": -1, "index": i}


class GeneratedSource(TrainSource):
    """No dataset: step ``s`` is ``{"step": s, "seed": ..., "batch_size": B}``, the seed a fixed
    function of ``(run seed, s)``, for a method that generates its own training data."""

    kind = "generated"

    def __init__(self, seed: int, batch_size: int):
        self.seed, self.batch_size = int(seed), int(batch_size)

    def step_seed(self, step: int) -> int:
        """A 63-bit seed for step ``step`` (``torch.Generator().manual_seed(seed)``)."""
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, int(step), 0x6E4]).generate_state(1, np.uint64)
        return int(state[0]) >> 1

    def batches(self, start_step: int = 0) -> Iterator[int]:
        step = int(start_step)
        while True:
            yield step
            step += 1

    def collate(self, plan: int, step: int | None = None) -> dict[str, Any]:
        return {"step": torch.tensor(int(plan)), "seed": self.step_seed(int(plan)), "batch_size": self.batch_size,
                "inputs": "generated"}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "inputs": "generated", "batch_size": self.batch_size}


class ShardedSource(TrainSource):
    """Rank ``rank``'s contiguous share of every step of ``source`` (``torchrun``; see
    :mod:`sbirkit.engine.distributed`): the plan is drawn whole, as one process would, and cut, so
    the shares gathered in rank order are that process's batch (augmentation seeds included). A
    generated batch keeps its seed and gains ``"shard": (lo, hi)``, the rows of the global batch
    this rank holds."""

    def __init__(self, source: TrainSource, rank: int, world_size: int):
        self.source, self.rank, self.world_size = source, int(rank), int(world_size)
        self.kind, self.inputs = source.kind, source.inputs
        self.sampler = getattr(source, "sampler", None)
        self.items = getattr(source, "items", None)
        self.feature_stage = getattr(source, "feature_stage", None)

    def _unit(self) -> int:
        if isinstance(self.source, EpisodeSource):
            return self.source.sampler.k_support + self.source.sampler.k_query
        return 1

    def batches(self, start_step: int = 0) -> Iterator[Any]:
        from .distributed import shard_bounds

        what = "tasks_per_step" if isinstance(self.source, EpisodeSource) else "train.batch_size"
        for plan in self.source.batches(start_step):
            if isinstance(self.source, GeneratedSource):
                yield plan
                continue
            lo, hi = shard_bounds(len(plan), self.rank, self.world_size, what)
            yield (list(plan[lo:hi]), lo * self._unit())

    def collate(self, plan: Any, step: int | None = None) -> dict[str, Any]:
        if isinstance(self.source, GeneratedSource):
            from .distributed import shard_bounds

            batch = self.source.collate(plan, step)
            batch["shard"] = shard_bounds(batch["batch_size"], self.rank, self.world_size)
            return batch
        local, first = plan
        return self.source.collate(local, step, first)

    def samples(self, modality: str) -> list:
        return self.source.samples(modality)

    def cached_features(self, modality: str):
        return self.source.cached_features(modality) if hasattr(self.source, "cached_features") else None

    def describe(self) -> dict[str, Any]:
        return {**self.source.describe(), "world_size": self.world_size}


class StepWindow:
    """Steps ``start .. start + count - 1`` of a source, as a DataLoader ``batch_sampler``: each
    "batch" is a one-element list holding the step's plan (collated by :class:`PlanDataset`)."""

    def __init__(self, source: TrainSource, start: int, count: int):
        self.source, self.start, self.count = source, int(start), max(0, int(count))

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        plans = self.source.batches(self.start)
        for step in range(self.start, self.start + self.count):
            yield [(step, next(plans))]


class PlanDataset(torch.utils.data.Dataset):
    """``dataset[(step, plan)]`` is ``source.collate(plan, step)`` (so workers build whole batches)."""

    def __init__(self, source: TrainSource):
        self.source = source

    def __getitem__(self, item: tuple[int, Any]) -> dict[str, Any]:
        step, plan = item
        return self.source.collate(plan, step)

    def __len__(self) -> int:  # pragma: no cover - only batch_sampler indexing is used
        raise TypeError("PlanDataset is indexed by plans, not by position")


def first_item(items: list[Any]) -> Any:
    """The DataLoader ``collate_fn`` for :class:`StepWindow`: the step's one batch."""
    return items[0]


def step_loader(source: TrainSource, start: int, count: int, num_workers: int = 0, pin_memory: bool = False,
                seed: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over steps ``start .. start + count - 1`` of ``source``. It has its own
    generator, so building it leaves the global RNG untouched (resumed runs stay exact)."""
    return torch.utils.data.DataLoader(PlanDataset(source), batch_sampler=StepWindow(source, start, count),
                                       collate_fn=first_item, num_workers=num_workers, pin_memory=pin_memory,
                                       generator=torch.Generator().manual_seed(int(seed)))
