"""On-disk cache of class-vector tables: ``<key>.npz`` (the vectors) + ``<key>.json`` (what they are).

The key is a SHA-256 of (source, the options that change the vectors, the class list in order).
The cache holds the raw source output; normalisation and the missing-name policy apply after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..fileio import atomic_write
from .vectors import ClassVectors

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$SBIRKIT_CACHE/semantics`` if ``SBIRKIT_CACHE`` is set, else ``~/.cache/sbirkit/semantics``."""
    root = os.environ.get("SBIRKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "sbirkit") / "semantics"


def cache_key(source: str, identity: dict, class_names: list[str]) -> str:
    """Hex SHA-256 of the canonical JSON of (source, identity, class names)."""
    text = json.dumps({"v": FORMAT_VERSION, "source": source, "identity": identity, "classes": list(class_names)},
                      sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_cached(directory: Path, key: str, source: str, class_names: list[str]) -> ClassVectors | None:
    """The cached table, or None when absent; a corrupt or mismatched entry warns and returns None."""
    vectors_file, sidecar = directory / f"{key}.npz", directory / f"{key}.json"
    if not vectors_file.exists() and not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if meta.get("source") != source or meta.get("classes") != list(class_names):
            raise ValueError("sidecar names another source or class list")
        with np.load(vectors_file, allow_pickle=False) as data:
            vectors = np.array(data["vectors"], dtype=np.float32)
        if vectors.shape != (len(class_names), meta["dim"]):
            raise ValueError(f"vectors have shape {vectors.shape}, sidecar says ({len(class_names)}, {meta['dim']})")
        return ClassVectors(names=list(class_names), vectors=vectors, source=source, missing=list(meta["missing"]),
                            partial=list(meta["partial"]), origin=str(meta["origin"]))
    except Exception as exc:  # any unreadable entry is rebuilt, never trusted
        warnings.warn(f"{vectors_file}: ignoring unreadable semantics cache entry ({exc}); rebuilding it", stacklevel=3)
        return None


def save_cached(directory: Path, key: str, table: ClassVectors, identity: dict) -> None:
    """Write the entry atomically (temporary file + rename), vectors first, sidecar last."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_VERSION, "source": table.source, "identity": identity, "classes": list(table.names),
            "dim": table.dim, "missing": table.missing, "partial": table.partial, "origin": table.origin}
    atomic_write(directory / f"{key}.npz", lambda f: np.savez(f, vectors=table.vectors))
    atomic_write(directory / f"{key}.json", json.dumps(meta, indent=1).encode("utf-8"))
