"""sketch-rnn .npz loader: stroke-3 decoding, split names, skipped rows, errors, real counts."""

from __future__ import annotations

import numpy as np
import pytest

from sbirkit.data import DataError, create_dataset


def _objects(*arrays):
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


GOOD = np.array([[1, 2, 0], [3, 4, 1], [5, 6, 0], [1, 1, 1]], dtype=np.int16)


def make_npz(path, **extra):
    arrays = {
        "train": _objects(
            GOOD, np.array([[0, 0, 0], [2, 0, 1]], np.int16), np.zeros((4, 2), np.int16)
        ),
        "valid": _objects(np.zeros((0, 3), np.int16), GOOD),
        "test": _objects(GOOD),
    }
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def test_stroke3_rows_splits_and_skips(tmp_path):
    path = make_npz(tmp_path / "sheep.npz")
    ds = create_dataset("sketch-rnn", str(path))
    assert ds.classes == ["sheep"]
    assert ds.summary()["by_split"] == {
        "test": {"sketch": 1},
        "train": {"sketch": 2},
        "val": {"sketch": 1},
    }
    assert sorted(s.path for s in ds.skipped) == [f"{path}#train[2]", f"{path}#valid[0]"]
    first = ds.sketches(split="train")[0]
    assert (first.key, first.index, first.source) == ("sheep/train/0", 0, str(path))
    strokes = ds.load_strokes(first)
    assert len(strokes) == 2  # a pen lift after row 1 ends the first stroke
    np.testing.assert_array_equal(strokes.strokes[0], [(1, 2), (4, 6)])
    np.testing.assert_array_equal(strokes.strokes[1], [(9, 12), (10, 13)])
    val = ds.sketches(split="val")[0]
    assert val.index == 1 and ds.load_strokes(val).num_points == 4
    for size in (48, 128):
        arr = np.asarray(ds.load_image(first, size))
        assert arr.shape == (size, size, 3) and arr.min() == 0 and np.median(arr) == 255


def test_folder_of_npz_is_one_class_per_file(tmp_path):
    make_npz(tmp_path / "cat.npz")
    np.savez(tmp_path / "ant.npz", train=_objects(GOOD, GOOD, GOOD))
    ds = create_dataset("sketch-rnn", str(tmp_path))
    assert ds.classes == ["ant", "cat"]
    assert [len(ds.sketches(classes=[c])) for c in ds.classes] == [3, 4]
    assert ds.splits == ["test", "train", "val"]
    # a view with reassigned splits still reads its strokes
    view = ds.with_split(lambda s: "all")
    assert view.load_strokes(view.samples[-1]).num_points == 4


def test_npz_errors_name_the_file(tmp_path):
    cases = []
    np.savez(tmp_path / "nokeys.npz", sketches=_objects(GOOD))
    cases.append((tmp_path / "nokeys.npz", "keys"))
    np.savez(tmp_path / "flat.npz", train=np.zeros((3, 3), np.int16))
    cases.append((tmp_path / "flat.npz", "train"))
    (tmp_path / "junk.npz").write_text("not a zip")
    cases.append((tmp_path / "junk.npz", "format"))
    (tmp_path / "a.txt").write_text("")
    cases.append((tmp_path / "a.txt", "file"))
    cases.append((tmp_path / "absent", "root"))
    for path, field in cases:
        with pytest.raises(DataError) as err:
            create_dataset("sketch-rnn", str(path))
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and field in msg, msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="files: expected one <class>.npz"):
        create_dataset("sketch-rnn", str(tmp_path / "empty"))


@pytest.mark.shared_data
def test_real_aaron_sheep(shared_data):
    ds = create_dataset("sketch-rnn", str(shared_data / "sketch_rnn"))
    assert ds.classes == ["aaron_sheep"] and not ds.skipped
    assert {k: v["sketch"] for k, v in ds.summary()["by_split"].items()} == {
        "train": 7400,
        "val": 300,
        "test": 300,
    }
    for split in ("train", "val", "test"):
        s = ds.sketches(split=split)[-1]
        assert len(ds.load_strokes(s)) >= 1
        for size in (64, 224):
            arr = np.asarray(ds.load_image(s, size))
            assert arr.shape == (size, size, 3) and arr.min() == 0 and np.median(arr) == 255
