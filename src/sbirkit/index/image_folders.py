"""Gallery image folders: list the image files, name their items, embed them (skipping, counting
and reporting unreadable files). Each image is read as a query is (:mod:`sbirkit.index.files`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.records import DataError
from ..errors import UsageError
from .files import IMAGE_EXTENSIONS, load_photo, load_query_sketch
from .query import images_to_tensor

log = logging.getLogger(__name__)


def list_image_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension, case-insensitive), sorted by relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(
            f"{root}: expected a folder of images, found {'a file' if root.exists() else 'nothing'}"
        )
    found = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            found.extend(
                Path(dirpath) / n for n in filenames if Path(n).suffix.lower() in IMAGE_EXTENSIONS
            )
    else:
        found = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def image_items(
    paths: Sequence[Path], root: str | os.PathLike, class_from_folder: bool | None = None
) -> list[dict]:
    """Item dicts for a gallery: ``id`` (path relative to ``root``), ``path`` and ``class_name``.

    ``class_name`` is the parent folder's name when the layout is ``root/<class>/<file>``; with
    ``class_from_folder=None`` that is used when every file sits exactly one folder deep.
    """
    root = Path(root)
    rel = [Path(p).relative_to(root) for p in paths]
    if class_from_folder is None:
        class_from_folder = bool(rel) and all(len(r.parts) == 2 for r in rel)
    items = []
    for p, r in zip(paths, rel):
        item = {"id": r.as_posix(), "path": str(Path(p).resolve())}
        if class_from_folder:
            if len(r.parts) < 2:
                raise DataError(
                    f"{p}: class_name: expected the file inside a class folder of {root}"
                )
            item["class_name"] = r.parts[-2]
        items.append(item)
    return items


def _load_photo(path: Path, size: int) -> np.ndarray:
    return load_photo(path, size)


def embed_image_files(
    encode: Callable,
    paths: Sequence[str | os.PathLike],
    image_size: int,
    batch_size: int = 64,
    progress: bool = True,
    device: str | None = None,
    normalize: bool = True,
    modality: str = "photo",
) -> tuple[np.ndarray, list[Path], list[tuple[Path, str]]]:
    """Embed image files with ``encode`` ((B, 3, H, W) float in [0, 1] -> (B, d)).

    ``modality="photo"``: each image is resized to ``image_size`` square (as the datasets do).
    ``modality="sketch"``: each file (PNG/JPG, SVG, ndjson) is read exactly as
    :func:`load_query_sketch` reads a search query (same padding, line-keeping shrink, ink
    check), so a sketch embedded here and the same file searched with give the same vector.
    Unreadable files (and, for sketches, blank ones) are skipped and returned as
    ``(path, reason)`` failures, with their count logged; rows of the returned float32
    embeddings (L2-normalised unless ``normalize=False``) match ``ok_paths``.
    """
    import torch
    from tqdm.auto import tqdm

    if modality not in ("photo", "sketch"):
        raise UsageError(f"modality: expected 'photo' or 'sketch', got {modality!r}")
    if modality == "sketch":
        def load(p: Path, size: int) -> np.ndarray:
            return np.asarray(load_query_sketch(p, size=size), dtype=np.uint8)
    else:
        load = _load_photo
    paths = [Path(p) for p in paths]
    chunks: list[np.ndarray] = []
    ok: list[Path] = []
    failures: list[tuple[Path, str]] = []
    batch: list[np.ndarray] = []
    batch_paths: list[Path] = []

    def flush() -> None:
        x = images_to_tensor(batch)  # as a query is (index/query.py)
        if device is not None:
            x = x.to(device)
        with torch.inference_mode():
            z = encode(x)
        z = z.detach().float().cpu()
        if z.ndim != 2 or len(z) != len(batch):
            raise DataError(
                f"encode: output: expected a ({len(batch)}, d) tensor, got shape {tuple(z.shape)}"
            )
        if normalize:
            z = torch.nn.functional.normalize(z, dim=1)
        chunks.append(z.numpy().astype(np.float32, copy=False))
        ok.extend(batch_paths)
        batch.clear()
        batch_paths.clear()

    with tqdm(total=len(paths), desc="embedding images", unit="img", disable=not progress) as bar:
        for p in paths:
            try:
                batch.append(load(p, image_size))
                batch_paths.append(p)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                failures.append((p, f"{type(exc).__name__}: {exc}"))
                bar.set_postfix(skipped=len(failures))
            if len(batch) >= batch_size:
                flush()
            bar.update(1)
        if batch:
            flush()
    if failures:
        log.warning(
            "skipped %d of %d image files (unreadable); first: %s: %s",
            len(failures),
            len(paths),
            failures[0][0],
            failures[0][1],
        )
    emb = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    return emb, ok, failures
