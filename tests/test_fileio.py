"""The one module for file locks, fsync and atomic replace (sbirkit.fileio), and that every writer
uses it: no ``os.replace`` / ``flock`` anywhere else in src/."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from sbirkit import fileio
from sbirkit.fileio import atomic_write, atomic_write_many, file_lock, temp_path

SRC = Path(__file__).resolve().parents[1] / "src" / "sbirkit"


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write(target, b"old")
    atomic_write(target, lambda f: np.save(f, np.arange(3)), sync_dir=True)
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "a.json"
    atomic_write(target, b"old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_files_that_change_together_are_all_written_before_the_first_replace(tmp_path, monkeypatch):
    a, b = tmp_path / "features.npy", tmp_path / "keys.json"
    atomic_write_many({a: b"A0", b: b"B0"})
    seen = []
    real = os.replace

    def replace(src, dst):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    atomic_write_many({a: b"A1", b: b"B1"})
    assert len(seen[0]) == 4  # both temporaries existed before the first replacement
    assert (a.read_bytes(), b.read_bytes()) == (b"A1", b"B1")

    def fail_second(src, dst):
        if Path(dst) == b:
            raise OSError("no space")
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", fail_second)
    with pytest.raises(OSError):
        atomic_write_many({a: b"A2", b: b"B2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npy", "keys.json"]  # no temporaries left


def test_temp_names_sit_beside_the_target_and_start_with_a_dot(tmp_path):
    t = temp_path(tmp_path / "CURRENT")
    assert t.parent == tmp_path and re.fullmatch(r"\.CURRENT\.tmp-[0-9a-f]{12}", t.name)


def test_file_lock_excludes_a_second_holder_until_released(tmp_path):
    path = tmp_path / ".lock"
    with file_lock(path) as held:
        assert held is not None
        held.write(b"pid 1")
        held.flush()
        with file_lock(path, blocking=False) as second:  # another open file description: excluded
            assert second is None
        assert path.read_bytes() == b"pid 1"  # a refused locker does not touch the holder's text
    with file_lock(path, blocking=False) as again:
        assert again is not None
    assert path.exists()  # the lock file stays (its inode is what every locker agrees on)


def test_no_writer_outside_fileio_replaces_or_locks_by_itself():
    offenders = []
    for p in SRC.rglob("*.py"):
        if p.name == "fileio.py":
            continue
        for no, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"\bos\.replace\(|\bfcntl\.flock\(|\bos\.fsync\(|tempfile\.mkstemp\(", line):
                offenders.append(f"{p.relative_to(SRC)}:{no}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_create_once_creates_only_the_first_time(tmp_path):
    target = tmp_path / "manifest.txt"
    assert fileio.create_once(target, b"first") is True
    assert fileio.create_once(target, b"second") is False
    assert target.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.txt"]
