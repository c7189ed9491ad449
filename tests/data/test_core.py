"""The record model, strokes, class names and split manifests (the core every loader shares)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sbirkit.data import DataError, EmptySketchError, Modality, Sample, SBIRDataset, Strokes, rasterize
from sbirkit.data.classnames import class_lookup, normalize_class_name
from sbirkit.data.splits import list_manifests, manifest_split, random_split, read_manifest, resolve_split


class _Toy(SBIRDataset):
    """Photos are flat grey squares; sketches are a diagonal line (or blank for class 'blank')."""

    name = "toy"

    def read(self, s: Sample):
        if s.is_photo:
            return Image.new("RGB", (20, 20), (s.class_index * 40, 100, 100))
        if s.class_name == "blank":
            return Strokes([])
        return Strokes([np.array([[0, 0], [10, 10 + s.class_index]])])


def _toy(classes=("cat", "teddy_bear", "car_(sedan)")):
    samples = []
    for c, name in enumerate(classes):
        for i in range(2):
            pid = f"{name}/{i}"
            split = "train" if i == 0 else "test"
            samples.append(Sample(f"p/{pid}", Modality.PHOTO, c, name, instance_id=pid, split=split))
            samples.append(Sample(f"s/{pid}", Modality.SKETCH, c, name, instance_id=pid, user_id=f"u{i}", split=split))
    return _Toy(list(classes), samples)


def test_normalize_class_name_folds_separators_and_brackets():
    assert normalize_class_name("teddy_bear") == "teddy bear"
    assert normalize_class_name("Teddy-Bear ") == "teddy bear"
    assert normalize_class_name("car_(sedan)") == "car sedan"
    assert normalize_class_name("hot  air_balloon") == "hot air balloon"
    with pytest.raises(ValueError, match="normalise to the same name"):
        class_lookup(["teddy_bear", "teddy-bear"])


def test_stroke3_round_trip_and_pen_lifts():
    data = np.array([[1, 2, 0], [3, 0, 1], [0, 5, 0], [2, 2, 1]], dtype=np.float32)
    s = Strokes.from_stroke3(data)
    assert len(s) == 2
    np.testing.assert_allclose(s.strokes[0], [[1, 2], [4, 2]])
    np.testing.assert_allclose(s.strokes[1], [[4, 7], [6, 9]])
    np.testing.assert_allclose(Strokes.from_stroke3(s.to_stroke3()).strokes[1], s.strokes[1])


def test_rasterize_any_size_and_stroke_width():
    s = Strokes([np.array([[0, 0], [100, 0]]), np.array([[0, 50], [100, 50]])])
    for size in (28, 64, 224):
        img = rasterize(s, size)
        assert img.size == (size, size) and img.mode == "L"
    thin = (np.asarray(rasterize(s, 64, stroke_width=1)) < 128).sum()
    thick = (np.asarray(rasterize(s, 64, stroke_width=4)) < 128).sum()
    assert thick > 2.5 * thin > 0
    with pytest.raises(EmptySketchError, match="empty"):
        rasterize(Strokes([], source="x.svg"), 64)


def test_rasterize_canvas_keeps_position():
    # a dot in the top-left quarter of its canvas stays in the top-left quarter of the image
    s = Strokes([np.array([[10, 10], [20, 20]])], canvas=(0, 0, 100, 100))
    ink = np.asarray(rasterize(s, 64, fit="canvas")) < 128
    ys, xs = np.nonzero(ink)
    assert xs.max() < 32 and ys.max() < 32


def test_dataset_selection_pairs_and_summary():
    ds = _toy()
    assert len(ds.photos()) == 6 and len(ds.sketches(split="test")) == 3
    assert len(ds.select("sketch", classes=["teddy-bear"])) == 2
    assert len(ds.sketches(users=["u0"])) == 3
    pairs = ds.pairs("train")
    assert len(pairs) == 3 and all(s.instance_id == p.instance_id for s, p in pairs)
    summary = ds.summary()
    assert summary["by_split"]["train"] == {"photo": 3, "sketch": 3}
    assert summary["pairs"] == {"test": 3, "train": 3}
    assert summary["by_user"] == {"u0": 3, "u1": 3}
    assert ds.class_index("Car (sedan)") == 2


def test_subset_keeps_global_class_indices():
    ds = _toy()
    sub = ds.subset(ds.select(classes=["car_(sedan)"]))
    assert sub.classes == ds.classes
    assert {s.class_index for s in sub.samples} == {2}
    assert len(ds.samples) == 12  # the parent is untouched


def test_torch_dataset_items():
    ds = _toy()
    td = ds.torch_dataset("sketch", split="train", size=32)
    item = td[1]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"] == td.samples[1].class_index
    assert td.instances[item["instance"]] == td.samples[1].instance_id
    assert 0.0 <= float(item["image"].min()) < 0.5 and float(item["image"].max()) == 1.0


def test_empty_sketch_is_refused_with_its_location():
    ds = _toy(("cat", "blank"))
    blank = ds.sketches(classes=["blank"])[0]
    with pytest.raises(EmptySketchError, match="blank"):
        ds.load_image(blank)
    report = ds.validate()
    assert report.checked == 6 and len(report.failures) == 2
    assert all("s/blank" in f.path for f in report.failures)


def test_bad_class_index_is_one_line_error():
    with pytest.raises(DataError, match=r"class_index: expected 0..0, got 3") as err:
        _Toy(["a"], [Sample("k", Modality.PHOTO, 3, "a", source="/x/y.png")])
    assert "\n" not in str(err.value) and "/x/y.png" in str(err.value)


def test_manifests_have_the_published_sizes():
    sizes = {name: len(read_manifest(name)) for name in list_manifests()}
    assert sizes == {"quickdraw_30": 30, "sketchy_21": 21, "sketchy_25": 25, "tuberlin_30": 30}
    assert "teddy_bear" in read_manifest("sketchy_25") and "frying-pan" in read_manifest("tuberlin_30")


def test_manifest_split_matches_across_spellings_and_rejects_unknown_names():
    classes = [f"class{i}" for i in range(100)] + read_manifest("sketchy_25")[:-1] + ["wine-bottle"]
    split = manifest_split(classes, "sketchy_25")
    assert len(split.unseen) == 25 and "wine-bottle" in split.unseen and len(split.seen) == 100
    with pytest.raises(DataError, match="not found: 'ant'") as err:
        manifest_split(classes, "tuberlin_30")
    assert "\n" not in str(err.value)


def test_random_split_is_seeded():
    classes = [f"c{i}" for i in range(20)]
    a, b, c = random_split(classes, 5, seed=1), random_split(classes, 5, seed=1), random_split(classes, 5, seed=2)
    assert a == b and a.unseen != c.unseen
    assert set(a.seen) | set(a.unseen) == set(classes) and not set(a.seen) & set(a.unseen)
    assert resolve_split(_toy(), "random:1:3").unseen == random_split(_toy().classes, 1, 3).unseen
