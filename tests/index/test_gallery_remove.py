"""GalleryIndex.remove, row-filtered search and GalleryIndex.update (lock, load, change, save)."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from sbirkit.errors import DataError
from sbirkit.index.gallery import POINTER_FILE, GalleryIndex, RowFilter

N, D = 600, 16


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    items = [{"id": f"i{i}", "class_name": f"c{i % 3}"} for i in range(N)]
    return x, items


def build(data, factory):
    x, items = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = GalleryIndex.build(x, [dict(it) for it in items], {"embed_dim": D}, factory=factory, progress=False)
    if index.is_ivf:
        index.nprobe = 8  # every list: the IVF search is exhaustive, so results are comparable
    return index


DROP = [i for i in range(N) if i % 7 == 0]
KEEP = [i for i in range(N) if i % 7]


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "IVF8,PQ4x4", "PQ4x4", "SQ8", "PCA8,IVF8,Flat"])
def test_remove_is_the_same_as_filtering_the_rows_out(data, factory, tmp_path):
    """Codes are kept as they are: after remove, search gives exactly what the old index gave with
    the removed rows filtered out (ids and scores), also after a save and load."""
    x, _ = data
    index = build(data, factory)
    keep_mask = np.ones(N, dtype=bool)
    keep_mask[DROP] = False
    before = index.search(x[:50], k=5, rows=RowFilter.from_mask(keep_mask))
    before_ids = [[index.items[j]["id"] for j in row] for row in before.indices]
    assert index.remove([f"i{i}" for i in DROP]) == len(DROP)
    assert len(index) == len(KEEP) and [it["id"] for it in index.items] == [f"i{i}" for i in KEEP]
    index.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    for idx in (index, loaded):
        after = idx.search(x[:50], k=5)
        assert [[idx.items[j]["id"] for j in row] for row in after.indices] == before_ids
        np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5, atol=1e-5)
    assert loaded.updated is not None


def test_remove_from_a_graph_index_rebuilds_it_from_its_vectors(data):
    x, _ = data
    index = build(data, "HNSW16")
    index.remove([f"i{i}" for i in DROP])
    found = index.search(x[KEEP], k=1).indices[:, 0]
    assert np.mean([index.items[j]["id"] == f"i{i}" for j, i in zip(found, KEEP)]) > 0.98


def test_remove_refuses_unknown_ids_and_an_empty_result(data):
    index = build(data, "Flat")
    with pytest.raises(DataError) as err:
        index.remove(["i1", "nope", "i2"])
    assert str(err.value) == "remove: ids: expected ids the index holds, got 1 it does not: 'nope'"
    assert len(index) == N  # all or nothing
    with pytest.raises(DataError, match="would leave an empty index"):
        index.remove([f"i{i}" for i in range(N)])
    assert index.remove([]) == 0 and index.remove(["i3", "i3"]) == 1 and len(index) == N - 1


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "HNSW16", "PQ4x4", "PCA8,IVF8,Flat"])
def test_row_filter_keeps_to_its_rows(data, factory):
    x, items = data
    index = build(data, factory)
    mask = np.array([it["class_name"] == "c1" for it in items])
    result = index.search(x[:20], k=7, rows=RowFilter.from_mask(mask))
    assert result.indices.shape == (20, 7) and (result.indices >= 0).all()
    assert mask[result.indices].all()
    if factory == "Flat":  # exact: the best allowed rows, in order
        scores = x[:20] @ x.T
        scores[:, ~mask] = -np.inf
        np.testing.assert_array_equal(result.indices, np.argsort(-scores, axis=1)[:, :7])


def test_row_filter_with_fewer_rows_than_k(data):
    x, _ = data
    index = build(data, "Flat")
    result = index.search(x[:3], k=10, rows=RowFilter([5, 9, 11], N))
    assert result.indices.shape == (3, 3) and set(result.indices.ravel().tolist()) == {5, 9, 11}
    assert index.search(x[:3], k=10, rows=RowFilter([], N)).indices.shape == (3, 0)


def test_update_saves_a_new_version_and_a_failed_change_leaves_the_old_one(data, tmp_path):
    x, _ = data
    build(data, "Flat").save(tmp_path / "idx")
    first = (tmp_path / "idx" / POINTER_FILE).read_text()
    with pytest.raises(DataError):
        GalleryIndex.update(tmp_path / "idx", lambda idx: idx.remove(["nope"]))
    assert (tmp_path / "idx" / POINTER_FILE).read_text() == first
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted([".lock", POINTER_FILE, first.strip()])
    updated, n = GalleryIndex.update(tmp_path / "idx", lambda idx: idx.remove(["i0", "i1"]))
    assert n == 2 and len(GalleryIndex.load(tmp_path / "idx")) == N - 2
    assert (tmp_path / "idx" / POINTER_FILE).read_text() != first
    with pytest.raises(DataError, match="expected a gallery index folder"):
        GalleryIndex.update(tmp_path / "nothing", lambda idx: None)


def test_concurrent_updates_lose_no_rows(data, tmp_path):
    x, _ = data
    build(data, "Flat").save(tmp_path / "idx")
    rng = np.random.default_rng(1)
    new = rng.normal(size=(40, D)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)

    def add(part: int) -> None:
        rows = slice(part * 10, part * 10 + 10)
        items = [{"id": f"new{part}-{i}"} for i in range(10)]
        GalleryIndex.update(tmp_path / "idx", lambda idx: idx.add(new[rows], items))

    threads = [threading.Thread(target=add, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = GalleryIndex.load(tmp_path / "idx")
    assert len(final) == N + 40
    assert {it["id"] for it in final.items} >= {f"new{p}-{i}" for p in range(4) for i in range(10)}
