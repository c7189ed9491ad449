"""QMUL-V1 with several categories at once (``category=[shoes, chairs]``): one class each, pairs
never cross categories, single-category behaviour unchanged, and the real shoes + chairs counts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from sbirkit.data import DataError, create_dataset


def make_qmul(folder, cat, n_train, n_test, triplets=False):
    """A QMUL-V1 category: image i of a file has a black 8x8 square at row 8 * (i + offset), sketches
    at offset 0 (train) / 10 (test), edge maps 5 further down; optional one-key triplets file."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, off in (("train", n_train, 0), ("test", n_test, 10)):
        for kind, extra in (("sketch", 0), ("edge", 5)):
            arr = np.full((n, 256, 256), 255, dtype=np.uint8)
            for i in range(n):
                arr[i, 8 * (i + off + extra):8 * (i + off + extra) + 8, 16:24] = 0
            scipy.io.savemat(folder / f"{cat}_{kind}_db_{split}.mat", {"data": arr})
    if triplets:
        scipy.io.savemat(folder / f"{cat}_train_triplets.mat", {"One": np.array([[1, 2], [2, 3]], np.uint16)})


def _two(tmp_path):
    make_qmul(tmp_path / "shoes", "shoes", n_train=3, n_test=2, triplets=True)
    make_qmul(tmp_path / "chairs", "chairs", n_train=2, n_test=1, triplets=False)
    return tmp_path


def test_two_categories_are_two_classes_with_their_own_pairs(tmp_path):
    ds = create_dataset("qmul-v1", str(_two(tmp_path)), category=["shoes", "chairs"])
    assert ds.classes == ["shoes", "chairs"] and ds.category == "shoes+chairs"
    assert {s: len(ds.pairs(s)) for s in ds.splits} == {"train": 5, "test": 3}
    for sketch, photo in ds.pairs():
        assert sketch.class_index == photo.class_index
        assert sketch.class_name == photo.class_name == ds.classes[sketch.class_index]
        assert sketch.instance_id == photo.instance_id == f"{sketch.class_name}/{sketch.split}/{sketch.index}"
        assert sketch.source.rsplit("/", 1)[-1].startswith(sketch.class_name + "_sketch_db_")
    chair_sketch, chair_photo = [p for p in ds.pairs("train") if p[0].class_name == "chairs"][1]
    assert chair_photo.source.endswith("chairs_edge_db_train.mat") and chair_photo.index == 1
    arr = np.asarray(ds.read(chair_photo))
    assert (arr[48:56, 16:24] == 0).all() and (arr == 0).sum() == 64  # row 8 * (1 + 5)
    assert set(ds.triplets) == {"shoes"} and list(ds.triplets["shoes"]) == ["One"]
    np.testing.assert_array_equal(ds.triplets["shoes"]["One"][0], [[1, 2], [2, 3]])
    assert ds.files[("chairs", "edge", "test")].name == "chairs_edge_db_test.mat"
    assert len({s.key for s in ds.samples}) == len(ds.samples)


def test_a_one_element_list_and_a_name_are_the_same_dataset(tmp_path):
    _two(tmp_path)
    a = create_dataset("qmul-v1", str(tmp_path), category="chairs")
    b = create_dataset("qmul-v1", str(tmp_path), category=["chairs"])
    assert [s.key for s in a.samples] == [s.key for s in b.samples]
    assert [s.instance_id for s in a.samples] == [s.instance_id for s in b.samples]
    assert a.samples[0].instance_id == "train/0" and a.classes == b.classes == ["chairs"]
    assert a.files == b.files and set(a.files) == {(k, s) for k in ("sketch", "edge") for s in ("train", "test")}


def test_category_list_errors_name_the_problem(tmp_path):
    _two(tmp_path)
    with pytest.raises(DataError, match=r"got 'bags'"):
        create_dataset("qmul-v1", str(tmp_path), category=["shoes", "bags"])
    with pytest.raises(DataError, match="distinct"):
        create_dataset("qmul-v1", str(tmp_path), category=["shoes", "shoes"])
    with pytest.raises(DataError, match="non-empty"):
        create_dataset("qmul-v1", str(tmp_path), category=[])


@pytest.mark.shared_data
def test_real_shoes_and_chairs_together(shared_data):
    ds = create_dataset("qmul-v1", str(shared_data / "qmul_v1"), category=["shoes", "chairs"])
    counts = {(c, s): 0 for c in ds.classes for s in ("train", "test")}
    for sketch, _ in ds.pairs():
        counts[(sketch.class_name, sketch.split)] += 1
    assert counts == {("shoes", "train"): 304, ("shoes", "test"): 115, ("chairs", "train"): 200,
                      ("chairs", "test"): 97}
