"""Pair and episodic samplers: determinism per (seed, epoch), exact resume position, batch contents."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch
from tiny_pairs import TinyPairs

from sbirkit.data import DataError, Modality, Sample
from sbirkit.data.samplers import EpisodicTaskSampler, PairBatchSampler, PairDataset


@pytest.fixture(scope="module")
def ds():
    return TinyPairs(num_classes=5, photos_per_class=8, splits=(5, 1, 2), sketches_per_photo=2, image_size=16)


def test_epochs_are_pure_functions_of_seed_and_epoch(ds):
    a = PairBatchSampler(ds, "train", 8, mode="class", seed=3)
    b = PairBatchSampler(ds, "train", 8, mode="class", seed=3)
    assert len(a) == 50 // 8  # 5 classes x 5 train photos x 2 sketches = 50 pairs
    assert a.epoch_batches(4) == b.epoch_batches(4)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    assert a.epoch_batches(0) != PairBatchSampler(ds, "train", 8, mode="class", seed=4).epoch_batches(0)


def test_resume_continues_with_the_same_batches(ds):
    sampler = PairBatchSampler(ds, "train", 8, mode="instance", classes_per_batch=2, seed=1)
    n = len(sampler)
    full = list(itertools.islice(sampler.batches(0), 3 * n))
    for start in (1, n - 1, n, n + 2):  # inside the first epoch, at and across the epoch boundary
        resumed = list(itertools.islice(sampler.batches(start), 3 * n - start))
        assert resumed == full[start:]
    window = sampler.steps(5, 4)
    assert len(window) == 4 and list(window) == full[5:9]


def test_class_mode_pairs_same_class_and_covers_each_sketch_once(ds):
    sampler = PairBatchSampler(ds, "train", 8, mode="class", seed=0)
    batches = sampler.epoch_batches(0)
    seen = [si for batch in batches for si, _ in batch]
    assert len(seen) == len(set(seen)) == len(sampler) * 8
    for batch in batches:
        for si, pi in batch:
            s, p = sampler.sketches[si], sampler.photos[pi]
            assert s.class_index == p.class_index and s.split == p.split == "train"
    # the positive photo is drawn, not fixed: over epochs a sketch meets more than one photo
    photos_of_first = {dict(b)[0] for e in range(30) for b in sampler.epoch_batches(e) if 0 in dict(b)}
    assert len(photos_of_first) > 1


def test_instance_mode_pairs_own_photo_and_pk_batches(ds):
    sampler = PairBatchSampler(ds, "train", 8, mode="instance", classes_per_batch=2, seed=0)
    for batch in sampler.epoch_batches(2):
        assert len(batch) == 8
        classes = Counter(sampler.sketches[si].class_index for si, _ in batch)
        assert len(classes) == 2 and set(classes.values()) == {4}
        for si, pi in batch:
            assert sampler.sketches[si].instance_id == sampler.photos[pi].instance_id


def test_unpaired_sketches_are_counted_not_hidden():
    ds = TinyPairs(num_classes=2, photos_per_class=8, image_size=16)
    orphan = Sample("sketch/orphan", Modality.SKETCH, 0, "class0", instance_id="nope", split="train")
    ds = ds.subset([*ds.samples, orphan])
    with pytest.warns(UserWarning, match="1 sketches have no positive photo"):
        sampler = PairBatchSampler(ds, "train", 4, mode="instance")
    assert sampler.skipped == 1 and len(sampler.sketches) == 10


def test_bad_sizes_name_the_problem(ds):
    with pytest.raises(DataError, match="split 'val'.*batch_size=64"):
        PairBatchSampler(ds, "val", 64)
    with pytest.raises(ValueError, match="classes_per_batch"):
        PairBatchSampler(ds, "train", 8, classes_per_batch=3)
    with pytest.raises(DataError, match="classes_per_batch=8"):
        PairBatchSampler(ds, "train", 8, classes_per_batch=8)


def test_pair_dataset_batches(ds):
    sampler = PairBatchSampler(ds, "train", 6, mode="instance", classes_per_batch=3, seed=0)
    pairs = PairDataset.for_sampler(sampler)
    loader = torch.utils.data.DataLoader(pairs, batch_sampler=sampler.steps(0, 2))
    batches = list(loader)
    assert len(batches) == 2
    b = batches[0]
    assert b["sketch"].shape == b["photo"].shape == (6, 3, 16, 16)
    assert b["sketch"].dtype == torch.float32 and 0.0 <= b["sketch"].min() and b["sketch"].max() <= 1.0
    expected = sampler.epoch_batches(0)[0]
    assert b["sketch_index"].tolist() == [si for si, _ in expected]
    assert b["label"].tolist() == [sampler.sketches[si].class_index for si, _ in expected]
    assert b["instance"].tolist() == [pairs.instances.index(sampler.photos[pi].instance_id) for _, pi in expected]
    # sketches are ink on white, photos are not
    assert b["sketch"].mean() > 0.8 > b["photo"].mean()


def test_episodic_tasks(ds):
    sampler = EpisodicTaskSampler(ds, "train", group_by="class", k_support=3, k_query=2, seed=0)
    assert sampler.groups == [f"class{c}" for c in range(5)] and len(sampler) == 5
    again = EpisodicTaskSampler(ds, "train", group_by="class", k_support=3, k_query=2, seed=0)
    assert [again.task(i) for i in range(6)] == list(itertools.islice(sampler.tasks(), 6))
    groups = set()
    for task in itertools.islice(sampler.tasks(), 40):
        assert len(task.support) == 3 and len(task.query) == 2
        assert not set(task.support) & set(task.query)
        for si, pi in task.support + task.query:
            s = sampler.sketches[si]
            assert ds.classes[s.class_index] == task.group
            assert s.instance_id == sampler.photos[pi].instance_id
        groups.add(task.group)
    assert groups == set(sampler.groups)


def test_episodic_by_user_skips_small_groups(ds):
    sampler = EpisodicTaskSampler(ds, "train", group_by="user", k_support=2, k_query=2, seed=5)
    assert sampler.groups == ["u0", "u1"]
    task = sampler.task(0)
    assert {sampler.sketches[si].user_id for si, _ in task.support + task.query} == {task.group}
    # val has 5 classes x 1 photo x 2 sketches: 2 pairs per class, too few for 2 + 1
    small = EpisodicTaskSampler(ds, "val", group_by="class", k_support=1, k_query=1)
    assert len(small) == 5 and small.skipped == 0
    with pytest.raises(DataError, match="at least 3"):
        EpisodicTaskSampler(ds, "val", group_by="class", k_support=2, k_query=1)
