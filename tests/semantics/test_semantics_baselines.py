"""One-hot and random baselines, and the registry / argument checks of class_vectors."""

from __future__ import annotations

import numpy as np
import pytest

from sbirkit.semantics import class_vectors, list_sources

NAMES = ["cat", "dog", "teddy_bear", "car_(sedan)"]


def test_sources_are_registered():
    assert list_sources() == ["glove", "minilm", "onehot", "random", "word2vec"]
    with pytest.raises(KeyError, match="unknown semantic source 'fasttext'; known: glove, minilm"):
        class_vectors(NAMES, "fasttext")


def test_onehot_is_the_identity(tmp_path):
    table = class_vectors(NAMES, "onehot", cache_dir=tmp_path)
    assert table.dim == len(NAMES) and table.names == NAMES and table.normalized
    np.testing.assert_array_equal(table.vectors, np.eye(len(NAMES), dtype=np.float32))
    np.testing.assert_array_equal(table.vectors @ table.vectors.T, np.eye(len(NAMES)))
    assert list(tmp_path.iterdir()) == []  # cheap sources are not cached


def test_random_is_seeded_per_class_and_unit_norm(tmp_path):
    a = class_vectors(NAMES, "random", dim=64, seed=3, cache_dir=tmp_path)
    b = class_vectors(NAMES, "random", dim=64, seed=3)
    assert a.vectors.shape == (4, 64) and a.vectors.dtype == np.float32 and a.dim == 64
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_allclose(np.linalg.norm(a.vectors, axis=1), 1.0, rtol=1e-6)
    other = class_vectors(NAMES, "random", dim=64, seed=4)
    assert not np.allclose(a.vectors, other.vectors)
    # a class keeps its vector whatever else is in the list, and in any order
    reordered = class_vectors(["horse", "teddy bear", "cat"], "random", dim=64, seed=3)
    np.testing.assert_array_equal(reordered.vector("teddy_bear"), a.vector("teddy_bear"))
    np.testing.assert_array_equal(reordered.vectors[2], a.vectors[0])
    assert list(tmp_path.iterdir()) == []


def test_random_raw_rows_are_standard_gaussian():
    raw = class_vectors([f"class{i}" for i in range(20)], "random", dim=500, seed=0, normalize=False).vectors
    assert abs(raw.mean()) < 0.03 and abs(raw.std() - 1.0) < 0.03
    # distinct classes: nearly orthogonal in 500-d
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    off = unit @ unit.T - np.eye(20)
    assert np.abs(off).max() < 0.25


@pytest.mark.parametrize("options,match", [({"dim": 0}, "dim: expected a positive integer"),
                                           ({"seed": -1}, "seed: expected a non-negative integer")])
def test_random_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        class_vectors(NAMES, "random", **options)


def test_bad_arguments():
    with pytest.raises(ValueError, match="expected at least one class name"):
        class_vectors([], "onehot")
    with pytest.raises(ValueError, match="normalise to the same name 'teddy bear'"):
        class_vectors(["teddy_bear", "Teddy Bear"], "onehot")
    with pytest.raises(ValueError, match="on_missing: expected one of error, warn, drop"):
        class_vectors(NAMES, "onehot", on_missing="zero")
    with pytest.raises(TypeError, match="path"):
        class_vectors(NAMES, "onehot", path="x.txt")


def test_vector_lookup_and_tensor():
    table = class_vectors(NAMES, "onehot")
    np.testing.assert_array_equal(table.vector("Teddy-Bear"), [0, 0, 1, 0])
    with pytest.raises(KeyError, match="'horse' is not among the 4 classes"):
        table.vector("horse")
    tensor = table.as_tensor()
    assert tuple(tensor.shape) == (4, 4) and str(tensor.dtype) == "torch.float32"
