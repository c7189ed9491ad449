"""QMUL-V1 .mat loader: pairing by row, lazy reads, triplets, layout errors, real counts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from sbirkit.data import DataError, Modality, create_dataset


def _images(n: int, offset: int) -> np.ndarray:
    """n white 256×256 images; image i has a black 8×8 square at row 8 * (i + offset)."""
    arr = np.full((n, 256, 256), 255, dtype=np.uint8)
    for i in range(n):
        r = 8 * (i + offset)
        arr[i, r : r + 8, 16:24] = 0
    return arr


def _cell_of_pairs(pairs):
    cell = np.empty((1, len(pairs)), dtype=object)
    for j, (a, b) in enumerate(pairs):
        pair = np.empty((1, 2), dtype=object)
        pair[0, 0], pair[0, 1] = np.array([[a]], np.uint8), np.array([[b]], np.uint16)
        cell[0, j] = pair
    return cell


def make_qmul(folder, cat="shoes", n_train=3, n_test=2, triplets=True):
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, off in (("train", n_train, 0), ("test", n_test, 10)):
        scipy.io.savemat(folder / f"{cat}_sketch_db_{split}.mat", {"data": _images(n, off)})
        scipy.io.savemat(folder / f"{cat}_edge_db_{split}.mat", {"data": _images(n, off + 5)})
    if triplets:
        one = np.empty((2, 1), dtype=object)
        one[0, 0], one[1, 0] = _cell_of_pairs([(1, 2), (3, 300)]), _cell_of_pairs([(2, 3)])
        scipy.io.savemat(folder / f"{cat}_train_triplets.mat", {"One": one})
    return folder


def test_pairs_splits_and_rows(tmp_path):
    ds = create_dataset("qmul-v1", str(make_qmul(tmp_path / "q")))
    assert ds.classes == ["shoes"]
    assert {s: len(ds.pairs(s)) for s in ds.splits} == {"test": 2, "train": 3}
    assert len(ds.photos()) == len(ds.sketches()) == 5
    for sketch, photo in ds.pairs("test"):
        assert sketch.instance_id == photo.instance_id == f"test/{sketch.index}"
        assert sketch.source.endswith("shoes_sketch_db_test.mat") and photo.source.endswith(
            "shoes_edge_db_test.mat"
        )
        assert photo.modality is Modality.PHOTO and sketch.class_name == "shoes"
    sketch, photo = ds.pairs("test")[1]
    s_arr, p_arr = np.asarray(ds.read(sketch)), np.asarray(ds.read(photo))
    assert s_arr.shape == (256, 256)
    assert (
        (s_arr[88:96, 16:24] == 0).all() and s_arr.min() == 0 and (s_arr == 0).sum() == 64
    )  # row 8*(1+10)
    assert (p_arr[128:136, 16:24] == 0).all() and (p_arr == 0).sum() == 64  # row 8*(1+15)
    img = ds.load_image(sketch, 32)
    assert img.size == (32, 32) and img.mode == "RGB"


def test_triplets_are_exposed_as_index_pairs(tmp_path):
    ds = create_dataset("qmul-v1", str(make_qmul(tmp_path / "q")))
    assert list(ds.triplets) == ["One"]
    a, b = ds.triplets["One"]
    np.testing.assert_array_equal(a, [[1, 2], [3, 300]])
    np.testing.assert_array_equal(b, [[2, 3]])
    assert (
        create_dataset("qmul-v1", str(make_qmul(tmp_path / "c", "chairs", triplets=False))).triplets
        is None
    )


def test_category_from_parent_folder_and_ambiguity(tmp_path):
    make_qmul(tmp_path / "shoes", "shoes", triplets=False)
    make_qmul(tmp_path / "chairs", "chairs", n_train=1, n_test=1, triplets=False)
    chairs = create_dataset("qmul-v1", str(tmp_path), category="chairs")
    assert chairs.classes == ["chairs"] and len(chairs.samples) == 4
    with pytest.raises(DataError, match=r"category: expected one of \['chairs', 'shoes'\]"):
        create_dataset("qmul-v1", str(tmp_path))
    with pytest.raises(DataError, match="got 'bags'"):
        create_dataset("qmul-v1", str(tmp_path), category="bags")


def _one_line_naming(err, path):
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_layout_errors_name_the_file_and_field(tmp_path):
    root = make_qmul(tmp_path / "q", triplets=False)
    (root / "shoes_edge_db_test.mat").unlink()
    with pytest.raises(DataError) as err:
        create_dataset("qmul-v1", str(root))
    assert "file: expected the test edge" in _one_line_naming(err, root / "shoes_edge_db_test.mat")

    scipy.io.savemat(root / "shoes_edge_db_test.mat", {"data": np.zeros((2, 64, 64), np.uint8)})
    with pytest.raises(DataError) as err:
        create_dataset("qmul-v1", str(root))
    assert "N×256×256 uint8" in _one_line_naming(err, root / "shoes_edge_db_test.mat")

    scipy.io.savemat(root / "shoes_edge_db_test.mat", {"images": _images(2, 0)})
    with pytest.raises(DataError) as err:
        create_dataset("qmul-v1", str(root))
    assert "key 'data'" in _one_line_naming(err, root / "shoes_edge_db_test.mat")

    scipy.io.savemat(root / "shoes_edge_db_test.mat", {"data": _images(3, 0)})
    with pytest.raises(DataError) as err:
        create_dataset("qmul-v1", str(root))
    assert "as many sketches as edge maps" in _one_line_naming(
        err, root / "shoes_sketch_db_test.mat"
    )

    (root / "shoes_edge_db_test.mat").write_text("not a mat file")
    with pytest.raises(DataError) as err:
        create_dataset("qmul-v1", str(root))
    _one_line_naming(err, root / "shoes_edge_db_test.mat")

    for missing in (tmp_path / "nothing", tmp_path / "empty"):
        if missing.name == "empty":
            missing.mkdir()
        with pytest.raises(DataError) as err:
            create_dataset("qmul-v1", str(missing))
        _one_line_naming(err, missing)


@pytest.mark.shared_data
@pytest.mark.parametrize("category, n_train, n_test", [("shoes", 304, 115), ("chairs", 200, 97)])
def test_real_qmul_v1_counts_and_images(shared_data, category, n_train, n_test):
    ds = create_dataset("qmul-v1", str(shared_data / "qmul_v1"), category=category)
    assert {s: len(ds.pairs(s)) for s in ds.splits} == {"train": n_train, "test": n_test}
    assert len(ds.samples) == 2 * (n_train + n_test)
    for sketch, photo in [ds.pairs("train")[0], ds.pairs("test")[-1]]:
        for sample in (sketch, photo):
            for size in (64, 224):
                arr = np.asarray(ds.load_image(sample, size))
                assert arr.shape == (size, size, 3)
                # dark lines on a white ground (thin lines go grey when shrunk to 64 px)
                assert np.median(arr) == 255 and 0.02 < (arr < 250).mean() < 0.5
    if category == "shoes":
        assert sorted(ds.triplets) == ["One", "Three", "Two"]
        for rows in ds.triplets.values():
            assert len(rows) == n_train + n_test
            stacked = np.stack(rows)
            assert stacked.shape == (419, 45, 2) and stacked.min() == 1 and stacked.max() == 419
    else:
        assert ds.triplets is None
