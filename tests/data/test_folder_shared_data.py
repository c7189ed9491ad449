"""Folder loaders on the real sample data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sbirkit.data import Strokes, create_dataset

pytestmark = pytest.mark.shared_data

CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def assert_rgb_content(img, size: int) -> np.ndarray:
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (size, size, 3)
    assert arr.std() > 5  # not a flat (blank) image
    return arr


def test_cifar10_image_folder(shared_data):
    ds = create_dataset("image-folder", str(shared_data / "cifar10"), image_size=40)
    assert ds.classes == CIFAR_CLASSES and ds.splits == ["test", "train"]
    for split in ("test", "train"):
        photos = ds.photos(split)
        assert len(photos) == 10_000
        assert Counter(s.class_name for s in photos) == {c: 1000 for c in CIFAR_CLASSES}
    assert ds.sketches() == [] and ds.skipped == []
    for s in ds.photos("train")[
        ::2500
    ]:  # a few from different classes, decoded and resized 32 -> 40
        assert_rgb_content(ds.load_image(s), 40)


def test_tuberlin_svg_as_image_folder_and_tuberlin(shared_data):
    root = shared_data / "tuberlin_svg"
    for ds in (
        create_dataset("image-folder", str(root), modality="sketch"),
        create_dataset("tuberlin", str(root)),
    ):
        assert ds.classes == ["airplane", "alarm clock", "angel"]
        assert Counter(s.class_name for s in ds.sketches()) == {
            "airplane": 5,
            "alarm clock": 5,
            "angel": 5,
        }
        assert ds.photos() == [] and ds.skipped == []
        assert ds.class_index("alarm_clock") == 1
    first = ds.sketches(classes=["alarm clock"])[0]
    strokes = ds.load_strokes(first)
    assert isinstance(strokes, Strokes) and len(strokes) > 3
    arr = assert_rgb_content(ds.load_image(first, size=48), 48)
    grey = arr.mean(axis=2)
    assert grey.min() < 80 and np.median(grey) > 240  # dark ink on a white page


def test_qmul_v2_samples_pair_folders(shared_data):
    root = shared_data / "qmul_v2_samples"
    ds = create_dataset("qmul-v2", str(root), category="shoe", image_size=56)
    assert ds.classes == ["shoe"]
    assert len(ds.photos()) == 3 and len(ds.sketches()) == 3 and len(ds.pairs()) == 3
    assert all(s.source.endswith("sketch_gt.svg") for s in ds.sketches())
    assert ds.skipped == []
    for sketch, photo in ds.pairs():
        assert sketch.instance_id == photo.instance_id == f"shoe/{photo.key.split('/')[0]}"
        assert_rgb_content(ds.load_image(photo), 56)
        assert_rgb_content(ds.load_image(sketch), 56)
    png = create_dataset("qmul-v2", str(root), sketch_format="png")
    assert png.classes == ["qmul_v2_samples"] and len(png.pairs()) == 3
    assert all(s.source.endswith("sketch_gt.png") for s in png.sketches())
    assert png.validate().ok
