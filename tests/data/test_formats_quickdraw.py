"""Quick, Draw! loaders: ndjson rows (skips counted), npy bitmaps (inverted), errors, real counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbirkit.data import DataError, Strokes, create_dataset


def _row(key_id, drawing, recognized=True, word="x"):
    return json.dumps(
        {
            "word": word,
            "countrycode": "GB",
            "recognized": recognized,
            "key_id": key_id,
            "drawing": drawing,
        }
    )


RAW = [  # [xs, ys, ts] strokes in screen pixels
    _row("101", [[[10, 20, 30], [5, 5, 15], [0, 10, 20]], [[40, 40], [0, 50], [30, 40]]]),
    "{not json",
    _row("102", []),
    _row("103", [[[1.5, 2.5], [3, 4]]], recognized=False),  # simplified-style [xs, ys]
    "",
    _row("104", [[[], []]]),
    _row("105", [[[7], [8]]]),
    json.dumps({"word": "x", "key_id": "106"}),
]


def make_ndjson(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "The Eiffel Tower.ndjson").write_text("\n".join(RAW) + "\n")
    (folder / "apple.ndjson").write_text(
        _row("201", [[[0, 1], [0, 1]]]) + "\n" + _row("202", [[[0, 3], [3, 0]]])
    )
    return folder


def test_ndjson_rows_strokes_and_skips(tmp_path):
    root = make_ndjson(tmp_path / "qd")
    ds = create_dataset("quickdraw-ndjson", str(root))
    assert ds.classes == ["The Eiffel Tower", "apple"]
    eiffel = ds.sketches(classes=["the_eiffel_tower"])
    assert [s.instance_id for s in eiffel] == ["101", "103", "105"]
    assert [s.index for s in eiffel] == [0, 3, 6]  # line numbers in the file
    assert all(
        s.user_id is None and s.source == str(root / "The Eiffel Tower.ndjson") for s in eiffel
    )
    strokes = ds.load_strokes(eiffel[0])
    assert isinstance(strokes, Strokes) and len(strokes) == 2
    np.testing.assert_array_equal(strokes.strokes[0], [(10, 5), (20, 5), (30, 15)])
    np.testing.assert_array_equal(strokes.strokes[1], [(40, 0), (40, 50)])
    np.testing.assert_array_equal(ds.load_strokes(eiffel[1]).strokes[0], [(1.5, 3), (2.5, 4)])
    src = root / "The Eiffel Tower.ndjson"
    assert sorted(s.path for s in ds.skipped) == [f"{src}#{i}" for i in (1, 2, 5, 7)]
    reasons = {s.path.rsplit("#", 1)[1]: s.reason for s in ds.skipped}
    assert "could not decode" in reasons["1"] and "empty drawing" in reasons["2"]
    assert "empty drawing" in reasons["5"] and "'drawing'" in reasons["7"]
    assert ds.summary()["skipped"] == 4 and len(ds.validate().failures) == 4
    for size in (32, 96):
        arr = np.asarray(ds.load_image(eiffel[0], size))
        assert arr.shape == (size, size, 3) and arr.min() == 0 and np.median(arr) == 255
    thin = (np.asarray(ds.load_image(eiffel[0], 64)) < 128).sum()
    thick_ds = create_dataset("quickdraw-ndjson", str(root), stroke_width=6)
    assert (np.asarray(thick_ds.load_image(eiffel[0], 64)) < 128).sum() > 2 * thin > 0


def test_ndjson_options(tmp_path):
    root = make_ndjson(tmp_path / "qd")
    rec = create_dataset("quickdraw-ndjson", str(root), recognized_only=True)
    assert [s.instance_id for s in rec.samples] == [
        "101",
        "105",
        "201",
        "202",
    ] and rec.unrecognized == 1
    capped = create_dataset("quickdraw-ndjson", str(root), max_per_class=1)
    assert [s.instance_id for s in capped.samples] == ["101", "201"]
    assert [s.path.rsplit("#", 1)[1] for s in capped.skipped] == []  # stopped before line 1
    sub = create_dataset("quickdraw-ndjson", str(root), classes=["Apple"])
    assert sub.classes == ["apple"] and [s.class_index for s in sub.samples] == [0, 0]
    one = create_dataset("quickdraw-ndjson", str(root / "apple.ndjson"))
    assert one.classes == ["apple"] and len(one.samples) == 2
    with pytest.raises(DataError, match=r"classes: expected names .* \['banana'\]"):
        create_dataset("quickdraw-ndjson", str(root), classes=["apple", "banana"])


def _assert_one_line(err, path, field):
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and field in msg


def test_ndjson_layout_errors(tmp_path):
    for bad, field in ((tmp_path / "missing", "root"), (tmp_path / "x.txt", "file")):
        if bad.suffix:
            bad.write_text("")
        with pytest.raises(DataError) as err:
            create_dataset("quickdraw-ndjson", str(bad))
        _assert_one_line(err, bad, field)
    empty_dir = tmp_path / "none"
    empty_dir.mkdir()
    with pytest.raises(DataError) as err:
        create_dataset("quickdraw-ndjson", str(empty_dir))
    _assert_one_line(err, empty_dir, "files")
    (empty_dir / "cat.ndjson").write_text("\n\n")
    with pytest.raises(DataError) as err:
        create_dataset("quickdraw-ndjson", str(empty_dir))
    _assert_one_line(err, empty_dir / "cat.ndjson", "rows")
    with pytest.raises(DataError, match="max_per_class"):
        create_dataset("quickdraw-ndjson", str(empty_dir), max_per_class=0)


def make_npy(folder):
    folder.mkdir(parents=True, exist_ok=True)
    a = np.zeros((4, 784), np.uint8)
    for i in range(4):
        a[i, 28 * 3 + 5 + i] = 255  # ink at row 3, column 5 + i
    b = np.zeros((2, 1, 784), np.uint8)
    b[:, 0, 28 * 27 : 28 * 28] = 200  # bottom row
    np.save(folder / "apple.npy", a)
    np.save(folder / "bowtie.npy", b)
    return folder


def test_npy_bitmaps_are_inverted_and_lazy(tmp_path):
    root = make_npy(tmp_path / "bm")
    ds = create_dataset("quickdraw-npy", str(root))
    assert ds.classes == ["apple", "bowtie"]
    assert [len(ds.sketches(classes=[c])) for c in ds.classes] == [4, 2]
    s = ds.sketches(classes=["apple"])[2]
    arr = np.asarray(ds.read(s))
    assert arr.shape == (28, 28) and arr[3, 7] == 0 and (arr == 255).sum() == 783
    b = np.asarray(ds.read(ds.sketches(classes=["bowtie"])[1]))
    assert (b[27] == 55).all() and (b[:27] == 255).all()
    assert isinstance(ds._arrays[str(root / "apple.npy")], np.memmap)
    img = ds.load_image(s, 64)
    assert img.size == (64, 64) and np.asarray(img).min() < 200
    capped = create_dataset("quickdraw-npy", str(root), max_per_class=3)
    assert len(capped.samples) == 5
    assert len(create_dataset("quickdraw-npy", str(root / "bowtie.npy")).samples) == 2


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((3, 28, 28), np.uint8),
        np.zeros((3, 2, 784), np.uint8),
        np.zeros((3, 784), np.float32),
        np.zeros((0, 784), np.uint8),
    ],
)
def test_npy_bad_arrays(tmp_path, array):
    root = make_npy(tmp_path / "bm")
    np.save(root / "cat.npy", array)
    with pytest.raises(DataError) as err:
        create_dataset("quickdraw-npy", str(root))
    _assert_one_line(err, root / "cat.npy", "array")


def test_npy_not_an_array(tmp_path):
    root = make_npy(tmp_path / "bm")
    (root / "cat.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError) as err:
        create_dataset("quickdraw-npy", str(root))
    _assert_one_line(err, root / "cat.npy", "format")


@pytest.fixture(scope="module")
def real_raw(shared_data):
    return create_dataset("quickdraw-ndjson", str(shared_data / "quickdraw_raw"))


@pytest.mark.shared_data
def test_real_quickdraw_raw(real_raw):
    assert len(real_raw.classes) == 345 and len(real_raw.samples) == 9570 and not real_raw.skipped
    assert "The Eiffel Tower" in real_raw.classes
    counts = [len(real_raw.sketches(classes=[i])) for i in range(345)]
    assert min(counts) == 11 and max(counts) == 114 and np.median(counts) == 26
    for s in real_raw.samples[::2400]:
        assert s.instance_id.isdigit()
        for size in (64, 224):
            arr = np.asarray(real_raw.load_image(s, size))
            assert arr.shape == (size, size, 3) and arr.min() == 0 and np.median(arr) == 255


@pytest.mark.shared_data
def test_real_quickdraw_bitmaps(shared_data):
    ds = create_dataset("quickdraw-npy", str(shared_data / "quickdraw_bitmap"))
    by_class = {c: v["sketch"] for c, v in ds.summary()["by_class"].items()}
    big = {"bowtie", "lollipop", "rainbow"}
    assert by_class == {
        c: (5000 if c in big else 3000)
        for c in [
            "apple",
            "bicycle",
            "bowtie",
            "cat",
            "diamond",
            "eye",
            "fish",
            "lollipop",
            "rainbow",
        ]
    }
    for s in ds.samples[::11000]:
        for size in (64, 224):
            arr = np.asarray(ds.load_image(s, size))
            assert arr.shape == (size, size, 3) and arr.min() < 64 and np.median(arr) > 200
