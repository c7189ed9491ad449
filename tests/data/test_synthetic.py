"""The procedural synthetic dataset: determinism, rendering, instance/user variation, splits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image, ImageFilter

from sbirkit.data import DataError, Modality, Sample, Strokes, create_dataset, list_datasets, rasterize
from sbirkit.data.synthetic import CLASS_NAMES, SyntheticSBIR, UserStyle, contact_sheet


def _px(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def _ink(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L")) < 128


@pytest.fixture(scope="module")
def small() -> SyntheticSBIR:
    return SyntheticSBIR(num_classes=6, photos_per_class=10, sketches_per_photo=2, image_size=32)


def test_registered_factory_and_counts():
    assert "synthetic" in list_datasets()
    assert len(CLASS_NAMES) >= 20 and len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    ds = create_dataset("synthetic", num_classes=10, photos_per_class=5, sketches_per_photo=2)
    assert isinstance(ds, SyntheticSBIR)
    assert ds.classes == list(CLASS_NAMES[:10])
    assert len(ds.photos()) == 50 and len(ds.sketches()) == 100
    assert create_dataset("synthetic", root="/nonexistent", num_classes=2).classes == list(CLASS_NAMES[:2])
    full = SyntheticSBIR(photos_per_class=1)
    assert full.classes == list(CLASS_NAMES)
    assert SyntheticSBIR(classes=["moon", "key"], photos_per_class=1).classes == ["moon", "key"]


@pytest.mark.parametrize(
    "options",
    [
        {"num_classes": 0},
        {"num_classes": len(CLASS_NAMES) + 1},
        {"classes": ["dragon"]},
        {"photos_per_class": 0},
        {"splits": {"train": 0.7, "test": 0.2}},
        {"splits": {"train": 1.2, "test": -0.2}},
        {"users": 0},
        {"image_size": 4},
    ],
)
def test_bad_options_raise(options):
    with pytest.raises(ValueError):
        SyntheticSBIR(**options)


def test_read_types_and_sizes(small):
    photo, sketch = small.photos()[0], small.sketches()[0]
    img = small.read(photo)
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
    strokes = small.read(sketch)
    assert isinstance(strokes, Strokes) and strokes.canvas == (0.0, 0.0, 1.0, 1.0) and not strokes.is_empty()
    assert small.load_strokes(photo) is None and small.load_strokes(sketch) is not None
    for size in (16, 48):
        assert small.load_image(photo, size).size == (size, size)
        assert small.load_image(sketch, size).mode == "RGB"
    item = small.torch_dataset("sketch", split="train")[0]
    assert tuple(item["image"].shape) == (3, 32, 32) and 0 <= item["label"] < 6
    assert small.validate().ok


def test_pickles_for_dataloader_workers(small):
    clone = pickle.loads(pickle.dumps(small))
    for s in (small.photos()[3], small.sketches()[3]):
        assert np.array_equal(_px(clone.load_image(s)), _px(small.load_image(s)))


def test_unknown_sample_is_a_data_error(small):
    alien = Sample("photo/house/9999", Modality.PHOTO, 0, "house")
    with pytest.raises(DataError, match="photo/house/9999"):
        small.load_image(alien)


def test_same_seed_same_pixels_other_seed_different():
    a = SyntheticSBIR(num_classes=4, photos_per_class=3, seed=7)
    b = SyntheticSBIR(num_classes=4, photos_per_class=3, seed=7)
    c = SyntheticSBIR(num_classes=4, photos_per_class=3, seed=8)
    for sa, sb, sc in zip(a.samples, b.samples, c.samples):
        assert sa == sb and sa.key == sc.key
        assert np.array_equal(_px(a.load_image(sa)), _px(b.load_image(sb)))
        assert np.abs(_px(a.load_image(sa)) - _px(c.load_image(sc))).mean() > 1.0
        if sa.is_sketch:
            ra, rb = a.read(sa), b.read(sb)
            assert len(ra) == len(rb) and all(np.array_equal(x, y) for x, y in zip(ra.strokes, rb.strokes))


def test_independent_of_access_order_and_of_subset():
    big = SyntheticSBIR(num_classes=5, photos_per_class=4, sketches_per_photo=2, seed=3)
    forward = {s.key: _px(big.load_image(s)) for s in big.samples}
    fresh = SyntheticSBIR(num_classes=5, photos_per_class=4, sketches_per_photo=2, seed=3)
    order = np.random.default_rng(0).permutation(len(fresh.samples))
    for i in order:
        s = fresh.samples[i]
        assert np.array_equal(forward[s.key], _px(fresh.load_image(s))), s.key
    # the first classes of a larger dataset render exactly as in a smaller one
    few = SyntheticSBIR(num_classes=2, photos_per_class=4, sketches_per_photo=2, seed=3)
    for s in few.samples:
        assert np.array_equal(forward[s.key], _px(few.load_image(s))), s.key


@pytest.mark.parametrize("size", [32, 64, 128])
def test_every_class_renders_a_photo_and_a_sketch(size):
    ds = SyntheticSBIR(photos_per_class=1, image_size=size)
    for cname in ds.classes:
        photo = ds.render_photo(cname, 0)
        arr = np.asarray(photo, dtype=float)
        assert photo.mode == "RGB" and photo.size == (size, size) and arr.std() > 15, cname
        for user in ("neat", "bold"):
            ink = _ink(ds.sketch_image(ds.render_sketch(cname, 0, user), user, size)).mean()
            assert 0.005 < ink < 0.5, (cname, user, ink)


def test_two_instances_of_a_class_differ():
    ds = SyntheticSBIR(photos_per_class=2, image_size=64)
    for cname in ds.classes:
        p0, p1 = ds.photos(classes=[cname])
        a = _ink(rasterize(ds.shape(p0).outline(), 64, 2.0, fit="canvas"))
        b = _ink(rasterize(ds.shape(p1).outline(), 64, 2.0, fit="canvas"))
        iou = (a & b).sum() / (a | b).sum()
        assert iou < 0.5, (cname, iou)
        assert np.abs(_px(ds.load_image(p0)) - _px(ds.load_image(p1))).mean() > 10, cname


def _unit(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.convert("L").filter(ImageFilter.GaussianBlur(1.5)), dtype=float).ravel()
    a = a - a.mean()
    return a / (np.linalg.norm(a) + 1e-9)


def _edges(photo: Image.Image) -> Image.Image:
    g = np.asarray(photo.convert("L").filter(ImageFilter.GaussianBlur(0.7)), dtype=float)
    gx, gy = np.zeros_like(g), np.zeros_like(g)
    gx[:, 1:-1], gy[1:-1] = g[:, 2:] - g[:, :-2], g[2:] - g[:-2]
    return Image.fromarray(np.clip(255 - 2 * np.hypot(gx, gy), 0, 255).astype(np.uint8))


def test_sketch_resembles_its_own_photo_more_than_other_photos_of_its_class():
    """The fine-grained property: within a class, a sketch's blurred ink correlates best with
    its own photo's edges (chance of picking it first is 1/8)."""
    ds = SyntheticSBIR(num_classes=12, photos_per_class=8, image_size=32)
    hits, own, other = [], [], []
    for cname in ds.classes:
        sketches = ds.sketches(classes=[cname])
        photos = {p.instance_id: i for i, p in enumerate(ds.photos(classes=[cname]))}
        s = np.stack([_unit(ds.load_image(x)) for x in sketches])
        p = np.stack([_unit(_edges(ds.load_image(x))) for x in ds.photos(classes=[cname])])
        sim = s @ p.T
        target = np.array([photos[x.instance_id] for x in sketches])
        hits.extend(sim.argmax(1) == target)
        mask = np.zeros_like(sim, dtype=bool)
        mask[np.arange(len(target)), target] = True
        own.append(sim[mask].mean())
        other.append(sim[~mask].mean())
    assert np.mean(hits) > 0.5
    assert np.mean(own) > np.mean(other) + 0.2
    assert sum(o > t for o, t in zip(own, other)) == len(own)


def _line_width(ds: SyntheticSBIR, strokes: Strokes, user: str) -> float:
    """Estimated line width in pixels: ink area / drawn length (at 64 px)."""
    ink = _ink(ds.sketch_image(strokes, user, 64)).sum()
    length = sum(np.hypot(*np.diff(s, axis=0).T).sum() for s in strokes.strokes) * 64
    return float(ink / length)


def test_users_draw_in_different_styles():
    ds = SyntheticSBIR(photos_per_class=3)
    widths: dict[str, list[float]] = {"neat": [], "bold": []}
    n_neat, n_sketchy = [], []
    for cname in ds.classes:
        for i in range(3):
            sketches = {u: ds.render_sketch(cname, i, u) for u in ("neat", "bold", "sketchy")}
            for u in widths:
                widths[u].append(_line_width(ds, sketches[u], u))
            n_neat.append(sketches["neat"].num_points)
            n_sketchy.append(sketches["sketchy"].num_points)
            a, b = np.concatenate(sketches["neat"].strokes), np.concatenate(sketches["bold"].strokes)
            assert len(a) != len(b) or not np.allclose(a, b)
    for u, nominal in (("neat", 1.4), ("bold", 3.6)):
        assert abs(np.median(widths[u]) - nominal) < 0.3 * nominal, (u, np.median(widths[u]))
    assert np.median(widths["bold"]) > 1.7 * np.median(widths["neat"])
    assert np.mean(n_neat) > 1.5 * np.mean(n_sketchy)  # the sketchy user simplifies


def test_splits_pairs_and_users():
    ds = SyntheticSBIR(num_classes=5, photos_per_class=30, sketches_per_photo=2)
    for c in ds.classes:
        counts = {k: len(ds.photos(split=k, classes=[c])) for k in ("train", "val", "test")}
        assert counts == {"train": 21, "val": 3, "test": 6}
    photos = {p.instance_id: p for p in ds.photos()}
    assert all(p.instance_id == p.key.removeprefix("photo/") for p in photos.values())
    by_instance: dict[str, list[Sample]] = {}
    for s in ds.sketches():
        p = photos[s.instance_id]
        assert s.split == p.split and s.class_index == p.class_index and s.user_id in ds.users
        by_instance.setdefault(s.instance_id, []).append(s)
    assert all(len(v) == 2 and v[0].user_id != v[1].user_id for v in by_instance.values())
    assert len(ds.pairs("train")) == 5 * 21 * 2
    per_user = ds.summary()["by_user"]
    assert set(per_user) == {"neat", "sketchy", "bold", "wobbly"}
    assert max(per_user.values()) - min(per_user.values()) <= 5
    other = SyntheticSBIR(num_classes=5, photos_per_class=30, seed=1)
    assert [s.split for s in other.photos()] != [s.split for s in ds.photos()]
    unsplit = SyntheticSBIR(num_classes=2, photos_per_class=3, splits=None)
    assert unsplit.splits == [] and all(s.split is None for s in unsplit.samples)


def test_custom_and_generated_users():
    ds = SyntheticSBIR(num_classes=2, photos_per_class=6, users=6)
    assert [s.name for s in ds.styles][:4] == ["neat", "sketchy", "bold", "wobbly"]
    assert len(ds.users) == 6
    mine = SyntheticSBIR(num_classes=2, photos_per_class=2, users=[UserStyle("me", width=5.0)])
    assert mine.users == ["me"]
    with pytest.raises(ValueError, match="probability"):
        UserStyle("bad", drop_prob=2.0)


def test_contact_sheet_layout():
    ds = SyntheticSBIR(num_classes=3, photos_per_class=2)
    sheet = contact_sheet(ds, users=["neat", "bold"], instances=(0, 1), size=32, gap=2)
    assert sheet.size == (6 * 34 + 2, 3 * 34 + 2)
    assert np.array_equal(np.asarray(sheet.crop((2, 2, 34, 34))), np.asarray(ds.render_photo("house", 0, 32)))
