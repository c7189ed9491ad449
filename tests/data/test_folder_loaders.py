"""Folder-layout loaders on tiny layouts generated in tmp_path: counts, pairing, metadata, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sbirkit.data import DataError, Modality, Strokes, create_dataset
from sbirkit.data.loaders.folder import file_kind, photo_stem_for

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
    '<path d="M10 10 L90 90" stroke="black"/><path d="M10 90 L90 10" stroke="black"/></svg>'
)


def photo(path: Path, color=(200, 40, 40), size=12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)
    return path


def sketch(path: Path, size=16) -> Path:
    """A raster sketch (black diagonal on white) or an SVG sketch, by extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".svg":
        path.write_text(SVG)
        return path
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).line([(2, 2), (size - 3, size - 3)], fill=0, width=2)
    img.save(path)
    return path


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one_line_error(excinfo, *must_contain: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for part in must_contain:
        assert part in msg, (part, msg)
    return msg


def by_key(ds):
    return {s.key: s for s in ds.samples}


# ---------------------------------------------------------------------------------------------
# helpers


def test_file_kind_and_stem_pairing_rule():
    assert [file_kind(p) for p in ("a.JPG", "b.png", "c.svg", "d.ndjson", "e.txt", "f")] == [
        "image",
        "image",
        "svg",
        "ndjson",
        None,
        None,
    ]
    stems = {"0001", "a_1", "a"}
    assert photo_stem_for("0001", stems) == "0001"
    assert photo_stem_for("0001-3", stems) == "0001"
    assert photo_stem_for("0001_12", stems) == "0001"
    assert photo_stem_for("a_1", stems) == "a_1"  # exact match wins over stripping _1
    assert photo_stem_for("a_1-2", stems) == "a_1"
    assert photo_stem_for("0002-1", stems) is None
    assert photo_stem_for("0001-x", stems) is None


# ---------------------------------------------------------------------------------------------
# "folder"


@pytest.fixture()
def generic(tmp_path: Path) -> Path:
    root = tmp_path / "generic"
    photo(root / "photo/cat/0001.jpg")
    photo(root / "photo/cat/0002.jpg", (20, 120, 200))
    photo(root / "photo/teddy_bear/a.png")
    sketch(root / "sketch/cat/0001-1.png")
    sketch(root / "sketch/cat/0001-2.png")
    sketch(root / "sketch/cat/0001_3.svg")
    sketch(root / "sketch/cat/0002.png")
    sketch(root / "sketch/cat/0009-1.png")  # no photo 0009
    sketch(root / "sketch/teddy-bear/a-1.png")  # other spelling of the photo class
    touch(root / "sketch/cat/notes.txt")
    touch(root / "photo/cat/0003.svg", SVG)  # a vector file is not a photo
    return root


def test_folder_counts_classes_pairs_and_skipped(generic: Path):
    ds = create_dataset("folder", str(generic))
    assert ds.classes == ["cat", "teddy_bear"]  # photo folder spelling, sorted by normalised name
    assert ds.class_index("teddy-bear") == ds.class_index("Teddy Bear") == 1
    summary = ds.summary()
    assert summary["by_class"] == {
        "cat": {"photo": 2, "sketch": 5},
        "teddy_bear": {"photo": 1, "sketch": 1},
    }
    keys = by_key(ds)
    assert keys["photo/cat/0001.jpg"].instance_id == "cat/0001"
    assert keys["photo/teddy_bear/a.png"].instance_id == "teddy_bear/a"
    assert keys["sketch/cat/0001-1.png"].instance_id == "cat/0001"
    assert keys["sketch/cat/0001_3.svg"].instance_id == "cat/0001"
    assert keys["sketch/cat/0002.png"].instance_id == "cat/0002"
    assert keys["sketch/cat/0009-1.png"].instance_id is None
    assert keys["sketch/teddy-bear/a-1.png"].instance_id == "teddy_bear/a"
    assert keys["sketch/teddy-bear/a-1.png"].class_index == 1
    pairs = {(s.key, p.key) for s, p in ds.pairs()}
    assert len(pairs) == 5 and ("sketch/cat/0001-2.png", "photo/cat/0001.jpg") in pairs
    assert sorted(Path(s.path).name for s in ds.skipped) == ["0003.svg", "notes.txt"]
    assert summary["skipped"] == 2
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert "unknown extension '.txt'" in reasons["notes.txt"]
    assert "svg file in a photo folder" in reasons["0003.svg"]


def test_folder_reads_images_and_svg_strokes(generic: Path):
    ds = create_dataset("folder", str(generic), image_size=20)
    keys = by_key(ds)
    img = ds.load_image(keys["photo/cat/0001.jpg"])
    assert img.mode == "RGB" and img.size == (20, 20)
    r, g, b = np.asarray(img).reshape(-1, 3).mean(0)
    assert r > 150 and g < 90 and b < 90  # the red photo
    strokes = ds.load_strokes(keys["sketch/cat/0001_3.svg"])
    assert isinstance(strokes, Strokes) and len(strokes) == 2
    assert ds.load_strokes(keys["sketch/cat/0001-1.png"]) is None
    ink = np.asarray(ds.load_image(keys["sketch/cat/0001_3.svg"], size=32).convert("L"))
    assert (
        ink.shape == (32, 32) and ink.min() < 100 and np.median(ink) > 200
    )  # black strokes on white


def test_folder_pairing_none_and_required(generic: Path):
    ds = create_dataset("folder", str(generic), pairing="none")
    assert all(s.instance_id is None for s in ds.sketches())
    assert all(p.instance_id is not None for p in ds.photos())  # photos always have their own id
    assert ds.pairs() == []
    with pytest.raises(DataError) as e:
        create_dataset("folder", str(generic), pairing="required")
    one_line_error(e, "0009-1.png", "pairing required")
    sketch(generic / "sketch/dog/x-1.png")
    (generic / "sketch/cat/0009-1.png").unlink()
    with pytest.raises(DataError) as e:
        create_dataset("folder", str(generic), pairing="required")
    one_line_error(e, str(generic / "sketch/dog"), "photo class")
    with pytest.raises(ValueError, match="pairing"):
        create_dataset("folder", str(generic), pairing="sometimes")


def test_folder_metadata_sets_split_and_user(generic: Path):
    (generic / "metadata.csv").write_text(
        "path,split,user\n"
        "photo/cat/0001.jpg,train,\n"
        "sketch/cat/0001-1.png,train,u1\n"
        "sketch/cat/0001-2.png,test,u2\n"
        "sketch/teddy-bear/a-1.png,test,u1\n"
    )
    ds = create_dataset("folder", str(generic))
    keys = by_key(ds)
    assert (
        keys["sketch/cat/0001-2.png"].split == "test"
        and keys["sketch/cat/0001-2.png"].user_id == "u2"
    )
    assert (
        keys["photo/cat/0001.jpg"].split == "train" and keys["photo/cat/0001.jpg"].user_id is None
    )
    assert keys["photo/cat/0002.jpg"].split is None  # not listed
    assert ds.splits == ["test", "train"] and ds.users == ["u1", "u2"]
    assert len(ds.sketches(split="test")) == 2 and len(ds.sketches(users=["u1"])) == 2
    assert {s.key for s in ds.sketches(users=["u1"])} == {
        "sketch/cat/0001-1.png",
        "sketch/teddy-bear/a-1.png",
    }
    assert create_dataset("folder", str(generic), metadata=False).splits == []


def test_folder_metadata_row_naming_missing_file(generic: Path):
    csv_path = generic / "metadata.csv"
    csv_path.write_text(
        "path,split,user\nphoto/cat/0001.jpg,train,u1\nsketch/cat/0404-1.png,test,u1\n"
    )
    with pytest.raises(DataError) as e:
        create_dataset("folder", str(generic))
    one_line_error(e, str(csv_path), "row 3", "sketch/cat/0404-1.png", "does not exist")
    csv_path.write_text(
        "path,split,user\nsketch/cat/notes.txt,test,u1\n"
    )  # exists but is not a sample
    with pytest.raises(DataError) as e:
        create_dataset("folder", str(generic))
    one_line_error(e, "row 2", "not a photo/sketch sample")
    csv_path.write_text("file,fold\nphoto/cat/0001.jpg,train\n")
    with pytest.raises(DataError) as e:
        create_dataset("folder", str(generic))
    one_line_error(e, str(csv_path), "header")
    with pytest.raises(DataError) as e:
        create_dataset("folder", str(generic), metadata="other.csv")
    one_line_error(e, str(generic / "other.csv"))


def test_folder_one_side_only_and_bad_layouts(tmp_path: Path):
    photo(tmp_path / "p/photo/cat/1.jpg")
    ds = create_dataset("folder", str(tmp_path / "p"))
    assert len(ds.photos()) == 1 and ds.sketches() == []
    sketch(tmp_path / "s/sketch/cat/1.png")
    sketch(tmp_path / "s/sketch/dog/1.svg")
    assert [
        len(create_dataset("folder", str(tmp_path / "s")).sketches(classes=[c]))
        for c in ("cat", "dog")
    ] == [1, 1]

    with pytest.raises(DataError) as e:
        create_dataset("folder", str(tmp_path / "nowhere"))
    one_line_error(e, str(tmp_path / "nowhere"), "root", "not found")
    (tmp_path / "neither/images").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        create_dataset("folder", str(tmp_path / "neither"))
    one_line_error(e, str(tmp_path / "neither"), "photo", "sketch")
    (tmp_path / "p/photo/empty").mkdir()
    with pytest.raises(DataError) as e:
        create_dataset("folder", str(tmp_path / "p"))
    one_line_error(e, str(tmp_path / "p/photo/empty"), "found none")
    (tmp_path / "p/photo/empty").rmdir()
    touch(tmp_path / "p/photo/junk/readme.md")  # a class folder with no usable file
    with pytest.raises(DataError) as e:
        create_dataset("folder", str(tmp_path / "p"))
    one_line_error(e, str(tmp_path / "p/photo/junk"))


def test_folder_ndjson_lines_are_samples(tmp_path: Path):
    root = tmp_path / "qd"
    lines = [
        {"word": "cat", "drawing": [[[0, 10, 20], [0, 10, 0]]]},
        {"word": "cat", "drawing": [[[0, 5], [0, 5]], [[10, 20, 30], [10, 0, 10]]]},
        None,  # blank line: not a sample
        {"word": "cat", "drawing": [[[0, 1], [0, 1]], [[2, 3], [2, 3]], [[4, 5], [5, 4]]]},
        {"word": "cat", "strokes": []},  # decodes as JSON but has no drawing
    ]
    path = root / "sketch/cat/cat.ndjson"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join("" if r is None else json.dumps(r) for r in lines) + "\n")
    ds = create_dataset("folder", str(root))
    samples = ds.sketches()
    assert [s.index for s in samples] == [0, 1, 3, 4]
    assert [s.key for s in samples][:2] == ["sketch/cat/cat.ndjson#0", "sketch/cat/cat.ndjson#1"]
    assert [len(ds.load_strokes(s)) for s in samples[:3]] == [1, 2, 3]
    np.testing.assert_allclose(
        ds.load_strokes(samples[1]).strokes[1], [[10, 10], [20, 0], [30, 10]]
    )
    assert all(s.instance_id is None for s in samples)
    report = ds.validate()
    assert report.checked == 3 and len(report.failures) == 1
    assert report.failures[0].path == f"{path}#4" and "drawing" in report.failures[0].reason


def test_validate_reports_corrupt_png_with_path(generic: Path):
    bad = generic / "sketch/cat/0002-7.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    ds = create_dataset("folder", str(generic))
    sample = by_key(ds)["sketch/cat/0002-7.png"]
    with pytest.raises(DataError) as e:
        ds.load_image(sample)
    one_line_error(e, str(bad))
    report = ds.validate()
    assert report.checked == len(ds.samples) - 1
    assert len(report.failures) == 1 + len(ds.skipped) == 3
    assert str(bad) in [f.path for f in report.failures]


def test_transparent_sketch_is_flattened_on_white(tmp_path: Path):
    path = tmp_path / "t/sketch/cat/1.png"
    path.parent.mkdir(parents=True)
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent black background
    ImageDraw.Draw(img).line([(1, 1), (14, 14)], fill=(0, 0, 0, 255), width=2)
    img.save(path)
    ds = create_dataset("folder", str(tmp_path / "t"))
    arr = np.asarray(ds.load_image(ds.samples[0], size=16).convert("L"))
    assert np.median(arr) == 255 and arr.min() < 50


# ---------------------------------------------------------------------------------------------
# "image-folder"


def test_image_folder_flat_and_split_layouts(tmp_path: Path):
    for c, n in (("ant", 2), ("bee", 3)):
        for i in range(n):
            photo(tmp_path / f"flat/{c}/{i}.jpg")
    touch(tmp_path / "flat/LICENSE")
    ds = create_dataset("image-folder", str(tmp_path / "flat"))
    assert ds.classes == ["ant", "bee"] and ds.splits == []
    assert ds.summary()["by_class"] == {"ant": {"photo": 2}, "bee": {"photo": 3}}
    assert [Path(s.path).name for s in ds.skipped] == ["LICENSE"]

    for split, c, n in (
        ("train", "ant", 2),
        ("train", "bee", 1),
        ("val", "bee", 2),
        ("test", "cow", 1),
    ):
        for i in range(n):
            photo(tmp_path / f"split/{split}/{c}/{i}.jpg")
    ds = create_dataset("image-folder", str(tmp_path / "split"))
    assert ds.classes == ["ant", "bee", "cow"] and ds.splits == ["test", "train", "val"]
    assert ds.summary()["by_split"] == {
        "test": {"photo": 1},
        "train": {"photo": 3},
        "val": {"photo": 2},
    }
    assert len({s.instance_id for s in ds.samples}) == 6  # same stem in two splits: distinct ids

    photo(tmp_path / "split/cat/0.jpg")  # a non-split folder: now every top folder is a class ...
    with pytest.raises(DataError) as e:  # ... and 'test' holds only a folder, no usable file
        create_dataset("image-folder", str(tmp_path / "split"))
    one_line_error(e, str(tmp_path / "split/test"), "found none")


def test_image_folder_sketch_modality(tmp_path: Path):
    sketch(tmp_path / "sk/alarm clock/1.svg")
    sketch(tmp_path / "sk/alarm clock/2.png")
    photo(tmp_path / "ph/a/1.jpg")
    ds = create_dataset("image-folder", str(tmp_path / "sk"), modality="sketch")
    assert ds.classes == ["alarm clock"] and len(ds.sketches()) == 2 and ds.photos() == []
    assert ds.class_index("alarm_clock") == 0
    with pytest.raises(ValueError, match="modality"):
        create_dataset("image-folder", str(tmp_path / "ph"), modality="drawing")
    as_photos = create_dataset("image-folder", str(tmp_path / "sk"), modality="photo")
    assert [s.key for s in as_photos.photos()] == ["alarm clock/2.png"]
    assert [Path(s.path).name for s in as_photos.skipped] == ["1.svg"]  # an SVG is not a photo
    (tmp_path / "sk/alarm clock/2.png").unlink()
    with pytest.raises(DataError) as e:  # now the class folder has no usable photo at all
        create_dataset("image-folder", str(tmp_path / "sk"), modality="photo")
    one_line_error(e, str(tmp_path / "sk/alarm clock"), "found none")


# ---------------------------------------------------------------------------------------------
# "sketchy"


@pytest.fixture()
def sketchy(tmp_path: Path) -> Path:
    root = tmp_path / "sketchy"
    for tx in ("tx_000000000000", "tx_000100000000"):
        photo(root / f"photo/{tx}/airplane/n1_10.jpg")
        photo(root / f"photo/{tx}/airplane/n1_11.jpg")
        photo(root / f"photo/{tx}/teddy_bear/n2_5.jpg")
        sketch(root / f"sketch/{tx}/airplane/n1_10-1.png")
        sketch(root / f"sketch/{tx}/airplane/n1_10-2.png")
        sketch(root / f"sketch/{tx}/airplane/n1_11-1.png")
        sketch(root / f"sketch/{tx}/teddy_bear/n2_5-1.png")
    photo(root / "photo/tx_000100000000/teddy_bear/n2_6.jpg")  # only in the second transform
    sketch(root / "sketch/tx_000100000000/teddy_bear/n2_6-1.png")
    return root


def test_sketchy_tx_folders_and_pairing(sketchy: Path):
    ds = create_dataset("sketchy", str(sketchy))
    assert ds.name == "sketchy" and ds.classes == ["airplane", "teddy_bear"]
    assert ds.summary()["by_class"] == {
        "airplane": {"photo": 2, "sketch": 3},
        "teddy_bear": {"photo": 1, "sketch": 1},
    }
    assert all("tx_000000000000" in s.source for s in ds.samples)  # default: first transform
    pairs = {(s.key, p.key) for s, p in ds.pairs()}
    assert (
        "sketch/tx_000000000000/airplane/n1_10-2.png",
        "photo/tx_000000000000/airplane/n1_10.jpg",
    ) in pairs
    assert len(pairs) == 4
    ds2 = create_dataset(
        "sketchy", str(sketchy), photo_tx="tx_000100000000", sketch_tx="tx_000100000000"
    )
    assert len(ds2.photos()) == 4 and len(ds2.pairs()) == 5
    with pytest.raises(DataError) as e:
        create_dataset("sketchy", str(sketchy), photo_tx="tx_9")
    one_line_error(e, str(sketchy / "photo"), "photo_tx", "tx_000000000000")
    with pytest.raises(DataError) as e:  # sketch n2_6-1 has no photo in tx_000000000000
        create_dataset("sketchy", str(sketchy), sketch_tx="tx_000100000000")
    one_line_error(e, "n2_6-1.png")
    ds3 = create_dataset("sketchy", str(sketchy), sketch_tx="tx_000100000000", pairing="auto")
    assert [s.instance_id for s in ds3.sketches(classes=["teddy_bear"])] == [
        "teddy_bear/n2_5",
        None,
    ]


def test_sketchy_without_tx_and_extended_photos(tmp_path: Path):
    root = tmp_path / "flat"
    photo(root / "photo/teddy_bear/n2_5.jpg")
    sketch(root / "sketch/teddy_bear/n2_5-1.png")
    ext = tmp_path / "extended"
    photo(
        ext / "teddy-bear/n2_5.jpg"
    )  # same stem as a Sketchy photo: still a separate, unpaired photo
    photo(ext / "teddy-bear/ext_2.jpg")
    ds = create_dataset("sketchy", str(root), extended_photos=str(ext))
    assert ds.classes == ["teddy_bear"] and len(ds.photos()) == 3
    extended = [p for p in ds.photos() if p.key.startswith("extended/")]
    assert sorted(p.key for p in extended) == [
        "extended/teddy-bear/ext_2.jpg",
        "extended/teddy-bear/n2_5.jpg",
    ]
    assert {p.class_name for p in extended} == {"teddy_bear"}
    assert [(s.key, p.key) for s, p in ds.pairs()] == [
        ("sketch/teddy_bear/n2_5-1.png", "photo/teddy_bear/n2_5.jpg")
    ]
    photo(ext / "zebra/1.jpg")
    with pytest.raises(DataError) as e:
        create_dataset("sketchy", str(root), extended_photos=str(ext))
    one_line_error(e, str(ext / "zebra"), "Sketchy classes")


def test_sketchy_missing_folders(tmp_path: Path):
    photo(tmp_path / "s/photo/cat/1.jpg")
    with pytest.raises(DataError) as e:
        create_dataset("sketchy", str(tmp_path / "s"))
    one_line_error(e, str(tmp_path / "s/sketch"), "not found")
    sketch(tmp_path / "s/sketch/dog/1-1.png")
    with pytest.raises(DataError) as e:
        create_dataset("sketchy", str(tmp_path / "s"))
    one_line_error(e, str(tmp_path / "s/sketch/dog"), "photo class")


# ---------------------------------------------------------------------------------------------
# "tuberlin", "quickdraw-extended"


def test_tuberlin_formats_photos_and_no_pairing(tmp_path: Path):
    root = tmp_path / "tub"
    for c in ("airplane", "car_(sedan)"):
        for i in (1, 2):
            sketch(root / f"png/{c}/{i}.png")
            sketch(root / f"svg/{c}/{i}.svg")
    touch(root / "png/filelist.txt")
    ds = create_dataset("tuberlin", str(root))
    assert ds.classes == ["airplane", "car_(sedan)"] and len(ds.sketches()) == 4
    assert all(s.source.endswith(".svg") for s in ds.samples) and ds.skipped == []
    ds = create_dataset("tuberlin", str(root), sketch_format="png")
    assert all(s.source.endswith(".png") for s in ds.samples)
    assert [Path(s.path).name for s in ds.skipped] == ["filelist.txt"]
    photos = tmp_path / "tub_photos"
    photo(photos / "car (sedan)/a.jpg")
    photo(photos / "airplane/b.jpg")
    photo(photos / "airplane/c.jpg")
    ds = create_dataset("tuberlin", str(root), photos=str(photos))
    assert ds.summary()["by_class"] == {
        "airplane": {"photo": 2, "sketch": 2},
        "car_(sedan)": {"photo": 1, "sketch": 2},
    }
    assert all(s.instance_id is None for s in ds.sketches()) and ds.pairs() == []
    flat = tmp_path / "flat"
    sketch(flat / "angel/1.svg")
    assert create_dataset("tuberlin", str(flat)).classes == ["angel"]
    with pytest.raises(DataError) as e:
        create_dataset("tuberlin", str(flat), sketch_format="png")
    one_line_error(e, str(flat / "png"))


def test_quickdraw_extended_layout(tmp_path: Path):
    root = tmp_path / "qde"
    photo(root / "images/cat/1.jpg")
    photo(root / "images/cat/2.jpg")
    sketch(root / "sketch/cat/1.png")
    sketch(root / "sketch/dog/1.png")
    ds = create_dataset("quickdraw-extended", str(root))
    assert ds.summary()["by_class"] == {"cat": {"photo": 2, "sketch": 1}, "dog": {"sketch": 1}}
    assert ds.pairs() == []  # same stem '1' but category-level: no pairing
    (root / "images").rename(root / "photo")
    assert len(create_dataset("quickdraw-extended", str(root)).photos()) == 2
    (root / "photo").rename(root / "elsewhere")
    with pytest.raises(DataError) as e:
        create_dataset("quickdraw-extended", str(root))
    one_line_error(e, str(root / "images"), "photo/")


# ---------------------------------------------------------------------------------------------
# "qmul-v2"


def test_qmul_v2_split_folders(tmp_path: Path):
    root = tmp_path / "ShoeV2"
    photo(root / "trainB/2429245009.png")
    photo(root / "trainB/1000.jpg")
    photo(root / "testB/77.png")
    sketch(root / "trainA/2429245009_1.svg")
    sketch(root / "trainA/2429245009_1.png")  # same sketch in both formats: one sample
    sketch(root / "trainA/2429245009_2.svg")
    sketch(root / "trainA/1000_1.png")
    sketch(root / "testA/77_1.svg")
    sketch(root / "testA/77_2.svg")
    ds = create_dataset("qmul-v2", str(root))
    assert ds.classes == ["ShoeV2"]
    assert ds.summary()["by_split"] == {
        "test": {"photo": 1, "sketch": 2},
        "train": {"photo": 2, "sketch": 3},
    }
    assert len(ds.pairs("train")) == 3 and len(ds.pairs("test")) == 2
    keys = by_key(ds)
    assert "trainA/2429245009_1.svg" in keys and "trainA/2429245009_1.png" not in keys
    assert keys["testA/77_2.svg"].instance_id == "ShoeV2/77"
    ds = create_dataset("qmul-v2", str(root), category="shoe", sketch_format="png")
    assert ds.classes == ["shoe"] and "trainA/2429245009_1.png" in by_key(ds)
    sketch(root / "testA/55_1.svg")
    with pytest.raises(DataError) as e:
        create_dataset("qmul-v2", str(root))
    one_line_error(e, "55_1.svg")
    for p in (root / "trainB").iterdir():
        p.unlink()
    for p in (root / "testB").iterdir():
        p.unlink()
    (root / "trainB").rmdir()
    (root / "testB").rmdir()
    with pytest.raises(DataError) as e:
        create_dataset("qmul-v2", str(root))
    one_line_error(e, str(root), "trainB")


def test_qmul_v2_pair_folders(tmp_path: Path):
    root = tmp_path / "pairs"
    for pid in ("11", "22"):
        photo(root / f"{pid}/photo_gt.png")
        sketch(root / f"{pid}/sketch_gt.png")
    sketch(root / "11/sketch_gt.svg")
    touch(root / "22/notes.txt")
    ds = create_dataset("qmul-v2", str(root), category="chair")
    assert len(ds.photos()) == len(ds.sketches()) == len(ds.pairs()) == 2
    assert by_key(ds)["11/sketch_gt.svg"].instance_id == "chair/11"
    assert "11/sketch_gt.png" not in by_key(ds)  # svg preferred
    assert [Path(s.path).name for s in ds.skipped] == ["notes.txt"]
    ds = create_dataset("qmul-v2", str(root), sketch_format="png")
    assert sorted(s.key for s in ds.sketches()) == ["11/sketch_gt.png", "22/sketch_gt.png"]
    (root / "22/sketch_gt.png").unlink()
    with pytest.raises(DataError) as e:
        create_dataset("qmul-v2", str(root))
    one_line_error(e, str(root / "22"), "sketch_gt")


def test_all_loaders_registered():
    from sbirkit.data import list_datasets

    assert {
        "folder",
        "image-folder",
        "sketchy",
        "tuberlin",
        "quickdraw-extended",
        "qmul-v2",
    } <= set(list_datasets())
    assert Modality.parse("sketch") is Modality.SKETCH
