"""GalleryIndex: exact search vs brute force, IVF recall, persistence, atomic save, refusals."""

from __future__ import annotations

import json
import os
import warnings

import faiss
import numpy as np
import pytest
import torch

from sbirkit.data import DataError
from sbirkit.index import GalleryIndex, ModelMismatchError, suggested_ivf_factory
from sbirkit.index import gallery as gallery_mod

MODEL = {"fingerprint": "fp-aaa", "embed_dim": 16, "backbone": "tiny"}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _random(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return _unit(np.random.default_rng(seed).standard_normal((n, d)))


def _clustered(n: int, d: int, clusters: int, seed: int, noise: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, d)))
    assign = rng.integers(0, clusters, n)
    return _unit(centres[assign] + noise * rng.standard_normal((n, d)) / np.sqrt(d))


def _items(n: int, offset: int = 0) -> list[dict]:
    return [{"id": f"img{i + offset}", "label": (i + offset) % 5} for i in range(n)]


def _build(x, factory="Flat", **kw) -> GalleryIndex:
    info = dict(MODEL, embed_dim=x.shape[1])
    return GalleryIndex.build(x, _items(len(x)), info, factory=factory, progress=False, **kw)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


# ---- exact search -----------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_matches_numpy_brute_force(metric):
    x, q = _random(500, seed=1), _random(20, seed=2)
    res = _build(x, metric=metric).search(q, k=10)
    if metric == "ip":
        sim = q.astype(np.float64) @ x.T.astype(np.float64)
        ref_idx = np.argsort(-sim, axis=1, kind="stable")[:, :10]
    else:
        sim = ((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
        ref_idx = np.argsort(sim, axis=1, kind="stable")[:, :10]
    ref_scores = np.take_along_axis(sim, ref_idx, axis=1)
    assert res.scores.shape == res.indices.shape == (20, 10)
    np.testing.assert_allclose(res.scores, ref_scores, rtol=1e-5, atol=1e-5)
    # the returned rows really have those scores (robust to ties) ...
    np.testing.assert_allclose(
        np.take_along_axis(sim, res.indices, axis=1), ref_scores, rtol=1e-5, atol=1e-5
    )
    # ... and the ranking is identical wherever a rank is not tied (to float32 precision) with a neighbour
    top = np.take_along_axis(
        sim, np.argsort(-sim if metric == "ip" else sim, axis=1)[:, :11], axis=1
    )
    gap = np.abs(np.diff(top, axis=1))
    clear = (gap[:, :10] > 1e-5) & np.concatenate(
        [np.ones((20, 1), bool), gap[:, :9] > 1e-5], axis=1
    )
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(res.indices[clear], ref_idx[clear])


def test_k_larger_than_gallery_returns_everything_ranked():
    x = _random(7, seed=3)
    g = _build(x)
    res = g.search(x[2], k=50)  # a single 1-D query is accepted
    assert res.indices.shape == (1, 7)
    assert sorted(res.indices[0].tolist()) == list(range(7))
    assert res.indices[0, 0] == 2 and res.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(res.scores[0]) <= 1e-7)
    ranked = res.items_for(0)
    assert [r["rank"] for r in ranked] == list(range(7))
    assert ranked[0]["id"] == "img2" and ranked[0]["label"] == 2 and ranked[0]["index"] == 2
    assert ranked[0]["score"] == pytest.approx(float(res.scores[0, 0]))
    assert "score" not in g.items[2]  # items_for returns copies


def test_torch_tensor_input_equals_numpy_input():
    x, q = _random(100, seed=4), _random(3, seed=5)
    a = _build(x).search(q, k=5)
    b = GalleryIndex.build(torch.from_numpy(x), _items(100), MODEL, progress=False).search(
        torch.from_numpy(q), 5
    )
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.scores, b.scores)


# ---- refusals ----------------------------------------------------------------------------------
def test_bad_gallery_inputs_are_refused_in_one_line():
    x = _random(10)
    bad = x.copy()
    bad[3, 0] = np.nan
    bad[7, 1] = np.inf
    with pytest.raises(DataError, match=r"NaN/inf in 2 row\(s\): 3, 7") as e:
        GalleryIndex.build(bad, _items(10), MODEL, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="at least one row"):
        GalleryIndex.build(np.zeros((0, 16), np.float32), [], MODEL, progress=False)
    with pytest.raises(DataError, match="embed_dim 32, got 16"):
        GalleryIndex.build(x, _items(10), {"embed_dim": 32}, progress=False)
    with pytest.raises(DataError, match="expected 10 item dicts.*got 9"):
        GalleryIndex.build(x, _items(9), MODEL, progress=False)
    with pytest.raises(DataError, match=r"items\[4\].*'id' or 'path'"):
        GalleryIndex.build(x, _items(4) + [{"label": 1}] + _items(5, 5), MODEL, progress=False)
    with pytest.raises(DataError, match=r"items\[1\].*'img0' is already"):
        GalleryIndex.build(x, [{"id": "img0"}] * 10, MODEL, progress=False)
    with pytest.raises(ValueError, match="metric"):
        GalleryIndex.build(x, _items(10), MODEL, metric="cos", progress=False)
    with pytest.raises(ValueError, match="could not build FAISS index 'Nonsense42'"):
        GalleryIndex.build(x, _items(10), MODEL, factory="Nonsense42", progress=False)


def test_query_dimension_mismatch_refused_before_search(monkeypatch):
    g = _build(_random(20))
    real, calls = g._index, []

    class Spy:  # forwards to the FAISS index, recording every search
        d, ntotal, metric_type = real.d, real.ntotal, real.metric_type

        def search(self, *a, **k):
            calls.append(a)
            return real.search(*a, **k)

    monkeypatch.setattr(g, "_index", Spy())
    with pytest.raises(DataError, match="query dim 8 differs from index dim 16") as e:
        g.search(np.ones((2, 8), np.float32))
    assert "\n" not in str(e.value) and calls == []
    assert g.search(_random(1), 3).indices.shape == (1, 3) and len(calls) == 1
    with pytest.raises(DataError, match="NaN/inf"):
        g.search(np.full((1, 16), np.nan, np.float32))


def test_unnormalised_gallery_warns_for_ip():
    with pytest.warns(UserWarning, match="not L2-normalised"):
        GalleryIndex.build(np.ones((4, 16), np.float32), _items(4), MODEL, progress=False)


# ---- IVF -----------------------------------------------------------------------------------------
def test_ivf_recall_at_10_vs_exact_on_clustered_data():
    x = _clustered(8000, 32, clusters=64, seed=10)
    rng = np.random.default_rng(11)
    q = _unit(
        x[rng.choice(len(x), 100, replace=False)]
        + 0.2 * rng.standard_normal((100, 32)) / np.sqrt(32)
    )
    exact = _build(x).search(q, k=10)
    ivf = _build(x, factory=suggested_ivf_factory(len(x)), seed=0)
    assert ivf.factory == "IVF358,Flat" and ivf.nprobe == 19
    r1 = _recall(ivf.search(q, 10, nprobe=1).indices, exact.indices)
    r16 = _recall(ivf.search(q, 10, nprobe=16).indices, exact.indices)
    print(f"recall@10 nprobe=1: {r1:.3f}, nprobe=16: {r16:.3f}")
    assert r16 >= 0.9, r16
    assert r1 < r16  # nprobe matters: one list misses neighbours in the next cell
    full = ivf.search(q, 10, nprobe=358)  # scanning every list is exact
    np.testing.assert_array_equal(full.indices, exact.indices)
    assert ivf.nprobe == 19  # a per-call nprobe does not change the stored one


def test_ivf_nlist_too_large_is_reduced_with_warning():
    x = _random(200, seed=6)
    with pytest.warns(UserWarning, match=r"nlist 1000 > 200 training vectors; using 'IVF5,Flat'"):
        g = _build(x, factory="IVF1000,Flat")
    assert g.factory == "IVF5,Flat" and len(g) == 200
    assert faiss.extract_index_ivf(g.index).nlist == 5


def test_ivf_build_is_repeatable_with_seed_and_train_size():
    x = _clustered(3000, 16, 20, seed=7)
    a = _build(x, factory="IVF32,Flat", seed=3, train_size=1500, nprobe=2)
    b = _build(x, factory="IVF32,Flat", seed=3, train_size=1500, nprobe=2)
    ra, rb = a.search(x[:50], 10), b.search(x[:50], 10)
    np.testing.assert_array_equal(ra.indices, rb.indices)
    np.testing.assert_array_equal(ra.scores, rb.scores)


def test_nprobe_on_exact_index_is_refused():
    g = _build(_random(30))
    assert g.nprobe is None
    with pytest.raises(ValueError, match="only IVF indexes have nprobe"):
        g.search(_random(1), nprobe=4)


# ---- add ---------------------------------------------------------------------------------------
def test_add_grows_flat_index_like_a_single_build():
    x, q = _random(300, seed=8), _random(10, seed=9)
    whole = _build(x).search(q, 10)
    g = GalleryIndex.build(x[:120], _items(120), MODEL, progress=False)
    g.add(x[120:], _items(180, offset=120))
    assert len(g) == 300 and len(g.items) == 300
    res = g.search(q, 10)
    np.testing.assert_array_equal(res.indices, whole.indices)
    assert res.items_for(0)[0]["id"] == f"img{whole.indices[0, 0]}"
    with pytest.raises(DataError, match="'img5' is already in the gallery"):
        g.add(x[:1], [{"id": "img5"}])
    with pytest.raises(DataError, match="expected 16 \\(index dim\\), got 8"):
        g.add(np.ones((1, 8), np.float32), [{"id": "new"}])
    assert len(g) == 300  # refused adds change nothing


def test_add_to_trained_ivf_index_is_searchable():
    x = _clustered(2000, 16, 10, seed=12)
    g = _build(x[:1500], factory="IVF16,Flat")
    g.add(x[1500:], _items(500, offset=1500))
    res = g.search(x[1700:1710], 1, nprobe=16)
    assert res.indices[:, 0].tolist() == list(range(1700, 1710))


# ---- persistence -------------------------------------------------------------------------------
@pytest.mark.parametrize("factory,nprobe", [("Flat", None), ("IVF24,Flat", 4), ("HNSW16", None)])
def test_save_load_roundtrip_gives_identical_results(tmp_path, factory, nprobe):
    x = _clustered(1500, 16, 12, seed=13)
    q = _random(25, seed=14)
    g = _build(x, factory=factory, seed=1, nprobe=nprobe)
    before = g.search(q, 10)
    g.save(tmp_path / "idx")
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temporary folders left behind
    assert sorted(os.listdir(tmp_path / "idx")) == ["index.faiss", "items.jsonl", "meta.json"]
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["ntotal"] == 1500 and meta["dim"] == 16 and meta["factory"] == factory
    assert meta["model_info"] == dict(MODEL, embed_dim=16) and meta["nprobe"] == nprobe
    assert meta["sbirkit_version"] and meta["created"] and meta["metric"] == "ip"
    h = GalleryIndex.load(tmp_path / "idx", expect_model="fp-aaa")
    assert h.nprobe == nprobe and h.items == g.items and len(h) == 1500
    after = h.search(q, 10)
    np.testing.assert_array_equal(after.indices, before.indices)
    np.testing.assert_array_equal(after.scores, before.scores)


def test_load_refuses_a_different_model(tmp_path):
    _build(_random(20)).save(tmp_path / "idx")
    with pytest.raises(
        ModelMismatchError, match="index built with model fp-aaa, query model fp-bbb"
    ) as e:
        GalleryIndex.load(tmp_path / "idx", expect_model="fp-bbb")
    assert str(tmp_path / "idx") in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ModelMismatchError, match="fp-aaa.*fp-ccc"):
        GalleryIndex.load(tmp_path / "idx", expect_model={"fingerprint": "fp-ccc", "embed_dim": 16})
    with pytest.raises(ModelMismatchError, match="embed_dim=16.*embed_dim=64"):
        GalleryIndex.load(tmp_path / "idx", expect_model={"embed_dim": 64})
    assert len(GalleryIndex.load(tmp_path / "idx", expect_model=dict(MODEL))) == 20


def test_load_refuses_missing_and_inconsistent_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=str(missing)):
        GalleryIndex.load(missing)
    root = tmp_path / "idx"
    _build(_random(30)).save(root)
    good_items = (root / "items.jsonl").read_text()

    lines = good_items.splitlines(keepends=True)
    (root / "items.jsonl").write_text("".join(lines[:-1]))  # one whole row lost
    with pytest.raises(
        DataError, match=rf"{root / 'items.jsonl'}: rows: expected 30 items.*got 29"
    ) as e:
        GalleryIndex.load(root)
    assert "\n" not in str(e.value)
    (root / "items.jsonl").write_text(good_items[: len(good_items) - 7])  # cut mid-line
    with pytest.raises(DataError, match=rf"{root / 'items.jsonl'}:30: .*truncated"):
        GalleryIndex.load(root)
    (root / "items.jsonl").write_text(good_items)

    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps(dict(meta, ntotal=31)))
    with pytest.raises(DataError, match=rf"{root / 'index.faiss'}: ntotal: expected 31"):
        GalleryIndex.load(root)
    (root / "meta.json").write_text(json.dumps(dict(meta, dim=8)))
    with pytest.raises(DataError, match=rf"{root / 'index.faiss'}: dim: expected 8"):
        GalleryIndex.load(root)
    (root / "meta.json").write_text(json.dumps(meta))

    (root / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(DataError, match=rf"{root / 'index.faiss'}: expected a FAISS index") as e:
        GalleryIndex.load(root)
    assert "\n" not in str(e.value)
    for name in ("index.faiss", "meta.json"):
        (root / name).unlink()
        with pytest.raises(DataError, match=rf"{root / name}: expected the index's {name} file"):
            GalleryIndex.load(root)


def test_crash_during_save_keeps_the_previous_index(tmp_path, monkeypatch):
    root = tmp_path / "idx"
    old = _build(_random(40, seed=20))
    old.save(root)
    snapshot = {p.name: p.read_bytes() for p in root.iterdir()}
    new = _build(_random(60, seed=21))

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(faiss, "write_index", boom)
    with pytest.raises(OSError, match="simulated"):
        new.save(root)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in root.iterdir()} == snapshot
    assert sorted(os.listdir(tmp_path)) == ["idx"]

    real_rename, calls = os.rename, []

    def rename_fails_on_swap(src, dst):  # crash between moving the old folder out and the new in
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("power cut (simulated)")
        return real_rename(src, dst)

    monkeypatch.setattr(gallery_mod.os, "rename", rename_fails_on_swap)
    with pytest.raises(OSError, match="power cut"):
        new.save(root)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in root.iterdir()} == snapshot
    assert sorted(os.listdir(tmp_path)) == ["idx"]
    loaded = GalleryIndex.load(root)
    assert len(loaded) == 40
    np.testing.assert_array_equal(
        loaded.search(_random(3), 5).indices, old.search(_random(3), 5).indices
    )

    new.save(root)  # a save that completes replaces it
    assert len(GalleryIndex.load(root)) == 60 and sorted(os.listdir(tmp_path)) == ["idx"]


def test_save_refuses_to_replace_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="refusing to overwrite.*cat.jpg"):
        _build(_random(5)).save(tmp_path / "photos")
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"x"


def test_build_emits_no_unexpected_warnings_for_normalised_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _build(_random(50))
