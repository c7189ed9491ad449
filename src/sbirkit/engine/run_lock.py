"""One training process per run folder: an advisory lock on ``<run_dir>/.lock``.

Two ``sbirkit train`` processes writing into one folder would interleave ``metrics.jsonl`` and
overwrite each other's checkpoints. The lock is held while a run trains (``fcntl.flock``, so it
is released by the OS when the process dies, ``kill -9`` included); the file says who holds it.
On platforms without ``fcntl`` the lock is not taken.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError
from ..fileio import file_lock
from .runlog import now_iso

LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the run folder's lock for the block; a second holder gets a one-line ConfigError."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    with file_lock(path, blocking=False) as f:
        if f is None:
            holder = path.read_text(errors="replace").strip() or "another process"
            raise ConfigError(f"{run_dir}: run folder in use by {holder}; wait for it to finish or use another "
                              "--run-dir")
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}\n".encode())
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            f.flush()
