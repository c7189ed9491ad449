"""combine_datasets: class matching, the dropped-class report, per-class sketch splits, delegated reading."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from sbirkit.data import DataError, Modality, Sample, SBIRDataset, Strokes, create_dataset, list_datasets
from sbirkit.data.combine import CombinedDataset, combine_datasets, split_per_class


class GreyDataset(SBIRDataset):
    """In-memory samples; sample ``i`` reads as a flat grey image of value ``shade + i``."""

    name = "grey"

    def __init__(self, shade: int, **kwargs):
        self.shade = shade
        self.reads: list[str] = []
        super().__init__(**kwargs)

    def read(self, sample: Sample) -> Image.Image:
        self.reads.append(sample.key)
        return Image.new("L", (8, 8), self.shade + sample.index)


class StrokeDataset(SBIRDataset):
    """Vector sketches: sample ``i`` is one horizontal line ``i + 1`` units long."""

    name = "strokes"

    def read(self, sample: Sample) -> Strokes:
        return Strokes([np.array([[0.0, 0.0], [sample.index + 1.0, 0.0]])])


def make(cls, classes, per_class, modality, split=None, **kw):
    samples = []
    for c, name in enumerate(classes):
        for j in range(per_class[name] if isinstance(per_class, dict) else per_class):
            i = len(samples)
            samples.append(Sample(key=f"{name}/{j}", modality=modality, class_index=c, class_name=name,
                                  source=f"/src/{cls.__name__}/{name}", index=i, instance_id=f"{name}-{j}",
                                  split=split(i) if callable(split) else split))
    return cls(classes=classes, samples=samples, **kw)


@pytest.fixture
def photos():
    # CIFAR-like: 4 photo classes (one with no sketch counterpart), train/test splits kept
    return make(GreyDataset, ["airplane", "automobile", "deer", "ship"], 4, Modality.PHOTO,
                split=lambda i: "test" if i % 2 else "train", shade=100)


@pytest.fixture
def sketches():
    return make(StrokeDataset, ["AirPlane", "car", "sailboat", "speedboat", "apple"],
                {"AirPlane": 10, "car": 7, "sailboat": 3, "speedboat": 5, "apple": 2}, Modality.SKETCH)


def test_classes_match_by_name_and_map(photos, sketches):
    ds = combine_datasets(sketches, photos, {"automobile": "car", "ship": ["sailboat", "speedboat"]})
    assert isinstance(ds, CombinedDataset)
    assert ds.classes == ["airplane", "automobile", "ship"]  # photo order and spelling
    assert ds.report.matched == {"airplane": ["AirPlane"], "automobile": ["car"], "ship": ["sailboat", "speedboat"]}
    per_class = Counter((s.modality.value, s.class_name) for s in ds.samples)
    assert per_class == {("sketch", "airplane"): 10, ("sketch", "automobile"): 7, ("sketch", "ship"): 8,
                         ("photo", "airplane"): 4, ("photo", "automobile"): 4, ("photo", "ship"): 4}
    for s in ds.samples:
        assert ds.classes[s.class_index] == s.class_name
    # keys and instance ids are namespaced by side: nothing pairs across sources
    assert all(s.key.startswith(f"{s.modality.value}:") for s in ds.samples)
    assert ds.pairs() == []


def test_dropped_classes_are_reported_and_logged(photos, sketches, caplog):
    with caplog.at_level(logging.INFO, logger="sbirkit.data.combine"):
        ds = combine_datasets(sketches, photos, {"automobile": "car"})
    r = ds.report
    assert r.dropped_photo_classes == ["deer", "ship"]  # ship has no sketch class of that name
    assert r.dropped_photos == 8
    assert r.dropped_sketch_classes == ["sailboat", "speedboat", "apple"]
    assert r.dropped_sketches == 3 + 5 + 2
    assert list(r.matched) == ds.classes == ["airplane", "automobile"]
    assert "deer" in caplog.text and "apple" in caplog.text and "10 sketches" in caplog.text
    summary = ds.summary()
    assert summary["combine"]["dropped_sketch_classes"] == ["sailboat", "speedboat", "apple"]
    json.dumps(summary)  # the report is plain data


@pytest.mark.parametrize("class_map, message", [
    ({"boat": "sailboat"}, "'boat' is not one of the 4 photo classes"),
    ({"ship": ["sailboat", "canoe"]}, "'canoe' is not one of the 5 sketch classes"),
    ({"ship": "car"}, "'car' serves both 'automobile' and 'ship'"),
    ({"ship": []}, "expected a sketch class name or a non-empty list"),
])
def test_bad_class_map_names_the_entry(photos, sketches, class_map, message):
    with pytest.raises(DataError, match="class_map") as err:
        combine_datasets(sketches, photos, {"automobile": "car", **class_map})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_no_common_class_is_an_error(photos):
    other = make(StrokeDataset, ["apple"], 2, Modality.SKETCH)
    with pytest.raises(DataError, match="expected at least one class on both sides"):
        combine_datasets(other, photos)


def test_splits_are_kept_from_the_sources(photos, sketches):
    ds = combine_datasets(sketches, photos, {"automobile": "car", "ship": "sailboat"})
    assert {s.split for s in ds.sketches()} == {None}
    assert Counter(p.split for p in ds.photos()) == {"train": 6, "test": 6}
    originals = {p.key: p.split for p in photos.samples}
    for p in ds.photos():
        assert p.split == originals[p.key.removeprefix("photo:")]


def test_sketch_splits_cut_each_class_by_fraction(photos, sketches):
    fractions = {"train": 0.6, "val": 0.1, "test": 0.3}
    cmap = {"automobile": "car", "ship": ["sailboat", "speedboat"]}
    ds = combine_datasets(sketches, photos, cmap, sketch_splits=fractions, seed=3)
    for cls, n in (("airplane", 10), ("automobile", 7), ("ship", 8)):
        got = Counter(s.split for s in ds.sketches(classes=[cls]))
        cum = np.cumsum([0.6, 0.1, 0.3])
        cuts = [0, *np.rint(n * cum).astype(int)]
        want = {k: cuts[i + 1] - cuts[i] for i, k in enumerate(fractions)}
        assert got == {k: v for k, v in want.items() if v}, cls
    assert ds.report.sketch_splits == dict(sorted(Counter(s.split for s in ds.sketches()).items()))
    # photos keep their own splits; the 'val' sketches have no 'val' photos, and the report says so
    assert Counter(p.split for p in ds.photos()) == {"train": 6, "test": 6}
    assert any("'val'" in note and "val_fraction" in note for note in ds.report.notes)


def test_sketch_splits_are_deterministic_and_seeded(photos, sketches):
    def assignment(seed, src=sketches, cmap=(("automobile", "car"),)):
        ds = combine_datasets(src, photos, dict(cmap), sketch_splits={"train": 0.5, "test": 0.5}, seed=seed)
        return {s.key: s.split for s in ds.sketches()}
    a, b, c = assignment(0), assignment(0), assignment(1)
    assert a == b
    assert a != c
    # dropping a class from the sketch source leaves the other classes' splits unchanged
    fewer = make(StrokeDataset, ["AirPlane", "apple"], {"AirPlane": 10, "apple": 2}, Modality.SKETCH)
    d = assignment(0, fewer, ())
    assert d == {k: v for k, v in a.items() if k.startswith("sketch:AirPlane/")}


def test_split_per_class_counts_add_up_and_fractions_are_checked():
    samples = [Sample(f"k{i}", Modality.SKETCH, 0, "c") for i in range(11)]
    got = split_per_class(samples, {"train": 1 / 3, "val": 1 / 3, "test": 1 / 3}, seed=0)
    assert sorted(got) == sorted(s.key for s in samples)
    assert Counter(got.values()) == {"train": 4, "val": 3, "test": 4}  # round(11/3)=4, round(22/3)=7, 11
    with pytest.raises(DataError, match="sum to 1"):
        split_per_class(samples, {"train": 0.5, "test": 0.4})
    with pytest.raises(DataError, match=r"sketch_splits\.test: expected a fraction"):
        split_per_class(samples, {"train": 0.5, "test": -0.5})


def test_reading_delegates_to_each_source(photos, sketches):
    ds = combine_datasets(sketches, photos, {"automobile": "car"}, image_size=16)
    photo = ds.photos(split="test")[1]
    original = next(p for p in photos.samples if f"photo:{p.key}" == photo.key)
    img = ds.load_image(photo)
    assert img.size == (16, 16)
    assert np.asarray(img.convert("L"))[0, 0] == 100 + original.index
    assert photos.reads[-1] == original.key
    sketch = ds.sketches(classes=["automobile"])[2]
    strokes = ds.load_strokes(sketch)
    assert isinstance(strokes, Strokes) and strokes.bounds()[2] == pytest.approx(13.0)  # "car/2" is row 12
    np.testing.assert_array_equal(np.asarray(ds.load_image(sketch, 24)),
                                  np.asarray(sketches.load_image(next(s for s in sketches.samples
                                                                      if s.key == "car/2"), 24)))
    # views (a split, a subset) still read through the sources
    view = ds.with_split(lambda s: "x").subset(ds.samples[:3])
    assert view.load_image(view.samples[0]).size == (16, 16)
    with pytest.raises(DataError, match="expected a sample of this combined dataset"):
        ds.load_image(Sample("photo:nope", Modality.PHOTO, 0, "airplane"))


def _write_sources(root):
    for split in ("train", "test"):
        for cls, shade in (("airplane", 40), ("automobile", 90), ("deer", 140)):
            folder = root / "photos" / split / cls
            folder.mkdir(parents=True)
            for j in range(3):
                Image.new("RGB", (12, 12), (shade + j, 0, 0)).save(folder / f"{j}.png")
    (root / "sketches").mkdir()
    for cls, n in (("airplane", 6), ("car", 4), ("apple", 2)):
        rows = [json.dumps({"word": cls, "key_id": f"{cls}{j}", "drawing": [[[0, 10 + j], [0, 5]]]})
                for j in range(n)]
        (root / "sketches" / f"{cls}.ndjson").write_text("\n".join(rows) + "\n")


def test_registered_loader_builds_both_sources_under_one_root(tmp_path):
    _write_sources(tmp_path)
    assert "combined" in list_datasets()
    options = {
        "sketches": {"name": "quickdraw-ndjson", "root": "sketches"},
        "photos": {"name": "image-folder", "root": str(tmp_path / "photos")},  # absolute roots stay as given
        "class_map": {"automobile": "car"},
        "sketch_splits": {"train": 0.5, "test": 0.5},
        "seed": 0,
    }
    ds = create_dataset("combined", str(tmp_path), **options)
    assert ds.classes == ["airplane", "automobile"]
    assert ds.report.dropped_photo_classes == ["deer"] and ds.report.dropped_sketch_classes == ["apple"]
    assert Counter((s.split, s.class_name) for s in ds.sketches()) == {
        ("train", "airplane"): 3, ("test", "airplane"): 3, ("train", "automobile"): 2, ("test", "automobile"): 2}
    assert len(ds.photos("test")) == 6
    assert ds.load_image(ds.sketches()[0]).size == (64, 64)
    with pytest.raises(DataError, match=r"data\.options\.photos: expected \{name"):
        create_dataset("combined", str(tmp_path), sketches=options["sketches"], photos={"root": "photos"})
    with pytest.raises(DataError, match="unknown key 'opts'"):
        create_dataset("combined", str(tmp_path), sketches={**options["sketches"], "opts": {}}, photos=options["photos"])
    with pytest.raises(DataError, match="expected both 'sketches' and 'photos'"):
        create_dataset("combined", str(tmp_path), sketches=options["sketches"])


def test_engine_val_fraction_holds_out_train_sketches_and_photos(tmp_path):
    from sbirkit.engine.inference import build_dataset

    _write_sources(tmp_path)
    data = {"name": "combined", "root": str(tmp_path), "train_split": "train", "val_split": "val",
            "val_fraction": 0.5,
            "options": {"sketches": {"name": "quickdraw-ndjson", "root": "sketches"},
                        "photos": {"name": "image-folder", "root": "photos"},
                        "class_map": {"automobile": "car"}, "sketch_splits": {"train": 0.5, "test": 0.5}}}
    ds = build_dataset(data)
    assert ds.sketches("val") and ds.photos("val")
    assert len(ds.sketches("val")) + len(ds.sketches("train")) == 5
    assert len(ds.photos("test")) == 6  # test is untouched
    assert ds.load_image(ds.photos("val")[0]).size == (64, 64)
