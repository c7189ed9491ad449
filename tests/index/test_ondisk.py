"""Memory-mapped index loading (``GalleryIndex.load(mmap=True)``, ``sbirkit.index.ondisk``) and lazily
read items (``sbirkit.index.items``): the same results as in memory, read-only, and what is checked."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from sbirkit.errors import DataError, UsageError
from sbirkit.index import GalleryIndex, checksums
from sbirkit.index.autotune import ArraySource, build_index
from sbirkit.index.items import ConcatItems, JsonlItems, item_line
from sbirkit.index.ondisk import verify_index


@pytest.fixture(autouse=True)
def one_faiss_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def vectors(n=2000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def items(n):
    return [{"id": f"p{i}", "path": f"/photos/p{i}.jpg", "class_name": f"c{i % 3}"} for i in range(n)]


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF32,Flat", "IVF32,PQ4x6", "OPQ4,IVF32,PQ4x6"])
def test_a_mapped_index_searches_exactly_like_the_loaded_one(tmp_path, factory):
    x = vectors()
    g = build_index(ArraySource(x, items(len(x)), {"fingerprint": "fp", "embed_dim": 16}), factory=factory,
                    progress=False, mmap=False)
    g.save(tmp_path / "idx")
    full = GalleryIndex.load(tmp_path / "idx")
    mapped = GalleryIndex.load(tmp_path / "idx", mmap=True)
    assert not full.mapped and mapped.mapped
    assert isinstance(mapped.items, JsonlItems) and len(mapped.items) == len(x)
    if "IVF" in factory:
        ivf = faiss.extract_index_ivf(mapped.index)
        assert isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)
        assert mapped.nprobe == full.nprobe
    q = vectors(40, seed=1)
    a, b = full.search(q, 10), mapped.search(q, 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.items_for(3) == b.items_for(3)
    assert list(mapped.items) == items(len(x))


def test_a_mapped_index_is_read_only(tmp_path):
    x = vectors()
    GalleryIndex.build(x, items(len(x)), {"fingerprint": "fp"}, progress=False).save(tmp_path / "idx")
    mapped = GalleryIndex.load(tmp_path / "idx", mmap=True)
    for call in (lambda: mapped.add(x[:1], [{"id": "new"}]), lambda: mapped.remove(["p1"]),
                 lambda: mapped.save(tmp_path / "other")):
        with pytest.raises(UsageError, match="loaded memory-mapped"):
            call()
    assert len(mapped) == len(x)  # FAISS would have aborted the process on a mapped flat add


def test_mmap_follows_the_build_and_updates_still_work(tmp_path):
    x = vectors()
    g = GalleryIndex.build(x, items(len(x)), {"fingerprint": "fp"}, factory="IVF32,Flat", progress=False)
    g.build_info = {"mmap": True}
    g.save(tmp_path / "idx")
    assert GalleryIndex.load(tmp_path / "idx").mapped
    assert not GalleryIndex.load(tmp_path / "idx", mmap=False).mapped
    updated, _ = GalleryIndex.update(tmp_path / "idx", lambda idx: idx.add(vectors(5, seed=9),
                                                                           [{"id": f"n{i}"} for i in range(5)]))
    back = GalleryIndex.load(tmp_path / "idx")
    assert back.mapped and len(back) == len(x) + 5 and back.items[-1] == {"id": "n4"}
    assert back.build_info == {"mmap": True}
    # a lazily read index saved again writes the same items.jsonl bytes, unparsed
    copy = GalleryIndex.load(tmp_path / "idx", mmap=False)
    copy.items = back.items
    copy.save(tmp_path / "copy")
    version = lambda p: p / (p / "CURRENT").read_text().strip()  # noqa: E731
    assert (version(tmp_path / "copy") / "items.jsonl").read_bytes() == \
        (version(tmp_path / "idx") / "items.jsonl").read_bytes()


def test_what_a_mapped_load_checks(tmp_path, monkeypatch):
    monkeypatch.setattr(checksums, "QUICK_BYTES", 4096)  # the two ends the quick checksum covers: 4 kB here
    x = vectors(2000, 16)
    GalleryIndex.build(x, items(len(x)), {"fingerprint": "fp"}, factory="IVF64,Flat", progress=False).save(
        tmp_path / "idx")
    version = tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text().strip()
    index_file = version / "index.faiss"
    size = index_file.stat().st_size
    assert size > 4 * 4096
    original = index_file.read_bytes()

    def patched(offset):
        data = bytearray(original)
        data[offset] ^= 0xFF
        index_file.write_bytes(bytes(data))

    patched(100)  # the header/centroids: caught by the quick checksum
    with pytest.raises(DataError, match="index.faiss: sha256 of its ends: differs from meta.json's"):
        GalleryIndex.load(tmp_path / "idx", mmap=True)
    patched(size // 2)  # the middle of the lists: only the full checksum sees it (documented trade-off)
    assert GalleryIndex.load(tmp_path / "idx", mmap=True).mapped
    with pytest.raises(DataError, match="index.faiss: sha256: expected"):
        GalleryIndex.load(tmp_path / "idx", mmap=True, verify=True)
    with pytest.raises(DataError, match="index.faiss: sha256: expected"):
        verify_index(tmp_path / "idx")
    with pytest.raises(DataError, match="index.faiss: sha256: expected"):
        GalleryIndex.load(tmp_path / "idx")  # the in-memory load checks everything, as before
    index_file.write_bytes(original[:-10])
    with pytest.raises(DataError, match=f"index.faiss: size: expected {size} bytes"):
        GalleryIndex.load(tmp_path / "idx", mmap=True)
    index_file.write_bytes(original)
    assert verify_index(tmp_path / "idx") == {"index.faiss": "ok", "items.jsonl": "ok"}
    items_file = version / "items.jsonl"
    items_file.write_text(items_file.read_text().replace('"c1"', '"c4"'))
    with pytest.raises(DataError, match="items.jsonl: sha256: expected"):
        GalleryIndex.load(tmp_path / "idx", mmap=True)


def test_jsonl_items(tmp_path):
    rows = [{"id": "a", "x": 1}, {"path": "/p/ü.png"}, {"id": "c", "class_name": None}]
    f = tmp_path / "items.jsonl"
    f.write_bytes(b"".join(item_line(r) for r in rows))
    items_ = JsonlItems(f, expect_rows=3)
    assert len(items_) == 3 and list(items_) == rows
    assert items_[1] == rows[1] and items_[-1] == rows[2] and items_[0:2] == rows[:2]
    assert b"".join(items_.raw_lines()) == f.read_bytes()
    with pytest.raises(IndexError):
        items_[3]
    both = ConcatItems([items_, JsonlItems(f)])
    assert len(both) == 6 and both[4] == rows[1] and list(both)[3:] == rows
    f.write_bytes(item_line(rows[0]) + b"\n" + item_line(rows[1]))  # a blank line is skipped
    assert list(JsonlItems(f)) == rows[:2]
    f.write_bytes(item_line(rows[0]) + b'{"id": "trunc')
    with pytest.raises(DataError, match="the file is truncated"):
        JsonlItems(f)
    f.write_bytes(item_line(rows[0]) + b"[1, 2]\n")
    with pytest.raises(DataError, match=r"items.jsonl:2: expected an object with 'id' or 'path'"):
        JsonlItems(f)[1]
    with pytest.raises(DataError, match="rows: expected 5 items, got 2"):
        JsonlItems(f, expect_rows=5)
    with pytest.raises(DataError, match="sha256: expected"):
        JsonlItems(f, sha256="0" * 64)
    f.write_bytes(b"")
    assert len(JsonlItems(f)) == 0
    assert json.loads(item_line({"id": "é"})) == {"id": "é"}
