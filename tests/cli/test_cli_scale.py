"""``sbirkit embed --shard``/``--shards``/torchrun, ``index build --from-embeddings``, ``--max-memory``,
``--target-recall``, ``index info --verify``, and their one-line errors."""

from __future__ import annotations

import json

import numpy as np
from cli_helpers import invoke, ok, one_line_error


def search_json(index, sketches, k=5):
    return json.loads(ok("search", "--index", index, "--sketch", sketches, "-k", k, "--json").stdout)


def ranked(out):
    return [[(r["id"], round(r["score"], 5)) for r in q["results"]] for q in out["queries"]]


def test_sharded_embedding_builds_the_same_index_as_the_folder(cli_run, cli_index, tmp_path):
    run, photos, sketches = cli_run
    shards = tmp_path / "shards"
    first = ok("embed", run, photos, "--out", shards, "--shard", "0/2", "--shards", "3")
    assert "worker 0/2: embedded" in first.stdout and "in 2 shards" in first.stdout
    ok("embed", run, photos, "--out", shards, "--shard", "1/2", "--shards", "3")
    assert sorted(p.name for p in shards.glob("shard-*.npy")) == [f"shard-0000{j}.npy" for j in range(3)]
    again = ok("embed", run, photos, "--out", shards, "--shard", "1/2", "--shards", "3")
    assert "0 images in 0 shards" in again.stdout and "1 shards finished earlier" in again.stdout
    # the shards hold what the single-file mode writes, in the same order
    ok("embed", run, photos, "--out", tmp_path / "all.npz")
    with np.load(tmp_path / "all.npz") as z:
        single, ids = z["embeddings"], z["ids"].tolist()
    merged = np.concatenate([np.load(shards / f"shard-0000{j}.npy") for j in range(3)])
    # a CNN's output depends on its batch's makeup by float rounding only (shards start new batches)
    np.testing.assert_allclose(merged, single, rtol=0, atol=1e-6)
    lines = [json.loads(line) for j in range(3) for line in (shards / f"shard-0000{j}.jsonl").read_text().splitlines()]
    assert [it["id"] for it in lines] == ids
    # an index built from the shards answers as the one built from the folder
    built = ok("index", "build", "--from-embeddings", shards, "--out", tmp_path / "idx")
    assert "indexed 9 vectors" in built.stdout
    assert ranked(search_json(tmp_path / "idx", sketches)) == ranked(search_json(cli_index, sketches))
    info = ok("index", "info", tmp_path / "idx", "--verify").stdout
    assert "loading: memory-mapped; built from shards" in info
    assert "verified: full sha256 of index.faiss, items.jsonl match meta.json" in info
    # also from the single-file .npz, and with the run named (it must be the shards' model)
    ok("index", "build", run, "--from-embeddings", tmp_path / "all.npz", "--out", tmp_path / "idx2")
    assert ranked(search_json(tmp_path / "idx2", sketches)) == ranked(search_json(cli_index, sketches))


def test_torchrun_rank_and_world_size_pick_the_shard(cli_run, tmp_path):
    run, photos, _ = cli_run
    out = tmp_path / "shards"
    result = ok("embed", run, photos, "--out", out, env={"RANK": "1", "WORLD_SIZE": "2"})
    assert "worker 1/2 (torchrun RANK/WORLD_SIZE)" in result.stdout
    assert [p.name for p in sorted(out.glob("shard-*.json"))] == ["shard-00001.json"]
    one_line_error(invoke("index", "build", "--from-embeddings", out, "--out", tmp_path / "idx"),
                   "1 of 2 shards are missing or unfinished (0)", "run their workers again")
    # WORLD_SIZE=1 (a single torchrun process) keeps the single-file mode
    ok("embed", run, photos, "--out", tmp_path / "one.npz", env={"RANK": "0", "WORLD_SIZE": "1"})
    assert (tmp_path / "one.npz").is_file()


def test_max_memory_chooses_and_records_the_index(cli_run, tmp_path):
    run, photos, sketches = cli_run
    result = ok("index", "build", run, photos, "--out", tmp_path / "idx", "--max-memory", "1MB")
    assert "with Flat" in result.stdout
    meta = json.loads(ok("index", "info", tmp_path / "idx", "--json").stdout)
    tuned = meta["build"]["autotune"]
    assert tuned["max_memory_bytes"] == 10**6 and tuned["factory"] == "Flat" and tuned["recall@10"] == 1.0
    assert tuned["target_recall"] == 0.95 and meta["build"]["mmap"] is True
    info = ok("index", "info", tmp_path / "idx").stdout
    assert "chosen: Flat for --max-memory 976.6 KiB" in info and "recall@10 1.000" in info  # 1MB = 10^6 bytes
    assert len(search_json(tmp_path / "idx", sketches)["queries"][0]["results"]) == 5


def test_one_line_errors(cli_run, tmp_path):
    run, photos, _ = cli_run
    for spec in ("2/2", "x", "1/0"):
        one_line_error(invoke("embed", run, photos, "--out", tmp_path / "s", "--shard", spec), "--shard: expected i/n")
    one_line_error(invoke("embed", run, photos, "--out", tmp_path / "s", "--shard", "0/4", "--shards", "2"),
                   "--shards: expected at least as many shards as workers (4), got 2")
    one_line_error(invoke("embed", run, photos, "--out", tmp_path / "x.npz", "--shard", "0/2"),
                   "--out", "shard mode writes a folder")
    one_line_error(invoke("embed", run, photos, "--out", tmp_path / "s", "--shards", "0"),
                   "--shards: expected a positive integer, got 0")
    one_line_error(invoke("embed", run, photos, "--out", tmp_path / "s", env={"RANK": "3", "WORLD_SIZE": "2"}),
                   "RANK/WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE")
    out = tmp_path / "idx"
    one_line_error(invoke("index", "build", run, photos, "--out", out, "--max-memory", "lots"),
                   "--max-memory: expected a size such as 4GB")
    one_line_error(invoke("index", "build", run, photos, "--out", out, "--max-memory", "10B"),
                   "--max-memory: 10 B is too small for 9 16-dim vectors")
    one_line_error(invoke("index", "build", run, photos, "--out", out, "--max-memory", "1GB", "--factory", "Flat"),
                   "--factory, --max-memory: expected one of them")
    one_line_error(invoke("index", "build", run, photos, "--out", out, "--target-recall", "1.5"),
                   "--target-recall: expected a recall in (0, 1]")
    one_line_error(invoke("index", "build", "--from-embeddings", tmp_path / "nowhere", "--out", out),
                   "--from-embeddings", "expected a shard folder", "found nothing")
    one_line_error(invoke("index", "build", run, photos, "--from-embeddings", tmp_path, "--out", out),
                   "--from-embeddings builds from the embeddings; give no photo folder")
    one_line_error(invoke("index", "build", "--out", out), "RUN FOLDER: expected a run folder and a photo folder")
    # a shard folder that mixes two photo collections
    shards = tmp_path / "mixed"
    ok("embed", run, photos, "--out", shards, "--shard", "0/2")
    other = tmp_path / "other_photos"
    other.mkdir()
    for p in sorted(photos.rglob("*.png"))[:4]:
        (other / p.name).write_bytes(p.read_bytes())
    one_line_error(invoke("embed", run, other, "--out", shards, "--shard", "1/2"),
                   "manifest", "differs from this worker's listing of the photos")
