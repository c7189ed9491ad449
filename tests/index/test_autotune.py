"""Choosing an index for a memory budget, building from shards in blocks, and recall against exact search
(``sbirkit.index.autotune``)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from sbirkit.errors import UsageError
from sbirkit.index import GalleryIndex
from sbirkit.index.autotune import (
    ArraySource,
    build_index,
    candidates,
    choose,
    estimate_bytes,
    exact_knn,
    parse_memory,
    recall_at_k,
)
from sbirkit.index.shards import FORMAT, HEADER_FILE, MANIFEST_FILE, ShardSet, write_shard


@pytest.fixture(autouse=True)
def one_faiss_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n: int, d: int, seed: int = 0, clusters: int = 40, noise: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def items_for(n: int) -> list[dict]:
    return [{"id": f"p{i:05d}", "class_name": f"c{i % 5}"} for i in range(n)]


INFO = {"fingerprint": "fp", "embed_dim": 32}


def write_shards(root, x: np.ndarray, items: list[dict], num_shards: int, info=INFO) -> ShardSet:
    """A shard folder as ``embed --shard`` writes it, straight from arrays."""
    import hashlib
    import json

    root.mkdir(parents=True, exist_ok=True)
    manifest = "".join(it["id"] + "\n" for it in items).encode()
    (root / MANIFEST_FILE).write_bytes(manifest)
    header = {"format": FORMAT, "format_version": 1, "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
              "files": len(items), "num_shards": num_shards, "modality": "photo", "model_info": info}
    (root / HEADER_FILE).write_text(json.dumps(header))
    for j in range(num_shards):
        a, b = j * len(items) // num_shards, (j + 1) * len(items) // num_shards
        write_shard(root, j, header, x[a:b], items[a:b])
    return ShardSet.open(root)


def test_parse_memory():
    assert parse_memory("4GB") == 4 * 10**9
    assert parse_memory("4GiB") == parse_memory("4G") == 4 * 2**30
    assert parse_memory("512 MB") == 512 * 10**6
    assert parse_memory("1.5KiB") == 1536
    assert parse_memory("2000000") == 2_000_000
    for bad in ("lots", "4 GBs", "-1GB", "0", ""):
        with pytest.raises(UsageError, match="--max-memory: expected"):
            parse_memory(bad)


def test_smaller_budgets_choose_smaller_index_kinds():
    n, d = 200_000, 64
    by_kind = {c.kind: c for c in candidates(n, d)}
    assert list(by_kind) == ["HNSW", "IVF-Flat", "IVF-PQ", "OPQ+IVF-PQ"]
    picks = [choose(n, d, budget)[0].factory for budget in (10**9, 80 * 10**6, 20 * 10**6, 6 * 10**6, 3_500_000)]
    assert picks == ["HNSW32", "IVF512,Flat", "IVF512,PQ32", "OPQ16,IVF512,PQ16", "OPQ8,IVF512,PQ8"]
    sizes = [estimate_bytes(f, n, d) for f in picks]
    assert sizes == sorted(sizes, reverse=True)
    # a small gallery is searched exactly when it fits
    assert choose(5000, d, 10**7)[0].factory == "Flat"
    with pytest.raises(UsageError, match=r"--max-memory: 1000 B is too small for 200,000 64-dim vectors: the "
                       r"smallest index \(OPQ4,IVF512,PQ4\) needs about"):
        choose(n, d, 1000)


def test_memory_estimates_match_the_built_indexes():
    x = clustered(20_000, 32)
    for factory in ("Flat", "HNSW16", "IVF128,Flat", "IVF128,PQ8"):  # OPQ adds its d x d matrix (below)
        index = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
            faiss.downcast_index(ivf).do_polysemous_training = False  # slow, and not what the estimate is about
        index.train(x[:3000])
        index.add(x)
        real = faiss.serialize_index(index).nbytes
        assert 0.8 < estimate_bytes(factory, len(x), 32) / real < 1.25, factory
    assert estimate_bytes("OPQ8,IVF128,PQ8", 20_000, 32) == estimate_bytes("IVF128,PQ8", 20_000, 32) + 4 * 32 * 32


def test_a_tiny_budget_builds_a_quantized_index_and_records_its_recall():
    x = clustered(3000, 32)
    src = ArraySource(x, items_for(len(x)), INFO)
    big = build_index(src, max_memory="10MB", progress=False)
    assert big.factory == "Flat"
    assert big.build_info["autotune"]["recall@10"] == 1.0
    small = build_index(src, max_memory="150kB", target_recall=0.9, progress=False)
    assert "PQ" in small.factory and small.is_ivf
    tuned = small.build_info["autotune"]
    assert tuned["max_memory_bytes"] == 150_000
    assert tuned["estimated_bytes"] <= 150_000
    assert tuned["target_recall"] == 0.9
    assert tuned["queries"]["held_out"] >= 100
    assert [c["fits"] for c in tuned["considered"]][:1] == [False]  # Flat did not fit
    assert tuned["search_param"] == {"nprobe": small.nprobe}
    # the recorded recall is the recall of the saved index, recomputed independently here
    q_rows = np.arange(0, 3000, 7)
    _, truth = exact_knn(src, x[q_rows], 10, exclude=q_rows)
    _, found = small.index.search(x[q_rows], 11)
    found = np.array([[j for j in row if j != r][:10] for row, r in zip(found, q_rows)])
    assert abs(recall_at_k(found, truth) - tuned["recall@10"]) < 0.08
    assert 0 < tuned["recall@10"] < 1


def test_exact_knn_in_blocks_equals_brute_force():
    x = clustered(1000, 32, seed=1)
    q = x[[3, 500, 999]]
    src = ArraySource(x, items_for(len(x)), INFO)
    d, i = exact_knn(src, q, 5, block=128)
    ref = np.argsort(-(q @ x.T), axis=1)[:, :5]
    np.testing.assert_array_equal(i, ref)
    np.testing.assert_allclose(d, np.take_along_axis(q @ x.T, ref, axis=1), rtol=1e-5)
    _, i = exact_knn(src, q, 5, exclude=np.array([3, 500, 999]), block=100)
    np.testing.assert_array_equal(i, np.argsort(-(q @ x.T), axis=1)[:, 1:6])


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_from_shards_builds_the_same_index_as_from_memory(tmp_path, factory):
    x = clustered(1500, 32, seed=2)
    items = items_for(len(x))
    shards = write_shards(tmp_path / "shards", x, items, 4)
    a = build_index(shards, factory=factory, progress=False)
    b = GalleryIndex.build(x, items, INFO, factory=factory, progress=False)
    assert a.factory == b.factory and len(a) == len(b) and a.nprobe == b.nprobe
    ra, rb = a.search(x[:50], 10), b.search(x[:50], 10)
    np.testing.assert_array_equal(ra.indices, rb.indices)
    np.testing.assert_allclose(ra.scores, rb.scores, rtol=1e-5, atol=1e-6)
    assert list(a.items) == items and a.model_info == INFO
    a.save(tmp_path / "idx")
    back = GalleryIndex.load(tmp_path / "idx")
    assert back.mapped  # built from shards: memory-mapped by default
    np.testing.assert_array_equal(back.search(x[:50], 10).indices, rb.indices)
    assert back.search(x[:1], 3).items_for(0)[0]["id"] == items[int(rb.indices[0, 0])]["id"]


def test_a_sampled_training_set_is_seeded(tmp_path):
    x = clustered(4000, 32, seed=3)
    shards = write_shards(tmp_path / "shards", x, items_for(len(x)), 3)
    a = build_index(shards, factory="IVF32,Flat", train_size=2000, seed=5, progress=False)
    b = build_index(shards, factory="IVF32,Flat", train_size=2000, seed=5, progress=False)
    assert a.build_info["train_size"] == 2000
    np.testing.assert_array_equal(a.search(x[:20], 5).indices, b.search(x[:20], 5).indices)


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8x4", "OPQ4,IVF16,PQ4x4"])
def test_presized_lists_hold_exactly_what_add_puts_there(tmp_path, factory):
    from sbirkit.index.autotune import _add_ivf_presized

    x = clustered(3000, 32, seed=4)
    shards = write_shards(tmp_path / "shards", x, items_for(len(x)), 3)
    trained = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(trained))
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False
    if isinstance(trained, faiss.IndexPreTransform):
        faiss.downcast_VectorTransform(trained.chain.at(0)).niter = 3  # a quick OPQ: any rotation will do
    trained.train(x)
    plain, presized = faiss.clone_index(trained), faiss.clone_index(trained)
    plain.add(x)
    _add_ivf_presized(presized, shards, len(x), factory, "ip", progress=False)
    assert presized.ntotal == plain.ntotal == len(x)
    a = faiss.extract_index_ivf(plain).invlists
    b = faiss.extract_index_ivf(presized).invlists
    for list_no in range(16):
        n = a.list_size(list_no)
        assert b.list_size(list_no) == n
        np.testing.assert_array_equal(faiss.rev_swig_ptr(a.get_ids(list_no), n),
                                      faiss.rev_swig_ptr(b.get_ids(list_no), n))
        np.testing.assert_array_equal(faiss.rev_swig_ptr(a.get_codes(list_no), n * a.code_size),
                                      faiss.rev_swig_ptr(b.get_codes(list_no), n * b.code_size))
    assert faiss.serialize_index(plain).tobytes() == faiss.serialize_index(presized).tobytes()
