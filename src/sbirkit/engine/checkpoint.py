"""Atomic checkpoint files and RNG state that loads with ``torch.load(weights_only=True)``.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then
moved over the old one with ``os.replace`` (atomic on POSIX and Windows), so a crash mid-write
leaves the previous checkpoint intact. RNG states are stored as tensors and plain lists.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..fileio import atomic_write


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` via temp file + fsync + ``os.replace``: all or nothing."""
    atomic_write(path, lambda f: torch.save(obj, f), sync_dir=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; one-line :class:`CheckpointError` on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch.load raises many types for a bad file)
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: could not load checkpoint (corrupt or not a torch file): {reason}") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{path}: model: expected a checkpoint dict with a 'model' state dict")
    return obj


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states in weights-only-loadable form."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "algorithm": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["algorithm"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
