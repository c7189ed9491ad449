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


# ---- no code runs from a data file ---------------------------------------------------------------
class _Payload:
    """Unpickling this calls builtins.open(marker, 'w'): it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import builtins

        return (builtins.open, (self.marker, "w"))


def _npy_member(pickled: bytes, shape=(1,)) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": shape})
    return buf.getvalue() + pickled


def _payload_npz(path, pickled: bytes, shape=(1,)):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.npy", _npy_member(pickled, shape))
    return path


def _payloads(marker):
    """Crafted train arrays: the bare payload, and one hidden as an element of a genuine object array."""
    import pickle

    bare = pickle.dumps(_Payload(marker), protocol=2)
    nested = _objects(GOOD, GOOD)
    nested[1] = _Payload(marker)
    return {"bare": (bare, (1,)), "nested": (pickle.dumps(nested, protocol=3), (2,))}


@pytest.mark.parametrize("kind", ["bare", "nested"])
def test_crafted_pickle_runs_nothing_loader_and_cli(tmp_path, kind):
    import pickle

    from typer.testing import CliRunner

    from sbirkit.cli import app

    pickled, shape = _payloads(tmp_path / "marker")[kind]
    # the payload is live: numpy's pickle loading runs it
    control = tmp_path / "control"
    control_pickled, _ = _payloads(control)[kind]
    pickle.loads(control_pickled)
    assert control.exists()

    folder = tmp_path / "data"
    folder.mkdir()
    path = _payload_npz(folder / "evil.npz", pickled, shape)
    with pytest.raises(DataError) as err:
        create_dataset("sketch-rnn", str(folder))
    msg = str(err.value)
    assert "\n" not in msg and f"{path}#train.npy" in msg and "global io.open is not allowed" in msg
    assert not (tmp_path / "marker").exists()

    result = CliRunner().invoke(app, ["data", "info", str(folder), "-f", "sketch-rnn"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{path}#train.npy" in lines[0] and "not allowed" in lines[0], result.output
    assert not (tmp_path / "marker").exists()


def test_restricted_numpy_callables_cannot_be_misused(tmp_path):
    """The admitted numpy names rebuild arrays only: no direct ndarray(...) call, no big
    preallocation through _reconstruct, no array subclass, no non-string dtype spec."""
    import pickle

    from sbirkit.data.npz import read_npz

    def craft(body: bytes) -> bytes:
        return b"\x80\x02" + body + b"."

    cases = {
        # numpy.ndarray((1 << 40,)): allocation by calling ndarray directly
        "ndarray-call": (craft(b"cnumpy\nndarray\n" + pickle.dumps((1 << 40,), 2)[2:-1] + b"R"), "not callable"),
        # _reconstruct(ndarray, (10**9,), 'O'): a billion-element preallocation
        "reconstruct-shape": (
            craft(
                b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                + pickle.dumps((10**9,), 2)[2:-1] + pickle.dumps("O", 2)[2:-1] + b"\x87R"
            ),
            "expected the placeholder shape (0,), got (1000000000,)",
        ),
        # numpy.dtype(<a list>): only type strings are accepted
        "dtype-arg": (craft(b"cnumpy\ndtype\n" + pickle.dumps(([1],), 2)[2:-1] + b"R"), "expected a type string"),
        "other-numpy": (
            craft(b"cnumpy\nload\n" + pickle.dumps(("x",), 2)[2:-1] + b"R"),
            "global numpy.load is not allowed",
        ),
    }
    for name, (pickled, reason) in cases.items():
        path = _payload_npz(tmp_path / f"{name}.npz", pickled)
        with pytest.raises(DataError) as err:
            read_npz(path)
        msg = str(err.value)
        assert "\n" not in msg and f"{path}#train.npy: data: expected a numpy array, refused" in msg, msg
        assert reason in msg, msg


def test_object_array_must_match_its_header(tmp_path):
    import pickle

    from sbirkit.data.npz import read_npz

    path = _payload_npz(tmp_path / "lies.npz", pickle.dumps(_objects(GOOD, GOOD), protocol=3), shape=(5,))
    with pytest.raises(DataError, match=r"lies.npz#train.npy: data: expected an object array of shape \(5,\)"):
        read_npz(path)
    # a plain pickled list (not an array) in an object-array member
    path = _payload_npz(tmp_path / "list.npz", pickle.dumps([1, 2], protocol=3))
    with pytest.raises(DataError, match=r"list.npz#train.npy: data: expected an object array .* got list"):
        read_npz(path)


def test_numeric_members_and_nested_object_arrays_round_trip(tmp_path):
    from sbirkit.data.npz import read_npz

    drawings = _objects(GOOD, GOOD[:2].astype(np.int32), np.zeros((0, 3), np.float32))
    np.savez(tmp_path / "a.npz", train=drawings, plain=np.arange(6, dtype=np.int64).reshape(2, 3))
    out = read_npz(tmp_path / "a.npz")
    assert sorted(out) == ["plain", "train"]
    np.testing.assert_array_equal(out["plain"], [[0, 1, 2], [3, 4, 5]])
    assert out["train"].dtype == object and out["train"].shape == (3,)
    for got, want in zip(out["train"], drawings):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    assert sorted(read_npz(tmp_path / "a.npz", keys=["plain"])) == ["plain"]


def test_non_finite_drawing_is_a_skipped_row(tmp_path):
    bad = GOOD.astype(np.float32)
    bad[1, 0] = np.inf
    np.savez(tmp_path / "cat.npz", train=_objects(GOOD, bad))
    ds = create_dataset("sketch-rnn", str(tmp_path / "cat.npz"))
    assert len(ds.sketches()) == 1
    assert [(s.path, s.reason) for s in ds.skipped] == [
        (f"{tmp_path / 'cat.npz'}#train[1]", "coordinates: expected finite numbers, got NaN or inf")
    ]
