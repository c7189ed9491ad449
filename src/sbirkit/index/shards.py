"""Sharded gallery embedding: many workers embed one photo collection into one folder of shards.

``sbirkit embed RUN PHOTOS --out DIR --shard i/n`` (or under ``torchrun``, which sets ``RANK`` and
``WORLD_SIZE``) runs one worker; every worker lists ``PHOTOS`` the same way, so they agree on a
**sorted manifest** of relative paths, and each embeds its own shards of it. No process group is
needed: the workers only share the folder. ``sbirkit index build --from-embeddings DIR`` then
reads the shards one at a time (:class:`ShardSet`).

Folder layout (``format_version`` 1)::

    DIR/
      manifest.txt          the sorted relative paths of PHOTOS, one per line (written once)
      shards.json           the folder's header: format, the manifest's SHA-256 and file count,
                            num_shards, modality, model_info (fingerprint, embed_dim ...), labels
      shard-00000.npy       float32 (rows, dim) embeddings of shard 0, L2-normalised
      shard-00000.jsonl     one item per row, in row order: id (relative path), path, class_name
      shard-00000.json      the shard's marker, written last: its manifest rows [start, stop),
                            rows embedded, the unreadable files skipped (count and list), the
                            model fingerprint, and the size and SHA-256 of its .npy and .jsonl
      .shard-00000.lock     held (flock) by the worker writing shard 0
      .*.tmp-<id>           a write in progress (a killed worker's is removed when the shard is redone)

Shard ``j`` of ``M`` holds manifest rows ``[j*N//M, (j+1)*N//M)``, so the shards in order are
the manifest in order, and concatenating them gives exactly what a single ``embed`` of the same
folder gives (the same vectors, ids and order). Worker ``i`` of ``n`` embeds shards ``i, i+n,
i+2n ...``; ``--shards M`` (default: ``n``) sets how many there are, so a job of 10 workers may
write 1,000 shards and a killed worker loses only the shard it was writing.

Resuming: a shard whose marker exists and whose files have the size and SHA-256 the marker
records is finished and is not redone; anything else (no marker, a truncated or changed file,
a marker of another manifest or model) is embedded again. Every file is written to a temporary
name, flushed and renamed into place; the marker goes last, so a shard is either finished or
visibly not.

Agreement: the first worker writes ``manifest.txt`` and ``shards.json`` (atomically, create-if-
absent); every other worker compares its own manifest hash, ``num_shards``, modality and model
fingerprint with them and stops with a one-line error if any differs (the folder changed
between workers, or ``DIR`` already holds another collection's or another model's shards).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UsageError
from ..fileio import atomic_write, create_once, file_lock, fsync_path
from .items import ConcatItems, JsonlItems, item_line
from .store import sha256_file

log = logging.getLogger(__name__)

FORMAT = "sbirkit-embedding-shards"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.txt"
HEADER_FILE = "shards.json"
_SHARD = re.compile(r"shard-(\d{5,})\.(npy|jsonl|json)")
_SHARD_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
#: the most shards a folder may have (file names carry at least five digits)
MAX_SHARDS = 1_000_000


def shard_name(j: int) -> str:
    return f"shard-{j:05d}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- which worker, which shards ----------------------------------------------------------------
def parse_shard_spec(text: str, flag: str = "--shard") -> tuple[int, int]:
    """``"i/n"`` as (worker i, n workers), 0 <= i < n; a one-line :class:`UsageError` otherwise."""
    m = _SHARD_SPEC.fullmatch(str(text))
    if not m:
        raise UsageError(f"{flag}: expected i/n (this worker's number and the number of workers, "
                         f"0 <= i < n, e.g. 0/4), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"{flag}: expected i/n with 0 <= i < n, got {text!r}")
    return i, n


def worker_from_env(env: dict | None = None) -> tuple[int, int] | None:
    """(rank, world size) set by ``torchrun`` (``RANK``, ``WORLD_SIZE``); None when not set."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return None
    rank, world = env.get("RANK", ""), env.get("WORLD_SIZE", "")
    if not (rank.isdigit() and world.isdigit()) or int(world) < 1 or int(rank) >= int(world):
        raise UsageError(f"RANK/WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE (as torchrun sets them), "
                         f"got RANK={rank!r} WORLD_SIZE={world!r}")
    return int(rank), int(world)


def shard_range(j: int, num_shards: int, n_files: int) -> tuple[int, int]:
    """Manifest rows [start, stop) of shard ``j`` of ``num_shards`` (contiguous, sizes differ by <= 1)."""
    return j * n_files // num_shards, (j + 1) * n_files // num_shards


def worker_shards(worker: int, workers: int, num_shards: int) -> list[int]:
    """The shards worker ``worker`` of ``workers`` embeds: ``worker, worker + workers, ...``."""
    return list(range(worker, num_shards, workers))


# ---- the manifest ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """The sorted relative paths of a photo folder, and the SHA-256 of their text."""

    root: Path
    files: tuple[str, ...]
    sha256: str
    class_from_folder: bool

    @classmethod
    def of_folder(cls, folder: str | os.PathLike) -> Manifest:
        from .files import list_image_files

        root = Path(folder)
        paths = list_image_files(root)
        if not paths:
            raise DataError(f"{root}: expected image files, found none")
        rel = tuple(p.relative_to(root).as_posix() for p in paths)
        for r in rel:
            if "\n" in r or "\r" in r:
                raise DataError(f"{root / r}: file name: expected no line break in it")
        return cls(root, rel, hashlib.sha256(_manifest_bytes(rel)).hexdigest(),
                   all(len(r.split("/")) == 2 for r in rel))

    def text(self) -> bytes:
        return _manifest_bytes(self.files)

    def __len__(self) -> int:
        return len(self.files)


def _manifest_bytes(files: Sequence[str]) -> bytes:
    return "".join(f + "\n" for f in files).encode("utf-8")


# ---- small file helpers ------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{path}: expected JSON, could not parse it (truncated or not from sbirkit)") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object")
    return obj


def _is_shard_entry(name: str) -> bool:
    return (name in (MANIFEST_FILE, HEADER_FILE) or _SHARD.fullmatch(name) is not None
            or (name.startswith(".") and (".tmp-" in name or name.endswith(".lock"))))


def check_out_folder(out: str | os.PathLike, flag: str = "--out") -> Path:
    """Raise :class:`UsageError` unless ``out`` is a new folder or a shard folder (only its files)."""
    target = Path(out)
    if target.suffix == ".npz":
        raise UsageError(f"{flag} {target}: shard mode writes a folder; give a folder name (an '.npz' "
                         "name is the single-file mode, without --shard/--shards/torchrun)")
    if target.exists():
        if not target.is_dir():
            raise UsageError(f"{flag} {target}: expected a folder for the shards, found a file")
        extra = sorted(p.name for p in target.iterdir() if not _is_shard_entry(p.name))
        if extra:
            raise UsageError(f"{flag} {target}: expected a new folder or a shard folder, it holds other "
                             f"files: {extra[:5]}")
    return target


# ---- the folder header -------------------------------------------------------------------------
def _header(manifest: Manifest, num_shards: int, modality: str, model_info: dict) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "manifest_sha256": manifest.sha256,
        "files": len(manifest),
        "num_shards": int(num_shards),
        "modality": modality,
        "class_from_folder": manifest.class_from_folder,
        "root": str(manifest.root.resolve()),
        "model_info": model_info,
        "created": _now(),
    }


def _fingerprint(info: dict | None) -> str | None:
    return None if not info else (str(info["fingerprint"]) if info.get("fingerprint") is not None else None)


def _check_header(header: dict, path: Path, manifest_sha: str | None = None, num_shards: int | None = None,
                  modality: str | None = None, model_info: dict | None = None) -> None:
    """One-line errors when this worker disagrees with the folder's header."""
    if header.get("format") != FORMAT:
        raise DataError(f"{path}: format: expected {FORMAT!r}, got {header.get('format')!r}")
    if not isinstance(header.get("format_version"), int) or header["format_version"] > FORMAT_VERSION:
        raise DataError(f"{path}: format_version: expected at most {FORMAT_VERSION}, "
                        f"got {header.get('format_version')!r}; read it with a newer sbirkit")
    for key in ("manifest_sha256", "files", "num_shards", "model_info"):
        if key not in header:
            raise DataError(f"{path}: {key}: expected this field, it is missing")
    if manifest_sha is not None and header["manifest_sha256"] != manifest_sha:
        raise DataError(
            f"{path}: manifest_sha256: the folder's manifest ({header['manifest_sha256'][:12]}..., "
            f"{header['files']} files) differs from this worker's listing of the photos "
            f"({manifest_sha[:12]}...): the photo folder changed between workers, or the folder holds "
            "another collection's shards; embed into a new --out")
    if num_shards is not None and int(header["num_shards"]) != int(num_shards):
        raise DataError(f"{path}: num_shards: the folder was started with {header['num_shards']} shards, "
                        f"this worker has {num_shards}; use the same --shards (or worker count) for every worker")
    if modality is not None and header.get("modality") != modality:
        raise DataError(f"{path}: modality: the folder holds {header.get('modality')!r} embeddings, "
                        f"this worker embeds {modality!r}")
    if model_info is not None:
        have, want = _fingerprint(header["model_info"]), _fingerprint(model_info)
        if have != want or header["model_info"].get("embed_dim") != model_info.get("embed_dim"):
            raise DataError(f"{path}: model_info.fingerprint: the folder was embedded by model {have}, "
                            f"this worker's model is {want}; embed into a new --out")


# ---- one shard ---------------------------------------------------------------------------------
def _shard_paths(root: Path, j: int) -> tuple[Path, Path, Path]:
    name = shard_name(j)
    return root / f"{name}.npy", root / f"{name}.jsonl", root / f"{name}.json"


def check_shard(root: Path, j: int, header: dict, checksums: bool = True) -> dict | None:
    """The marker of shard ``j`` when the shard is finished and matches ``header``; None otherwise.

    Finished means: the marker parses, names this manifest, model, shard count and row range,
    and both data files have the recorded size (and, with ``checksums``, SHA-256).
    """
    npy, jsonl, marker_path = _shard_paths(root, j)
    if not marker_path.is_file():
        return None
    try:
        marker = _read_json(marker_path)
    except DataError:
        return None
    start, stop = shard_range(j, int(header["num_shards"]), int(header["files"]))
    if (marker.get("format") != FORMAT or marker.get("shard") != j
            or marker.get("num_shards") != header["num_shards"]
            or marker.get("manifest_sha256") != header["manifest_sha256"]
            or _fingerprint(marker.get("model_info")) != _fingerprint(header["model_info"])
            or marker.get("start") != start or marker.get("stop") != stop):
        return None
    files = marker.get("files") or {}
    for path in (npy, jsonl):
        rec = files.get(path.name) or {}
        try:
            size = path.stat().st_size
        except OSError:
            return None
        if size != rec.get("bytes"):
            return None
        if checksums and sha256_file(path) != rec.get("sha256"):
            return None
    return marker


def write_shard(root: Path, j: int, header: dict, embeddings: np.ndarray, items: Sequence[dict],
                skipped: Sequence[tuple[Any, str]] = (), extra: dict | None = None) -> dict:
    """Write shard ``j`` (vectors, items, then the marker), each file atomically; returns the marker."""
    npy, jsonl, marker_path = _shard_paths(root, j)
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    dim = int(header["model_info"].get("embed_dim") or (emb.shape[1] if emb.ndim == 2 else 0))
    if emb.size == 0:
        emb = np.zeros((0, dim), dtype=np.float32)
    if emb.ndim != 2 or len(emb) != len(items):
        raise DataError(f"{npy}: expected {len(items)} rows of embeddings, got shape {emb.shape}")
    marker_path.unlink(missing_ok=True)  # a shard being rewritten is visibly unfinished
    for stale in root.glob(f".{shard_name(j)}.*.tmp-*"):  # a killed writer's leftovers (we hold the lock)
        stale.unlink(missing_ok=True)
    records = {}
    atomic_write(npy, lambda f: np.save(f, emb, allow_pickle=False))
    atomic_write(jsonl, b"".join(item_line(it) for it in items))
    for path in (npy, jsonl):
        records[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    start, stop = shard_range(j, int(header["num_shards"]), int(header["files"]))
    marker = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "shard": j,
        "num_shards": header["num_shards"],
        "manifest_sha256": header["manifest_sha256"],
        "start": start,
        "stop": stop,
        "rows": len(items),
        "dim": int(emb.shape[1]),
        "skipped": len(skipped),
        "skipped_files": [{"path": str(p), "reason": str(r)} for p, r in skipped],
        "model_info": header["model_info"],
        "files": records,
        "created": _now(),
        **(extra or {}),
    }
    atomic_write(marker_path, (json.dumps(marker, indent=1, default=str) + "\n").encode("utf-8"))
    fsync_path(root)
    return marker


# ---- a worker ----------------------------------------------------------------------------------
@dataclass
class ShardReport:
    """What one worker did: shards embedded and skipped as finished, rows, unreadable files."""

    out: Path
    worker: int
    workers: int
    num_shards: int
    embedded: list[int] = field(default_factory=list)
    finished_before: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    rows: int = 0
    skipped: int = 0


def prepare_folder(out: Path, manifest: Manifest, num_shards: int, modality: str,
                   model_info: dict | None = None) -> dict | None:
    """Write (first worker) or check (every other) the manifest and header of ``out``.

    With ``model_info=None`` only what is known before the model loads is checked, and the header
    is returned if it exists (None otherwise); with it, the header is created if absent and returned.
    """
    header_path = out / HEADER_FILE
    manifest_path = out / MANIFEST_FILE
    if model_info is None:
        if header_path.is_file():
            header = _read_json(header_path)
            _check_header(header, header_path, manifest.sha256, num_shards, modality)
            return header
        if manifest_path.is_file():
            have = sha256_file(manifest_path)
            if have != manifest.sha256:
                raise DataError(f"{manifest_path}: sha256: the folder's manifest ({have[:12]}...) differs from "
                                f"this worker's listing of the photos ({manifest.sha256[:12]}...); embed into a new --out")
        return None
    out.mkdir(parents=True, exist_ok=True)
    create_once(manifest_path, manifest.text())
    have = sha256_file(manifest_path)
    if have != manifest.sha256:
        raise DataError(f"{manifest_path}: sha256: the folder's manifest ({have[:12]}...) differs from this "
                        f"worker's listing of the photos ({manifest.sha256[:12]}...): the photo folder changed "
                        "between workers, or the folder holds another collection's shards; embed into a new --out")
    header = _header(manifest, num_shards, modality, model_info)
    create_once(header_path, (json.dumps(header, indent=2, default=str) + "\n").encode("utf-8"))
    header = _read_json(header_path)
    _check_header(header, header_path, manifest.sha256, num_shards, modality, model_info)
    return header


def embed_shards(
    out: str | os.PathLike,
    manifest: Manifest,
    worker: int,
    workers: int,
    num_shards: int,
    load_model: Callable[[], tuple[Callable, int, dict]],
    batch_size: int = 64,
    modality: str = "photo",
    progress: bool = True,
    echo: Callable[[str], Any] | None = None,
) -> ShardReport:
    """Embed worker ``worker``'s shards of ``manifest`` into ``out`` (see the module docstring).

    ``load_model()`` returns ``(encode, image_size, model_info)``; it is called only after the
    folder and flags are checked, and only if this worker has a shard left to embed (the
    fingerprint in ``model_info`` is still checked against the folder's when it does). Finished
    shards are skipped; unreadable files are skipped and counted in each shard's marker.
    """
    from .files import embed_image_files, image_items

    say = echo or (lambda s: None)
    out = check_out_folder(out)
    if not 1 <= num_shards <= MAX_SHARDS:
        raise UsageError(f"--shards: expected 1..{MAX_SHARDS:,} shards, got {num_shards}")
    if not 0 <= worker < workers:
        raise UsageError(f"--shard: expected i/n with 0 <= i < n, got {worker}/{workers}")
    if workers > num_shards:
        raise UsageError(f"--shards: expected at least as many shards as workers ({workers}), got {num_shards}")
    report = ShardReport(out, worker, workers, num_shards)
    mine = worker_shards(worker, workers, num_shards)
    header = prepare_folder(out, manifest, num_shards, modality)
    if header is not None:
        left = [j for j in mine if check_shard(out, j, header) is None]
        report.finished_before = [j for j in mine if j not in left]
        if not left:
            for j in report.finished_before:
                say(f"shard {j} of {num_shards}: finished earlier, not redone")
            return report
    encode, size, info = load_model()
    header = prepare_folder(out, manifest, num_shards, modality, info)
    report.finished_before = []
    for j in mine:
        lock = out / f".{shard_name(j)}.lock"
        with file_lock(lock, blocking=False) as got:
            if got is None:
                report.busy.append(j)
                say(f"shard {j} of {num_shards}: another worker is writing it; left to that worker")
                continue
            if check_shard(out, j, header) is not None:
                report.finished_before.append(j)
                say(f"shard {j} of {num_shards}: finished earlier, not redone")
                continue
            start, stop = shard_range(j, num_shards, len(manifest))
            paths = [manifest.root / r for r in manifest.files[start:stop]]
            if paths:
                emb, ok, failures = embed_image_files(encode, paths, size, batch_size=batch_size,
                                                      progress=progress, modality=modality)
            else:
                emb, ok, failures = np.zeros((0, int(info["embed_dim"])), np.float32), [], []
            items = image_items(ok, manifest.root, class_from_folder=bool(header.get("class_from_folder")))
            write_shard(out, j, header, emb, items, failures,
                        extra={"worker": worker, "workers": workers, "host": os.uname().nodename
                               if hasattr(os, "uname") else None})
            report.embedded.append(j)
            report.rows += len(items)
            report.skipped += len(failures)
            say(f"shard {j} of {num_shards}: {len(items)} images ({len(failures)} unreadable, skipped) "
                f"-> {out / (shard_name(j) + '.npy')}")
    return report


# ---- reading a shard folder --------------------------------------------------------------------
@dataclass(frozen=True)
class ShardInfo:
    index: int
    rows: int
    npy: Path
    jsonl: Path
    marker: dict


class ShardSet:
    """A finished shard folder, read one shard at a time (memory-mapped ``.npy`` files).

    :meth:`open` checks the header, the manifest's hash, that every shard is finished and belongs
    to this folder (same manifest, model, shard count), and the sizes of all files; each shard's
    SHA-256 is checked when its vectors are first read (:meth:`vectors`).
    """

    def __init__(self, root: Path, header: dict, shards: list[ShardInfo]):
        self.root = root
        self.header = header
        self.shards = shards
        self.model_info = dict(header["model_info"])
        self.dim = int(self.model_info.get("embed_dim") or shards[0].marker.get("dim"))
        self.offsets = np.cumsum([0] + [s.rows for s in shards]).astype(np.int64)
        self._verified: set[int] = set()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def skipped(self) -> int:
        return sum(int(s.marker.get("skipped", 0)) for s in self.shards)

    @classmethod
    def open(cls, directory: str | os.PathLike, flag: str = "--from-embeddings") -> ShardSet:
        root = Path(directory)
        if not root.is_dir():
            what = "a file" if root.exists() else "nothing"
            raise DataError(f"{flag} {root}: expected a shard folder (from 'sbirkit embed --shard'), found {what}")
        header_path = root / HEADER_FILE
        if not header_path.is_file():
            raise DataError(f"{flag} {root}: expected a shard folder from 'sbirkit embed --shard', "
                            f"it has no {HEADER_FILE}")
        header = _read_json(header_path)
        _check_header(header, header_path)
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file():
            raise DataError(f"{manifest_path}: expected the folder's manifest, it is missing")
        if sha256_file(manifest_path) != header["manifest_sha256"]:
            raise DataError(f"{manifest_path}: sha256: expected {header['manifest_sha256'][:12]}... "
                            f"({HEADER_FILE}); it was changed after the shards were started")
        m = int(header["num_shards"])
        stray = sorted({int(mt.group(1)) for p in root.iterdir() if (mt := _SHARD.fullmatch(p.name))
                        and int(mt.group(1)) >= m})
        if stray:
            raise DataError(f"{flag} {root}: shard {shard_name(stray[0])} is beyond the folder's {m} shards: "
                            "the folder mixes shards of two runs with different --shards")
        shards, missing = [], []
        for j in range(m):
            npy, jsonl, marker_path = _shard_paths(root, j)
            if marker_path.is_file():
                marker = _read_json(marker_path)
                if marker.get("manifest_sha256") != header["manifest_sha256"]:
                    raise DataError(f"{marker_path}: manifest_sha256: {str(marker.get('manifest_sha256'))[:12]}... "
                                    f"differs from {HEADER_FILE}'s {header['manifest_sha256'][:12]}...: the folder "
                                    "mixes shards of two collections")
                if _fingerprint(marker.get("model_info")) != _fingerprint(header["model_info"]):
                    raise DataError(f"{marker_path}: model_info.fingerprint: "
                                    f"{_fingerprint(marker.get('model_info'))} differs from {HEADER_FILE}'s "
                                    f"{_fingerprint(header['model_info'])}: the folder mixes two models' shards")
            marker = check_shard(root, j, header, checksums=False)
            if marker is None:
                missing.append(j)
                continue
            shards.append(ShardInfo(j, int(marker["rows"]), npy, jsonl, marker))
        if missing:
            shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
            raise DataError(f"{flag} {root}: {len(missing)} of {m} shards are missing or unfinished ({shown}); "
                            "run their workers again (finished shards are not redone)")
        if sum(s.rows for s in shards) == 0:
            raise DataError(f"{flag} {root}: none of the {header['files']} images could be embedded")
        return cls(root, header, shards)

    # -- data ------------------------------------------------------------------------------------
    def vectors(self, s: int) -> np.ndarray:
        """Shard number ``s`` (position in :attr:`shards`) as a read-only memory map, checked once."""
        info = self.shards[s]
        if s not in self._verified:
            want = info.marker["files"][info.npy.name]["sha256"]
            if sha256_file(info.npy) != want:
                raise DataError(f"{info.npy}: sha256: expected {want[:12]}... ({info.npy.stem}.json); "
                                "it changed after it was written")
            self._verified.add(s)
        x = np.load(info.npy, mmap_mode="r", allow_pickle=False)
        if x.dtype != np.float32 or x.ndim != 2 or x.shape != (info.rows, self.dim):
            raise DataError(f"{info.npy}: expected float32 ({info.rows}, {self.dim}), got {x.dtype} {x.shape}")
        return x

    def items(self) -> ConcatItems:
        """Every row's item dict, read lazily from the shards' ``.jsonl`` files (checked by SHA-256)."""
        parts = []
        for info in self.shards:
            rec = info.marker["files"][info.jsonl.name]
            parts.append(JsonlItems(info.jsonl, expect_rows=info.rows, sha256=rec["sha256"]))
        return ConcatItems(parts)

    def blocks(self, rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) over all rows in order, one shard mapped at a time; the
        pages of a block are let go once it is copied, so they do not pile up in resident memory."""
        for s, info in enumerate(self.shards):
            if info.rows == 0:
                continue
            x = self.vectors(s)
            for a in range(0, info.rows, rows):
                block = np.array(x[a : a + rows], dtype=np.float32)
                _drop_pages(x)
                yield int(self.offsets[s]) + a, block
            del x

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of sorted global ``rows`` (a sample), read shard by shard."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            x = self.vectors(int(s))
            out[sel] = x[rows[sel] - self.offsets[s]]
            _drop_pages(x)
            del x
        return out


def _drop_pages(x: np.ndarray) -> None:
    """Tell the kernel this process no longer needs the resident pages of memory map ``x``
    (``MADV_DONTNEED``: read-only file pages stay in the page cache, out of this process's RSS)."""
    import mmap

    m = getattr(x, "_mmap", None)
    if m is not None and hasattr(m, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            m.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # pragma: no cover - an OS without it: pages are dropped at unmap
            pass
