"""The versioned folder store of a gallery index: the pointer, the writer lock, the checksums.

Index folder layout (``format_version`` 2)::

    X/
      CURRENT                    one line: the name of the live version folder
      v-<UTC time>-<id>/         one complete build; never modified once CURRENT names it
        index.faiss              the FAISS index (the vectors)
        items.jsonl              one JSON object per row, in row order (``id`` or ``path``, extras)
        meta.json                model_info, factory used (and requested, and why they differ),
                                 metric, ntotal, dim, nprobe, versions, created, and the SHA-256
                                 of index.faiss, items.jsonl and the label column
      .lock                      locked (``flock``) by a save in progress: one writer at a time
      .tmp-<id>/                 a save in progress; one left by a killed save is removed by the next

:meth:`GalleryIndex.save` writes every file into ``X/.tmp-<id>/``, flushes it, renames it to
``X/v-<time>-<id>/``, then atomically replaces ``X/CURRENT`` (a temporary file and
``os.replace``) and only then deletes the older version folders. :meth:`GalleryIndex.load`
reads ``CURRENT`` once and opens all three files of that one version before reading any, so a
concurrent save can never give it one build's vectors with another build's items; if the
version is deleted between reading the pointer and opening its files (a save finished in that
instant), it reads the new pointer and tries again. The checksums in ``meta.json`` make a
shuffled, edited or swapped ``items.jsonl`` or ``index.faiss`` a one-line :class:`DataError`.

Folders written by older sbirkit (``format_version`` 1: ``index.faiss``, ``items.jsonl`` and
``meta.json`` directly in ``X``, no checksums) still load; the next save into ``X`` converts it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import faiss

from .. import __version__
from ..errors import DataError
from ..fileio import atomic_write, file_lock, fsync_path
from .checksums import labels_sha256, quick_sha256, sha256_file
from .faiss_ops import METRICS, short_error
from .items import write_items

INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.jsonl"
META_FILE = "meta.json"
POINTER_FILE = "CURRENT"
LOCK_FILE = ".lock"
FORMAT = "sbirkit-gallery-index"
FORMAT_VERSION = 2
FILES = (INDEX_FILE, ITEMS_FILE, META_FILE)
VERSION_NAME = re.compile(r"v-[0-9TZ]+-[0-9a-f]+")
LOAD_TRIES = 5  # reads of CURRENT before giving up on an index that keeps changing under a reader

T = TypeVar("T")


def check_target(directory: str | os.PathLike) -> Path:
    """Raise :class:`DataError` unless :meth:`save` may write an index to ``directory``.

    It may when the folder is new, or holds only what an index folder holds (this layout or
    the old flat one). Cheap: callers check before embedding a whole collection.
    """
    target = Path(directory)
    if target.exists():
        if not target.is_dir():
            raise DataError(f"{target}: expected a folder for the index, found a file")
        extra = sorted(p.name for p in target.iterdir() if not is_index_entry(p.name))
        if extra:
            raise DataError(
                f"{target}: refusing to overwrite a folder holding files other than an index: {extra[:5]}"
            )
    parent = target
    while not parent.exists():  # the nearest folder that exists must be writable
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{target}: expected a folder path, but {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{target}: expected a writable location, {parent} is not writable")
    return target


@contextmanager
def writer_lock(target: Path):
    """Hold an exclusive lock on ``target/.lock`` (POSIX ``flock``; none where unavailable).

    One save at a time writes into an index folder; the OS drops the lock if the writer dies,
    so a killed save never leaves the folder locked.
    """
    with file_lock(target / LOCK_FILE):
        yield


def write_version(target: Path, index: faiss.Index, items: Sequence[dict], meta: dict) -> Path:
    """Write a new version of ``target`` (``index``, ``items``, ``meta`` plus checksums) and make
    it the live one, with the writer lock already held; returns the version folder."""
    remove_orphans(target)
    tag = uuid.uuid4().hex[:12]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    tmp = target / f".tmp-{tag}"
    version = target / f"v-{stamp}-{tag}"
    swapped = False
    tmp.mkdir()
    try:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        items_sha = write_items(tmp / ITEMS_FILE, items)  # streamed: no copy of them all
        meta = dict(meta)
        meta["checksums"] = {
            "algorithm": "sha256",
            INDEX_FILE: sha256_file(tmp / INDEX_FILE),
            ITEMS_FILE: items_sha,
            "labels": labels_sha256(items),
            # for memory-mapped loads, which check sizes and this instead of the whole file
            f"{INDEX_FILE}:quick": quick_sha256(tmp / INDEX_FILE),
            "bytes": {name: (tmp / name).stat().st_size for name in (INDEX_FILE, ITEMS_FILE)},
        }
        (tmp / META_FILE).write_text(
            json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8"
        )
        for name in FILES:
            fsync_path(tmp / name)
        fsync_path(tmp)
        os.rename(tmp, version)
        fsync_path(target)
        # the atomic switch (through .CURRENT.tmp-<id>, which remove_orphans clears if killed here)
        atomic_write(target / POINTER_FILE, (version.name + "\n").encode("utf-8"), sync_dir=True)
        swapped = True
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not swapped:
            shutil.rmtree(version, ignore_errors=True)
        raise
    # readers that already opened an older version's files keep reading them (POSIX)
    for entry in target.iterdir():
        if entry.name != version.name and VERSION_NAME.fullmatch(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
    for name in FILES:  # an old flat (format_version 1) index converted by this save
        (target / name).unlink(missing_ok=True)
    return version


class VersionGone(Exception):
    """The version a reader found in CURRENT was replaced and deleted before it opened its files."""


def is_index_entry(name: str) -> bool:
    """Whether a name in an index folder belongs to the index (either layout) or its saves."""
    return (
        name in (POINTER_FILE, LOCK_FILE, *FILES)
        or VERSION_NAME.fullmatch(name) is not None
        or name.startswith((".tmp-", f".{POINTER_FILE}.tmp-"))
    )


def read_pointer(root: Path) -> str | None:
    """The version folder name in ``root/CURRENT``; None when there is no pointer (flat layout)."""
    try:
        raw = (root / POINTER_FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"{root / POINTER_FILE}: could not read it ({exc.strerror})") from None
    name = raw.decode("utf-8", errors="replace").strip()
    if not VERSION_NAME.fullmatch(name):
        raise DataError(
            f"{root / POINTER_FILE}: expected the name of a version folder (v-<time>-<id>), got {name[:60]!r}"
        )
    return name


@contextmanager
def open_version(root: Path, names: Sequence[str]):
    """Open ``names`` of the live version of ``root`` together: yields (version folder, handles).

    Raises :class:`VersionGone` when a concurrent save replaced the version in between, and
    a one-line :class:`DataError` when a file is really missing.
    """
    if not root.is_dir():
        what = "a file" if root.exists() else "nothing"
        raise DataError(f"{root}: expected a gallery index folder, found {what} there")
    pointer = read_pointer(root)
    version = root / pointer if pointer is not None else root
    with ExitStack() as stack:
        handles = {}
        for name in names:
            try:
                handles[name] = stack.enter_context(open(version / name, "rb"))
            except FileNotFoundError:
                if read_pointer(root) != pointer:
                    raise VersionGone() from None
                if pointer is not None and not version.is_dir():
                    raise DataError(
                        f"{version}: expected the index version that {POINTER_FILE} names, it is missing"
                    ) from None
                raise DataError(
                    f"{version / name}: expected the index's {name} file, it is missing"
                ) from None
            except OSError as exc:
                raise DataError(f"{version / name}: could not open it ({exc.strerror})") from None
        yield version, handles


def parse_meta(raw: bytes, path: Path) -> dict:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: expected UTF-8 JSON, byte {raw[exc.start]:#04x} at offset {exc.start} is not UTF-8"
        ) from None
    except ValueError as exc:
        raise DataError(f"{path}: expected JSON, could not parse it ({short_error(exc)})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for field in ("format", "factory", "metric", "ntotal", "dim", "model_info"):
        if field not in meta:
            raise DataError(f"{path}: {field}: expected this field, it is missing")
    if meta["format"] != FORMAT:
        raise DataError(f"{path}: format: expected {FORMAT!r}, got {meta['format']!r}")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{path}: format_version: expected a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version: expected at most {FORMAT_VERSION} (sbirkit {__version__}), "
            f"got {version}; read it with a newer sbirkit"
        )
    meta["format_version"] = version
    if meta["metric"] not in METRICS:
        raise DataError(
            f"{path}: metric: expected one of {sorted(METRICS)}, got {meta['metric']!r}"
        )
    for field in ("ntotal", "dim"):
        if not isinstance(meta[field], int) or isinstance(meta[field], bool) or meta[field] < 0:
            raise DataError(f"{path}: {field}: expected a non-negative integer, got {meta[field]!r}")
    if not isinstance(meta["model_info"], dict):
        raise DataError(
            f"{path}: model_info: expected an object, got {type(meta['model_info']).__name__}"
        )
    return meta


def read_live(root: Path, names: Sequence[str], read: Callable[[Path, dict], T], what: str = "being read") -> T:
    """``read(version folder, handles)`` of the live version of ``root``, its files ``names`` open
    together (:func:`open_version`); tried again when a save replaces the version meanwhile."""
    for _ in range(LOAD_TRIES):
        try:
            with open_version(root, names) as (version, handles):
                return read(version, handles)
        except VersionGone:
            continue
    raise DataError(f"{root}: the index kept changing while {what} ({LOAD_TRIES} tries)")


def remove_orphans(target: Path) -> None:
    """Delete what killed saves left in ``target`` (called with the writer lock held, so any
    ``.tmp-*`` entry there belongs to a save that is no longer running)."""
    try:
        pointer = read_pointer(target)
    except DataError:  # a damaged pointer: this save replaces it; keep every version until then
        pointer = None
    for entry in target.iterdir():
        if entry.name.startswith((".tmp-", f".{POINTER_FILE}.tmp-")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        elif VERSION_NAME.fullmatch(entry.name) and pointer is not None and entry.name != pointer:
            shutil.rmtree(entry, ignore_errors=True)  # renamed into place, never made live
