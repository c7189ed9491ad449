"""Writing files so that no reader and no crash sees half of one, and keeping writers apart.

One set of helpers for every writer in sbirkit (run locks, checkpoints, embedding shards, the
feature and class-vector caches, index versions and the server's reload signal):

* :func:`atomic_write`: the bytes go to a temporary file beside the target (``.NAME.tmp-<id>``),
  are flushed and ``fsync``'ed, then moved over the target with ``os.replace`` (atomic on POSIX
  and Windows). A crash leaves the old file or the new one, and at worst a ``.tmp-`` file that
  the writer's next run removes. :func:`atomic_write_many` does this for files that must change
  together (all temporary files are written before the first is moved into place).
* :func:`create_once`: create a file with its whole content unless it exists (a hard link of a
  finished temporary file), for a file several workers may race to create.
* :func:`fsync_path`: flush a file or a folder (a rename is durable once its folder is flushed);
  best effort where the OS cannot open folders.
* :func:`file_lock`: an exclusive advisory lock (``fcntl.flock``) on a lock file, blocking or
  not. The OS drops it when the holder dies (``kill -9`` included), so a killed writer never
  leaves a lock behind. Where ``fcntl`` does not exist (Windows) nothing is locked: callers
  document what that means for them.

Why by hand: ``filelock`` (installed with torch) also locks with ``flock``, but version 4
removes the lock file on release unless told not to and may probe a folder with
``.filelock-probe-*`` files; the index and shard folders admit only their own entries and the run
lock keeps "who holds it" in its lock file. ``atomicwrites`` is archived. What is needed here is
about 80 lines of ``os`` calls (docs/architecture.md, "Written here, and why").
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Union

#: what :func:`atomic_write` writes: bytes, or a function that writes into a binary file object
Content = Union[bytes, Callable[[IO[bytes]], object]]


def temp_path(final: str | os.PathLike, tag: str | None = None) -> Path:
    """A temporary name beside ``final``: ``.NAME.tmp-<tag>`` (a random tag by default)."""
    final = Path(final)
    return final.with_name(f".{final.name}.tmp-{tag or uuid.uuid4().hex[:12]}")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a folder to disk (best effort where the OS cannot open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_synced(path: str | os.PathLike, content: Content) -> None:
    """Write ``content`` to ``path`` (created or truncated), flushed and ``fsync``'ed."""
    with open(path, "wb") as f:
        if isinstance(content, (bytes, bytearray, memoryview)):
            f.write(content)
        else:
            content(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(final: str | os.PathLike, content: Content, sync_dir: bool = False) -> None:
    """Replace ``final`` with ``content`` all at once (see the module docstring); ``sync_dir``
    also flushes the folder, so the replacement itself survives a power loss."""
    atomic_write_many({final: content}, sync_dir=sync_dir)


def atomic_write_many(files: Mapping[str | os.PathLike, Content], sync_dir: bool = False) -> None:
    """:func:`atomic_write` for several files that change together: every temporary file is
    written and flushed before the first replacement, then they are moved into place in order."""
    tmps: list[tuple[Path, Path]] = []
    try:
        for final, content in files.items():
            tmp = temp_path(final)
            tmps.append((tmp, Path(final)))
            write_synced(tmp, content)
        for tmp, final in tmps:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        for folder in dict.fromkeys(final.parent for _, final in tmps):
            fsync_path(folder)


def create_once(final: str | os.PathLike, data: bytes) -> bool:
    """Create ``final`` holding ``data`` unless it exists (atomic: a hard link of a finished
    temporary file). Returns True when this call created it."""
    tmp = temp_path(final)
    try:
        write_synced(tmp, data)
        try:
            os.link(tmp, final)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write
            try:
                fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return True
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[IO[bytes] | None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Yields the lock file, open for reading and appending (a holder may write who it is into it),
    or ``None`` when ``blocking=False`` and another process holds the lock. Where ``fcntl`` does
    not exist, yields the file without locking it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        fcntl = None
    with open(path, "a+b") as f:
        if fcntl is None:  # pragma: no cover
            yield f
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        try:
            yield f
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
