"""The on-disk cache: hits return identical vectors, keys follow the class list and the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import sbirkit.semantics.word_vectors as word_vectors
from sbirkit.data import DataError
from sbirkit.semantics import class_vectors
from sbirkit.semantics.cache import cache_key, default_cache_dir

NAMES = ["cat", "teddy_bear", "car_(sedan)", "airplane"]


def _no_reading(*args, **kwargs):
    raise AssertionError("the word vector file was read although the cache holds the table")


def entries(directory):
    return sorted(p.name for p in directory.iterdir())


def test_hit_returns_identical_vectors_without_reading(glove_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = class_vectors(NAMES, "glove", path=glove_file, cache_dir=cache)
    files = entries(cache)
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npz")
    meta = json.loads((cache / files[0]).read_text())
    assert meta["source"] == "glove" and meta["classes"] == NAMES and meta["identity"]["path"] == str(glove_file)
    monkeypatch.setattr(word_vectors, "read_word_vectors", _no_reading)
    second = class_vectors(NAMES, "glove", path=glove_file, cache_dir=cache)
    np.testing.assert_array_equal(second.vectors, first.vectors)
    assert second.names == NAMES and second.origin == first.origin and second.normalized
    raw = class_vectors(NAMES, "glove", path=glove_file, cache_dir=cache, normalize=False)  # same entry, raw rows
    np.testing.assert_array_equal(raw.vectors[1], [0.5, 0.5, 1.0])
    assert entries(cache) == files


def test_key_changes_with_class_list_and_order(glove_file, tmp_path):
    identity = word_vectors.word_file_identity(path=glove_file)
    k1 = cache_key("glove", identity, NAMES)
    assert k1 != cache_key("glove", identity, NAMES[:3])
    assert k1 != cache_key("glove", identity, NAMES[::-1])
    assert k1 != cache_key("word2vec", identity, NAMES)
    assert k1 == cache_key("glove", dict(identity), list(NAMES))
    cache = tmp_path / "cache"
    class_vectors(NAMES, "glove", path=glove_file, cache_dir=cache)
    fewer = class_vectors(NAMES[:2], "glove", path=glove_file, cache_dir=cache)
    assert len(entries(cache)) == 4 and fewer.names == NAMES[:2]


def test_changed_file_is_not_served_stale(tmp_path):
    path, cache = tmp_path / "w.txt", tmp_path / "cache"
    path.write_text("cat 1 0\n", encoding="utf-8")
    np.testing.assert_array_equal(class_vectors(["cat"], "glove", path=path, cache_dir=cache).vectors, [[1, 0]])
    path.write_text("cat 0 1\n", encoding="utf-8")  # same size: the modification time tells
    os.utime(path, ns=(1, 1))
    np.testing.assert_array_equal(class_vectors(["cat"], "glove", path=path, cache_dir=cache).vectors, [[0, 1]])


def test_corrupt_entry_warns_and_is_rebuilt(glove_file, tmp_path):
    cache = tmp_path / "cache"
    good = class_vectors(NAMES, "glove", path=glove_file, cache_dir=cache)
    npz = next(cache.glob("*.npz"))
    npz.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="ignoring unreadable semantics cache entry"):
        rebuilt = class_vectors(NAMES, "glove", path=glove_file, cache_dir=cache)
    np.testing.assert_array_equal(rebuilt.vectors, good.vectors)
    with np.load(npz) as data:  # the entry was rewritten
        assert data["vectors"].shape == (4, 3)
    sidecar = next(cache.glob("*.json"))
    sidecar.write_text(sidecar.read_text().replace('"cat"', '"dog"'))
    with pytest.warns(UserWarning, match="another source or class list"):
        class_vectors(NAMES, "glove", path=glove_file, cache_dir=cache)


def test_missing_policy_applies_on_a_cache_hit(glove_file, tmp_path):
    cache, names = tmp_path / "cache", ["cat", "unicorn"]
    with pytest.warns(UserWarning, match="unicorn"):
        class_vectors(names, "glove", path=glove_file, cache_dir=cache, on_missing="warn")
    with pytest.raises(DataError, match="'unicorn'"):
        class_vectors(names, "glove", path=glove_file, cache_dir=cache)


def test_cache_false_and_env_dir(glove_file, tmp_path, monkeypatch):
    monkeypatch.setenv("SBIRKIT_CACHE", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "semantics"
    class_vectors(NAMES, "glove", path=glove_file, cache=False)
    assert not (tmp_path / "root").exists()
    class_vectors(NAMES, "glove", path=glove_file)
    assert len(entries(tmp_path / "root" / "semantics")) == 2
    monkeypatch.delenv("SBIRKIT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "sbirkit" / "semantics"
