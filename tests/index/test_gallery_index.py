"""GalleryIndex: exact search vs brute force, IVF recall, persistence (versioned folders, checksums,
concurrent readers, the old flat layout), atomic save, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings

import faiss
import numpy as np
import pytest
import torch

from sbirkit.data import DataError
from sbirkit.errors import UsageError
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
    # one rule for the number of lists (faiss_ops.default_nlist): the power of two nearest sqrt(8000) ~ 89
    ivf = _build(x, factory=suggested_ivf_factory(len(x)), seed=0)
    assert ivf.factory == "IVF64,Flat" and ivf.nprobe == 8
    r1 = _recall(ivf.search(q, 10, nprobe=1).indices, exact.indices)
    r8 = _recall(ivf.search(q, 10).indices, exact.indices)  # the default nprobe, round(sqrt(nlist))
    print(f"recall@10 nprobe=1: {r1:.3f}, nprobe=8: {r8:.3f}")
    assert r8 >= 0.9, r8
    assert r1 < r8  # nprobe matters: one list misses neighbours in the next cell
    full = ivf.search(q, 10, nprobe=64)  # scanning every list is exact
    np.testing.assert_array_equal(full.indices, exact.indices)
    assert ivf.nprobe == 8  # a per-call nprobe does not change the stored one


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
def _live(root) -> "os.PathLike":
    """The version folder ``root/CURRENT`` names."""
    name = (root / "CURRENT").read_text().strip()
    assert (root / name).is_dir()
    return root / name


def _write_flat_v1(root, g: GalleryIndex) -> None:
    """An index folder as sbirkit wrote it before format_version 2: three files, no checksums."""
    root.mkdir(parents=True)
    faiss.write_index(g.index, str(root / "index.faiss"))
    (root / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in g.items))
    meta = {"format": "sbirkit-gallery-index", "format_version": 1, "model_info": g.model_info,
            "factory": g.factory, "metric": g.metric, "ntotal": len(g), "dim": g.dim, "nprobe": g.nprobe,
            "sbirkit_version": "0.1.0", "faiss_version": faiss.__version__, "created": "2024-01-01T00:00:00+00:00"}
    (root / "meta.json").write_text(json.dumps(meta, indent=2))


@pytest.mark.parametrize("factory,nprobe", [("Flat", None), ("IVF24,Flat", 4), ("HNSW16", None)])
def test_save_load_roundtrip_gives_identical_results(tmp_path, factory, nprobe):
    x = _clustered(1500, 16, 12, seed=13)
    q = _random(25, seed=14)
    g = _build(x, factory=factory, seed=1, nprobe=nprobe)
    before = g.search(q, 10)
    g.save(tmp_path / "idx")
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # nothing written beside the folder
    names = sorted(os.listdir(tmp_path / "idx"))
    assert names[:2] == [".lock", "CURRENT"] and len(names) == 3 and names[2].startswith("v-")
    live = _live(tmp_path / "idx")
    assert sorted(os.listdir(live)) == ["index.faiss", "items.jsonl", "meta.json"]
    meta = json.loads((live / "meta.json").read_text())
    assert meta["ntotal"] == 1500 and meta["dim"] == 16 and meta["factory"] == factory
    assert meta["factory_requested"] == factory and meta["factory_note"] is None
    assert meta["model_info"] == dict(MODEL, embed_dim=16) and meta["nprobe"] == nprobe
    assert meta["sbirkit_version"] and meta["created"] and meta["metric"] == "ip"
    assert meta["format_version"] == 2
    sums = meta["checksums"]
    assert sums["algorithm"] == "sha256"
    assert sums["index.faiss"] == hashlib.sha256((live / "index.faiss").read_bytes()).hexdigest()
    assert sums["items.jsonl"] == hashlib.sha256((live / "items.jsonl").read_bytes()).hexdigest()
    h = GalleryIndex.load(tmp_path / "idx", expect_model="fp-aaa")
    assert h.nprobe == nprobe and h.items == g.items and len(h) == 1500
    after = h.search(q, 10)
    np.testing.assert_array_equal(after.indices, before.indices)
    np.testing.assert_array_equal(after.scores, before.scores)


def test_second_save_replaces_the_version_and_removes_the_old_one(tmp_path):
    root = tmp_path / "idx"
    _build(_random(20, seed=1)).save(root)
    first = _live(root).name
    GalleryIndex.build(_random(30, seed=2), _items(30, 100), MODEL, progress=False).save(root)
    second = _live(root).name
    assert second != first and sorted(os.listdir(root)) == [".lock", "CURRENT", second]
    loaded = GalleryIndex.load(root)
    assert len(loaded) == 30 and loaded.items[0]["id"] == "img100"


def test_requested_and_used_factory_are_both_recorded(tmp_path):
    with pytest.warns(UserWarning, match="nlist 256 > 100"):
        g = _build(_random(100, seed=3), factory="IVF256,Flat")
    assert g.factory == "IVF2,Flat" and g.requested_factory == "IVF256,Flat"
    assert "nlist 256 > 100 training vectors" in g.factory_note and "nlist 2" in g.factory_note
    g.save(tmp_path / "idx")
    meta = GalleryIndex.read_meta(tmp_path / "idx")
    assert meta["factory"] == "IVF2,Flat" and meta["factory_requested"] == "IVF256,Flat"
    assert meta["factory_note"] == g.factory_note and meta["nprobe"] == 1
    assert meta["version"] == _live(tmp_path / "idx").name and meta["files"]["index.faiss"] > 0
    h = GalleryIndex.load(tmp_path / "idx")
    assert h.requested_factory == "IVF256,Flat" and h.factory_note == g.factory_note


def test_check_factory_refuses_before_any_vector_exists():
    gallery_mod.check_factory("IVF256,Flat", 16)
    gallery_mod.check_factory("HNSW32", 16)
    with pytest.raises(UsageError, match=r"could not build FAISS index 'Bogus' for 16-dim vectors: "
                                         r"could not parse index string Bogus$") as e:
        gallery_mod.check_factory("Bogus", 16)
    assert "Error in" not in str(e.value) and ".cpp" not in str(e.value)  # the C++ location is cut
    with pytest.raises(UsageError, match="metric"):
        gallery_mod.check_factory("Flat", 16, metric="cos")


def test_check_target_refuses_files_and_foreign_folders(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="expected a folder for the index, found a file"):
        GalleryIndex.check_target(tmp_path / "file")
    with pytest.raises(DataError, match=r"is a file"):
        GalleryIndex.check_target(tmp_path / "file" / "sub")
    assert GalleryIndex.check_target(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # a check writes nothing


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
    live = _live(root)
    good_items = (live / "items.jsonl").read_text()

    lines = good_items.splitlines(keepends=True)
    (live / "items.jsonl").write_text("".join(lines[:-1]))  # one whole row lost
    with pytest.raises(
        DataError, match=rf"{live / 'items.jsonl'}: rows: expected 30 items.*got 29"
    ) as e:
        GalleryIndex.load(root)
    assert "\n" not in str(e.value)
    (live / "items.jsonl").write_text(good_items[: len(good_items) - 7])  # cut mid-line
    with pytest.raises(DataError, match=rf"{live / 'items.jsonl'}:30: .*truncated"):
        GalleryIndex.load(root)
    (live / "items.jsonl").write_text(good_items)

    meta = json.loads((live / "meta.json").read_text())
    (live / "meta.json").write_text(json.dumps(dict(meta, ntotal=31)))
    with pytest.raises(DataError, match=rf"{live / 'index.faiss'}: ntotal: expected 31"):
        GalleryIndex.load(root)
    (live / "meta.json").write_text(json.dumps(dict(meta, dim=8)))
    with pytest.raises(DataError, match=rf"{live / 'index.faiss'}: dim: expected 8"):
        GalleryIndex.load(root)
    (live / "meta.json").write_text(json.dumps(dict(meta, format_version=3)))
    with pytest.raises(DataError, match=r"format_version: expected at most 2 .*got 3"):
        GalleryIndex.load(root)
    (live / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "checksums"}))
    with pytest.raises(DataError, match=r"meta.json: checksums: expected sha256 values"):
        GalleryIndex.load(root)
    (live / "meta.json").write_text(json.dumps(meta))
    assert len(GalleryIndex.load(root)) == 30

    (live / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(DataError, match=rf"{live / 'index.faiss'}: expected a FAISS index") as e:
        GalleryIndex.load(root)
    assert "\n" not in str(e.value)
    for name in ("meta.json", "items.jsonl"):
        kept = (live / name).read_bytes()
        (live / name).unlink()
        with pytest.raises(DataError, match=rf"{live / name}: expected the index's {name} file"):
            GalleryIndex.load(root)
        (live / name).write_bytes(kept)
    (live / "index.faiss").unlink()
    with pytest.raises(DataError, match=rf"{live / 'index.faiss'}: expected the index's index.faiss file"):
        GalleryIndex.load(root)


def test_non_utf8_items_and_a_meta_that_is_not_an_object_are_one_line_errors(tmp_path):
    root = tmp_path / "idx"
    _build(_random(5)).save(root)
    live = _live(root)
    items = (live / "items.jsonl").read_bytes()
    lines = items.splitlines(keepends=True)
    (live / "items.jsonl").write_bytes(b"".join(lines[:3]) + b'{"id": "caf\xe9"}\n' + b"".join(lines[4:]))
    with pytest.raises(DataError, match=rf"{live / 'items.jsonl'}:4: expected UTF-8 text, byte 0xe9") as e:
        GalleryIndex.load(root)
    assert "\n" not in str(e.value)
    (live / "items.jsonl").write_bytes(items)
    meta = (live / "meta.json").read_text()
    for text, kind in (("[1, 2]", "list"), ('"meta"', "str"), ("null", "NoneType")):
        (live / "meta.json").write_text(text)
        with pytest.raises(DataError, match=rf"{live / 'meta.json'}: expected a JSON object, got {kind}$"):
            GalleryIndex.load(root)
        with pytest.raises(DataError, match="expected a JSON object"):
            GalleryIndex.read_meta(root)
    (live / "meta.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match=r"meta.json: expected UTF-8 JSON, byte 0xff at offset 0"):
        GalleryIndex.load(root)
    (live / "meta.json").write_text(meta)
    assert len(GalleryIndex.load(root)) == 5


def test_shuffled_or_swapped_items_are_refused_by_checksum(tmp_path):
    root, other = tmp_path / "idx", tmp_path / "other"
    _build(_random(30, seed=1)).save(root)
    _build(_random(30, seed=2)).save(other)  # same ids, same size: only the vectors differ
    live = _live(root)
    good = (live / "items.jsonl").read_bytes()
    lines = good.splitlines(keepends=True)
    (live / "items.jsonl").write_bytes(b"".join(lines[1:] + lines[:1]))  # every row still valid
    with pytest.raises(DataError, match=rf"{live / 'items.jsonl'}: sha256: expected [0-9a-f]{{16}}\.\.\. "
                                        r"\(meta.json\), got [0-9a-f]{16}\.\.\.; it was changed") as e:
        GalleryIndex.load(root)
    assert "\n" not in str(e.value)
    (live / "items.jsonl").write_bytes(good)

    (live / "index.faiss").write_bytes((_live(other) / "index.faiss").read_bytes())  # another build's vectors
    with pytest.raises(DataError, match=rf"{live / 'index.faiss'}: sha256: .*another build"):
        GalleryIndex.load(root)
    (live / "index.faiss").write_bytes((_live(other) / "index.faiss").read_bytes())
    (live / "meta.json").write_bytes((_live(other) / "meta.json").read_bytes())  # vectors + meta of `other`
    with pytest.raises(DataError, match=rf"{live / 'items.jsonl'}: sha256"):
        # the items are identical here, so swap in relabelled ones to make them disagree
        (live / "items.jsonl").write_bytes(good.replace(b'"label": 1', b'"label": 9'))
        GalleryIndex.load(root)


def test_labels_checksum_is_checked(tmp_path):
    root = tmp_path / "idx"
    _build(_random(10)).save(root)
    live = _live(root)
    meta = json.loads((live / "meta.json").read_text())
    meta["checksums"]["labels"] = "0" * 64
    (live / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"items.jsonl: labels: their sha256 differs from meta.json's"):
        GalleryIndex.load(root)


def test_pointer_that_names_nothing_or_escapes_is_refused(tmp_path):
    root = tmp_path / "idx"
    _build(_random(10)).save(root)
    (root / "CURRENT").write_text("../../etc\n")
    with pytest.raises(DataError, match=r"CURRENT: expected the name of a version folder"):
        GalleryIndex.load(root)
    (root / "CURRENT").write_text("v-20240101T000000000000Z-abc\n")
    with pytest.raises(DataError, match=r"v-20240101T000000000000Z-abc: expected the index version that CURRENT names"):
        GalleryIndex.load(root)


def test_old_flat_layout_loads_and_the_next_save_converts_it(tmp_path):
    root = tmp_path / "idx"
    x, q = _random(40, seed=5), _random(4, seed=6)
    g = _build(x)
    _write_flat_v1(root, g)
    old = GalleryIndex.load(root, expect_model="fp-aaa")
    assert len(old) == 40 and old.items == g.items and old.factory == "Flat"
    np.testing.assert_array_equal(old.search(q, 5).indices, g.search(q, 5).indices)
    info = GalleryIndex.read_meta(root)
    assert info["format_version"] == 1 and info["version"] is None and info["ntotal"] == 40
    # the old layout had no checksums: a shuffle is caught only by what the rows can show
    GalleryIndex.build(x[:20], _items(20), MODEL, progress=False).save(root)
    assert sorted(os.listdir(root))[:2] == [".lock", "CURRENT"] and not (root / "meta.json").exists()
    assert len(GalleryIndex.load(root)) == 20


def test_non_utf8_items_in_the_old_layout(tmp_path):
    root = tmp_path / "idx"
    _write_flat_v1(root, _build(_random(3)))
    (root / "items.jsonl").write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n{"id": "c"}\n')
    with pytest.raises(DataError, match=rf"{root / 'items.jsonl'}:2: expected UTF-8 text"):
        GalleryIndex.load(root)


def test_orphans_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    root = tmp_path / "idx"
    _build(_random(10)).save(root)
    live = _live(root).name
    (root / ".tmp-0badc0ffee00").mkdir()  # a save killed while writing its files
    (root / ".tmp-0badc0ffee00" / "index.faiss").write_bytes(b"half")
    (root / ".CURRENT.tmp-0badc0ffee00").write_text("v-x\n")  # ... or while writing the pointer
    (root / "v-20000101T000000000000Z-0badc0ffee00").mkdir()  # ... or just before the switch
    assert len(GalleryIndex.load(root)) == 10  # orphans never disturb a reader
    GalleryIndex.check_target(root)  # ... nor make the folder look foreign
    GalleryIndex.build(_random(12), _items(12), MODEL, progress=False).save(root)
    new = _live(root).name
    assert new != live and sorted(os.listdir(root)) == [".lock", "CURRENT", new]


def test_crash_during_save_keeps_the_previous_index(tmp_path, monkeypatch):
    root = tmp_path / "idx"
    old = _build(_random(40, seed=20))
    old.save(root)

    def snapshot():
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    before = snapshot()
    new = _build(_random(60, seed=21))

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(faiss, "write_index", boom)
    with pytest.raises(OSError, match="simulated"):
        new.save(root)
    monkeypatch.undo()
    assert snapshot() == before and sorted(os.listdir(tmp_path)) == ["idx"]

    real_replace = os.replace

    def replace_fails(src, dst):  # crash at the switch: the new version is complete, CURRENT is not
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(gallery_mod.os, "replace", replace_fails)
    with pytest.raises(OSError, match="power cut"):
        new.save(root)
    monkeypatch.setattr(gallery_mod.os, "replace", real_replace)
    assert snapshot() == before
    loaded = GalleryIndex.load(root)
    assert len(loaded) == 40
    np.testing.assert_array_equal(
        loaded.search(_random(3), 5).indices, old.search(_random(3), 5).indices
    )

    new.save(root)  # a save that completes replaces it
    assert len(GalleryIndex.load(root)) == 60 and len(os.listdir(root)) == 3


def test_concurrent_loads_never_mix_two_builds_or_fail(tmp_path):
    """One thread rebuilds the folder with two different galleries in turn while two threads load
    it in a loop: every load must give one build's vectors with that same build's items."""
    root = tmp_path / "idx"
    n = 64
    builds = {}
    for name, seed in (("A", 30), ("B", 31)):
        x = _random(n, seed=seed)
        items = [{"id": f"{name}-{i}", "class_name": f"{name}{i % 4}"} for i in range(n)]
        builds[name] = (x, GalleryIndex.build(x, items, MODEL, progress=False))
    builds["A"][1].save(root)

    saves, problems, seen = 40, [], set()
    loads = [0]
    lock = threading.Lock()
    done = threading.Event()

    def read_loop():
        while not done.is_set():
            try:
                g = GalleryIndex.load(root)
                names = {item["id"].split("-")[0] for item in g.items}
                if len(names) != 1:
                    problems.append(f"items from builds {sorted(names)}")
                    continue
                (name,) = names
                vectors = g.index.reconstruct_n(0, len(g))
                if not np.array_equal(vectors, builds[name][0]):
                    problems.append(f"items of build {name} with other vectors")
                with lock:
                    seen.add(name)
                    loads[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is a finding here
                problems.append(repr(exc))

    readers = [threading.Thread(target=read_loop) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(saves):
            start = loads[0]
            builds["B" if i % 2 == 0 else "A"][1].save(root)
            for _ in range(2000):  # let the readers finish at least one load per version
                if loads[0] > start or problems:
                    break
                time.sleep(0.001)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert problems == [], problems[:5]
    assert seen == {"A", "B"} and loads[0] >= saves
    assert len([p for p in os.listdir(root) if p.startswith("v-")]) == 1


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


def test_a_save_repairs_a_damaged_pointer(tmp_path):
    root = tmp_path / "idx"
    _build(_random(10)).save(root)
    (root / "CURRENT").write_text("garbage\n")
    with pytest.raises(DataError, match="CURRENT: expected the name of a version folder"):
        GalleryIndex.load(root)
    GalleryIndex.build(_random(7), _items(7), MODEL, progress=False).save(root)
    assert len(GalleryIndex.load(root)) == 7 and len([p for p in os.listdir(root) if p.startswith("v-")]) == 1
