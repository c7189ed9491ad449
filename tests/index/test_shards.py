"""Sharded embedding (``sbirkit.index.shards``): shards whose union is the single-process embedding,
resuming at shard granularity, unreadable files counted per shard, workers that disagree refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sbirkit.errors import DataError, UsageError
from sbirkit.index import embed_image_files, image_items, list_image_files
from sbirkit.index.shards import (
    HEADER_FILE,
    Manifest,
    ShardSet,
    embed_shards,
    parse_shard_spec,
    shard_range,
    worker_from_env,
    worker_shards,
)

SIZE = 16


def encode(x: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for a model: 4x4 pooled colours (48 dims)."""
    return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) + 0.01


class Model:
    """``load_model`` for :func:`embed_shards`, counting loads and encoded batches."""

    def __init__(self, fingerprint: str = "fp-a"):
        self.fingerprint = fingerprint
        self.loads = 0
        self.images = 0

    def __call__(self):
        self.loads += 1

        def fn(x):
            self.images += len(x)
            return encode(x)

        return fn, SIZE, {"fingerprint": self.fingerprint, "embed_dim": 48, "run": "fake"}


@pytest.fixture
def photos(tmp_path):
    """3 classes x 5 photos, plus one unreadable file in the middle of the sorted list."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c in ("cat", "dog", "owl"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            arr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i:02d}.png")
    (root / "dog" / "02b.png").write_bytes(b"not a png at all")
    return root


def single_process(photos):
    paths = list_image_files(photos)
    emb, ok, failures = embed_image_files(encode, paths, SIZE, batch_size=4, progress=False)
    return emb, image_items(ok, photos), failures


def run_workers(out, photos, workers, num_shards, model=None):
    manifest = Manifest.of_folder(photos)
    model = model or Model()
    return [embed_shards(out, manifest, i, workers, num_shards, model, batch_size=4, progress=False)
            for i in range(workers)], model


def merged(out):
    shards = ShardSet.open(out)
    x = np.concatenate([np.asarray(shards.vectors(s)) for s in range(len(shards.shards))])
    return shards, x, list(shards.items())


@pytest.mark.parametrize("workers,num_shards", [(3, 3), (2, 5), (1, 4)])
def test_union_of_shards_equals_the_single_process_embedding(tmp_path, photos, workers, num_shards):
    emb, items, failures = single_process(photos)
    run_workers(tmp_path / "out", photos, workers, num_shards)
    shards, x, got = merged(tmp_path / "out")
    assert len(shards.shards) == num_shards
    np.testing.assert_array_equal(x, emb)
    assert got == items  # same ids, paths, class names, same order
    assert [it["id"] for it in got][:3] == ["cat/00.png", "cat/01.png", "cat/02.png"]
    assert got[0]["class_name"] == "cat"
    assert shards.skipped == len(failures) == 1
    # the blocked reader and the sampler give the same rows
    blocks = np.concatenate([b for _, b in shards.blocks(rows=4)])
    np.testing.assert_array_equal(blocks, emb)
    np.testing.assert_array_equal(shards.take(np.array([0, 7, 13])), emb[[0, 7, 13]])


def test_unreadable_files_are_counted_in_their_own_shard(tmp_path, photos):
    run_workers(tmp_path / "out", photos, 1, 4)
    manifest = Manifest.of_folder(photos)
    bad = manifest.files.index("dog/02b.png")
    for j in range(4):
        marker = json.loads((tmp_path / "out" / f"shard-{j:05d}.json").read_text())
        start, stop = shard_range(j, 4, len(manifest))
        assert (marker["start"], marker["stop"]) == (start, stop)
        expected = 1 if start <= bad < stop else 0
        assert marker["skipped"] == expected
        assert marker["rows"] == stop - start - expected
        if expected:
            assert marker["skipped_files"][0]["path"].endswith("dog/02b.png")


def test_resume_skips_finished_shards_and_redoes_a_truncated_one(tmp_path, photos):
    out = tmp_path / "out"
    (report,), model = run_workers(out, photos, 1, 4)
    assert report.embedded == [0, 1, 2, 3] and model.images == 15
    again = Model()
    (report,), _ = run_workers(out, photos, 1, 4, again)
    assert report.embedded == [] and report.finished_before == [0, 1, 2, 3]
    assert again.loads == 0  # nothing left to do: the model is never loaded
    npy = out / "shard-00002.npy"
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) // 2])  # a half-written shard
    (out / "shard-00003.json").unlink()  # a shard killed before its marker
    third = Model()
    (report,), _ = run_workers(out, photos, 1, 4, third)
    assert sorted(report.embedded) == [2, 3] and sorted(report.finished_before) == [0, 1]
    redone = [json.loads((out / f"shard-{j:05d}.json").read_text())["rows"] for j in (2, 3)]
    assert third.images == sum(redone) == 7  # 8 files, one of them unreadable
    emb, items, _ = single_process(photos)
    _, x, got = merged(out)
    np.testing.assert_array_equal(x, emb)
    assert got == items


def test_a_shard_whose_contents_changed_is_redone(tmp_path, photos):
    out = tmp_path / "out"
    run_workers(out, photos, 1, 2)
    jsonl = out / "shard-00001.jsonl"
    jsonl.write_text(jsonl.read_text().replace("owl", "emu"))  # same size, other bytes
    model = Model()
    (report,), _ = run_workers(out, photos, 1, 2, model)
    assert report.embedded == [1]


def test_workers_with_different_manifests_are_refused(tmp_path, photos):
    out = tmp_path / "out"
    manifest = Manifest.of_folder(photos)
    embed_shards(out, manifest, 0, 2, 2, Model(), batch_size=4, progress=False)
    Image.new("RGB", (8, 8)).save(photos / "owl" / "zz.png")  # the folder changed before worker 1 ran
    with pytest.raises(DataError, match="manifest_sha256.*differs from this worker's listing"):
        embed_shards(out, Manifest.of_folder(photos), 1, 2, 2, Model(), batch_size=4, progress=False)


def test_workers_with_another_shard_count_or_model_are_refused(tmp_path, photos):
    out = tmp_path / "out"
    manifest = Manifest.of_folder(photos)
    embed_shards(out, manifest, 0, 2, 2, Model(), batch_size=4, progress=False)
    with pytest.raises(DataError, match="num_shards: the folder was started with 2 shards, this worker has 3"):
        embed_shards(out, manifest, 1, 3, 3, Model(), batch_size=4, progress=False)
    with pytest.raises(DataError, match="model_info.fingerprint: the folder was embedded by model fp-a, this "
                       "worker's model is fp-b"):
        embed_shards(out, manifest, 1, 2, 2, Model("fp-b"), batch_size=4, progress=False)


def test_reading_refuses_missing_and_mixed_shard_folders(tmp_path, photos):
    out = tmp_path / "out"
    manifest = Manifest.of_folder(photos)
    embed_shards(out, manifest, 0, 2, 2, Model(), batch_size=4, progress=False)
    with pytest.raises(DataError, match=r"1 of 2 shards are missing or unfinished \(1\)"):
        ShardSet.open(out)
    other = tmp_path / "other"
    Image.new("RGB", (8, 8)).save(photos / "owl" / "zz.png")
    embed_shards(other, Manifest.of_folder(photos), 1, 2, 2, Model(), batch_size=4, progress=False)
    for suffix in ("npy", "jsonl", "json"):  # shard 1 of another collection dropped into the folder
        (out / f"shard-00001.{suffix}").write_bytes((other / f"shard-00001.{suffix}").read_bytes())
    with pytest.raises(DataError, match="shard-00001.json: manifest_sha256: .* mixes shards of two collections"):
        ShardSet.open(out)
    with pytest.raises(DataError, match="expected a shard folder .* found nothing"):
        ShardSet.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"it has no {HEADER_FILE}"):
        ShardSet.open(tmp_path / "empty")


def test_a_folder_with_other_files_is_not_used(tmp_path, photos):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="it holds other files"):
        embed_shards(out, Manifest.of_folder(photos), 0, 1, 1, Model(), progress=False)
    with pytest.raises(UsageError, match="shard mode writes a folder"):
        embed_shards(tmp_path / "x.npz", Manifest.of_folder(photos), 0, 1, 1, Model(), progress=False)


def test_shard_specs_and_the_torchrun_environment():
    assert parse_shard_spec("3/10") == (3, 10)
    assert parse_shard_spec(" 0 / 1 ") == (0, 1)
    for bad in ("3/3", "10", "a/b", "-1/4", "1/0", ""):
        with pytest.raises(UsageError, match="--shard: expected i/n"):
            parse_shard_spec(bad)
    assert worker_from_env({}) is None
    assert worker_from_env({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}) == (2, 4)
    with pytest.raises(UsageError, match="RANK/WORLD_SIZE"):
        worker_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert worker_shards(1, 3, 8) == [1, 4, 7]
    assert [shard_range(j, 3, 10) for j in range(3)] == [(0, 3), (3, 6), (6, 10)]
