"""Deterministic, resumable samplers over (sketch, photo) pairs, and episodic k-shot tasks.

The batches of epoch ``e`` are a pure function of ``(seed, e)``, so a run resumed at global
step ``s`` (epoch ``s // len(sampler)``, batch ``s % len(sampler)``) sees exactly the batches an
uninterrupted run would have seen. Batch items are ``(sketch_pos, photo_pos)`` index pairs into
the sampler's ``sketches`` and ``photos`` lists; :class:`PairDataset` turns them into tensors.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .dataset import SBIRDataset, pil_to_tensor
from .records import DataError, Sample

Pair = tuple[int, int]
MODES = ("class", "instance")


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *stream])


class PairBatchSampler:
    """Batches of (sketch, positive photo) pairs from one split.

    ``mode="instance"`` (fine-grained): the positive is the photo the sketch was drawn from
    (same ``instance_id``); unpaired sketches are counted in ``skipped``. ``mode="class"``: the
    positive is a same-class photo drawn afresh each epoch; sketches of a class with no photo in
    the split are counted in ``skipped``. With ``classes_per_batch=P`` every batch holds P
    classes × ``batch_size // P`` pairs (P×K batches for batch-hard mining); otherwise batches
    are consecutive chunks of a per-epoch permutation. An epoch has ``len(self)`` full batches.
    """

    def __init__(self, dataset: SBIRDataset, split: str | None, batch_size: int, mode: str = "class",
                 classes_per_batch: int | None = None, seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        self.dataset, self.split, self.mode = dataset, split, mode
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.photos: list[Sample] = dataset.photos(split)
        photo_pos = {p: i for i, p in enumerate(self.photos)}
        self.skipped = 0
        if mode == "instance":
            pairs = dataset.pairs(split)
            self.sketches = [s for s, _ in pairs]
            self._own_photo = np.array([photo_pos[p] for _, p in pairs], dtype=np.int64)
            self.skipped = len(dataset.sketches(split)) - len(pairs)
        else:
            by_class: dict[int, list[int]] = defaultdict(list)
            for i, p in enumerate(self.photos):
                by_class[p.class_index].append(i)
            self._photos_of_class = {c: np.array(v, dtype=np.int64) for c, v in by_class.items()}
            all_sketches = dataset.sketches(split)
            self.sketches = [s for s in all_sketches if s.class_index in self._photos_of_class]
            self.skipped = len(all_sketches) - len(self.sketches)
        where = f"{dataset.name} split {split!r}"
        if self.skipped:
            warnings.warn(f"{where}: {self.skipped} sketches have no positive photo ({mode} mode) and are not used",
                          stacklevel=2)
        if len(self.sketches) < self.batch_size:
            raise DataError(f"{where}: pairs: expected at least batch_size={batch_size} "
                            f"(sketch, photo) pairs in {mode} mode, got {len(self.sketches)}")
        self._labels = np.array([s.class_index for s in self.sketches], dtype=np.int64)
        self.classes_per_batch = classes_per_batch
        if classes_per_batch is not None:
            if classes_per_batch < 1 or batch_size % classes_per_batch:
                raise ValueError(f"classes_per_batch: expected a divisor of batch_size={batch_size}, "
                                 f"got {classes_per_batch}")
            self._members = {int(c): np.flatnonzero(self._labels == c) for c in np.unique(self._labels)}
            if len(self._members) < classes_per_batch:
                raise DataError(f"{where}: classes: expected at least classes_per_batch={classes_per_batch} "
                                f"classes with pairs, got {len(self._members)}")

    def __len__(self) -> int:
        return len(self.sketches) // self.batch_size

    def _positive(self, rng: np.random.Generator, sketch_pos: np.ndarray) -> np.ndarray:
        if self.mode == "instance":
            return self._own_photo[sketch_pos]
        out = np.empty(len(sketch_pos), dtype=np.int64)
        for k, i in enumerate(sketch_pos):
            choices = self._photos_of_class[int(self._labels[i])]
            out[k] = choices[rng.integers(len(choices))]
        return out

    def epoch_batches(self, epoch: int) -> list[list[Pair]]:
        """The ``len(self)`` batches of epoch ``epoch``: a pure function of ``(seed, epoch)``."""
        rng = _rng(self.seed, epoch)
        n, b = len(self), self.batch_size
        if self.classes_per_batch is None:
            sketch_pos = rng.permutation(len(self.sketches))[: n * b]
        else:
            k = b // self.classes_per_batch
            classes = np.array(sorted(self._members))
            chunks = []
            for _ in range(n):
                for c in rng.choice(classes, self.classes_per_batch, replace=False):
                    members = self._members[int(c)]
                    chunks.append(rng.choice(members, k, replace=len(members) < k))
            sketch_pos = np.concatenate(chunks)
        photo_pos = self._positive(rng, sketch_pos)
        pairs = list(zip(sketch_pos.tolist(), photo_pos.tolist()))
        return [pairs[i * b:(i + 1) * b] for i in range(n)]

    def batches(self, start_step: int = 0) -> Iterator[list[Pair]]:
        """Batches from global step ``start_step`` on, across epochs, without end."""
        epoch, offset = divmod(int(start_step), len(self))
        while True:
            yield from self.epoch_batches(epoch)[offset:]
            epoch, offset = epoch + 1, 0

    def steps(self, start_step: int, num_steps: int) -> StepBatches:
        """``num_steps`` batches from ``start_step``: pass as a DataLoader's ``batch_sampler``."""
        return StepBatches(self, start_step, num_steps)


class StepBatches:
    """A finite window of a sampler's batch stream, usable as ``DataLoader(batch_sampler=...)``."""

    def __init__(self, sampler: PairBatchSampler, start_step: int, num_steps: int):
        self.sampler, self.start_step, self.num_steps = sampler, int(start_step), max(0, int(num_steps))

    def __len__(self) -> int:
        return self.num_steps

    def __iter__(self) -> Iterator[list[Pair]]:
        it = self.sampler.batches(self.start_step)
        for _ in range(self.num_steps):
            yield next(it)


class PairDataset(torch.utils.data.Dataset):
    """Turns ``(sketch_pos, photo_pos)`` items into tensors via ``dataset.load_image``.

    A collated batch is ``{"sketch": (B,3,H,W), "photo": (B,3,H,W), "label": (B,),
    "instance": (B,), "sketch_index": (B,), "photo_index": (B,)}``; ``label`` is the sketch's
    class and ``instance`` indexes ``self.instances`` by the photo's instance id (-1 if none).
    Images are floats in [0, 1] unless ``transform`` (PIL image -> tensor) says otherwise.
    With ``augment`` (:class:`~sbirkit.data.augment.Augment`), an item ``(sketch_pos, photo_pos,
    seed)`` is augmented with generators drawn from ``seed`` (the sketch, the photo and, with
    ``pair_flip: same``, their shared flip each have one); a 2-tuple item is never augmented.
    """

    def __init__(self, dataset: SBIRDataset, sketches: Sequence[Sample], photos: Sequence[Sample],
                 transform: Callable[[Image.Image], Any] | None = None, size: int | None = None,
                 augment: Any | None = None):
        self.dataset, self.sketches, self.photos = dataset, list(sketches), list(photos)
        self.transform, self.size, self.augment = transform, size, augment
        self.instances = sorted({p.instance_id for p in self.photos if p.instance_id is not None})
        self._instance_idx = {k: i for i, k in enumerate(self.instances)}

    @classmethod
    def for_sampler(cls, sampler: PairBatchSampler | EpisodicTaskSampler, **kw) -> PairDataset:
        return cls(sampler.dataset, sampler.sketches, sampler.photos, **kw)

    def __len__(self) -> int:
        return len(self.sketches)

    def _image(self, sample: Sample, rng: np.random.Generator | None = None, flip: bool | None = None) -> torch.Tensor:
        if rng is None or self.augment is None:
            img = self.dataset.load_image(sample, self.size)
        else:
            from .augment import load_augmented

            img = load_augmented(self.dataset, sample, self.augment, rng, self.size, flip)
        return self.transform(img) if self.transform is not None else pil_to_tensor(img)

    def __getitem__(self, item: tuple) -> dict[str, Any]:
        si, pi = item[0], item[1]
        s, p = self.sketches[si], self.photos[pi]
        rngs, flip = (None, None), None
        if len(item) > 2 and self.augment is not None:
            from .augment import item_rng

            seed = int(item[2])
            rngs = (item_rng(seed, 0), item_rng(seed, 1))
            if self.augment.pair_flip == "same":
                flip = bool(item_rng(seed, 2).random() < self.augment.flip_probability())
        return {
            "sketch": self._image(s, rngs[0], flip),
            "photo": self._image(p, rngs[1], flip),
            "label": s.class_index,
            "instance": self._instance_idx.get(p.instance_id, -1),
            "sketch_index": si,
            "photo_index": pi,
        }


@dataclass(frozen=True)
class EpisodicTask:
    """One k-shot task: a group (class name or user id) and disjoint support/query pairs."""

    group: str
    support: list[Pair]
    query: list[Pair]


class EpisodicTaskSampler:
    """k-shot fine-grained tasks, one group (a category or a user's drawing style) per task.

    Task ``t`` is a pure function of ``(seed, t)``: its group is chosen uniformly, then
    ``k_support + k_query`` distinct (sketch, own photo) pairs of that group are split into
    support and query (the setting of Bhunia et al., "Adaptive Fine-Grained SBIR", ECCV 2022).
    Groups with fewer pairs than that are left out and listed in ``skipped_groups``.
    """

    def __init__(self, dataset: SBIRDataset, split: str | None, group_by: str = "class",
                 k_support: int = 1, k_query: int = 1, seed: int = 0):
        if group_by not in ("class", "user"):
            raise ValueError(f"group_by: expected 'class' or 'user', got {group_by!r}")
        if k_support < 1 or k_query < 1:
            raise ValueError(f"k_support, k_query: expected >= 1, got {k_support}, {k_query}")
        self.dataset, self.split, self.group_by = dataset, split, group_by
        self.k_support, self.k_query, self.seed = int(k_support), int(k_query), int(seed)
        self.photos = dataset.photos(split)
        photo_pos = {p: i for i, p in enumerate(self.photos)}
        pairs = dataset.pairs(split)
        self.sketches = [s for s, _ in pairs]
        members: dict[str, list[Pair]] = defaultdict(list)
        missing_user = 0
        for si, (s, p) in enumerate(pairs):
            key = dataset.classes[s.class_index] if group_by == "class" else s.user_id
            if key is None:
                missing_user += 1
                continue
            members[key].append((si, photo_pos[p]))
        need = self.k_support + self.k_query
        self.skipped_groups = {g: len(v) for g, v in members.items() if len(v) < need}
        self.groups = sorted(g for g in members if g not in self.skipped_groups)
        self._members = {g: members[g] for g in self.groups}
        self.skipped = missing_user + sum(self.skipped_groups.values())
        if not self.groups:
            raise DataError(f"{dataset.name} split {split!r}: groups: expected a {group_by} with at least "
                            f"{need} (sketch, photo) pairs, got none ({len(pairs)} pairs, {missing_user} without user)")

    def __len__(self) -> int:
        return len(self.groups)

    def task(self, index: int) -> EpisodicTask:
        rng = _rng(self.seed, int(index))
        group = self.groups[int(rng.integers(len(self.groups)))]
        pool = self._members[group]
        chosen = rng.choice(len(pool), self.k_support + self.k_query, replace=False)
        picked = [pool[int(i)] for i in chosen]
        return EpisodicTask(group, picked[: self.k_support], picked[self.k_support:])

    def tasks(self, start: int = 0) -> Iterator[EpisodicTask]:
        """Tasks from index ``start`` on, without end."""
        t = int(start)
        while True:
            yield self.task(t)
            t += 1
