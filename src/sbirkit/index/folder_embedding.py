"""A folder of images embedded with a trained run: what ``sbirkit embed`` does (to an ``.npz``, or
one worker's shards of it) and the first half of ``index build`` / ``index add``, as library calls.

Everything is checked before the model is loaded (the flags, the folder, the output), and the
caller's ``before_embedding(model_info)`` (checks that need the model: an index's factory, the
model an index was built with) runs before the first image is embedded, so a mistake costs no
embedding. Unreadable images are skipped and reported through ``on_skip(path, reason)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from .run_model import load_run_encoder

MODALITIES = ("photo", "sketch")
CHECKPOINTS = ("best", "last")


def check_embed_options(modality: str = "photo", which: str = "best", batch_size: int = 64) -> None:
    """The one-line errors of ``--modality``, ``--which`` and ``--batch-size``."""
    if modality not in MODALITIES:
        raise UsageError(f"--modality: expected one of {', '.join(MODALITIES)}, got {modality!r}")
    if which not in CHECKPOINTS:
        raise UsageError(f"--which: expected one of {', '.join(CHECKPOINTS)}, got {which!r}")
    if batch_size < 1:
        raise UsageError(f"--batch-size: expected a positive integer, got {batch_size}")


@dataclass
class FolderEmbedding:
    """Rows of ``embeddings`` (float32, L2-normalised) match ``items`` (``id``, ``path``, and
    ``class_name`` for a ``ROOT/<class>/<file>`` layout); ``model_info`` is what an index records."""

    embeddings: np.ndarray
    items: list[dict[str, Any]]
    model_info: dict[str, Any]
    skipped: int


def embed_folder(run: str | os.PathLike, folder: str | os.PathLike, which: str = "best", batch_size: int = 64,
                 modality: str = "photo", before_embedding: Callable[[dict], Any] | None = None,
                 on_skip: Callable[[Path, str], None] | None = None) -> FolderEmbedding:
    """Embed every image under ``folder`` (recursive) with ``run``'s ``modality`` branch.

    A folder with no image files, or none readable, is a one-line error."""
    import torch

    from .image_folders import embed_image_files, image_items, list_image_files

    check_embed_options(modality, which, batch_size)
    paths = list_image_files(folder)
    if not paths:
        raise UsageError(f"{folder}: expected image files, found none")
    encoder, size, info = load_run_encoder(run, which)
    if before_embedding is not None:
        before_embedding(info)
    fn = encoder.encode_photo if modality == "photo" else encoder.encode_sketch
    with torch.no_grad():
        emb, ok, failures = embed_image_files(fn, paths, size, batch_size=batch_size, modality=modality)
    for path, reason in failures:
        if on_skip is not None:
            on_skip(path, reason)
    if not ok:
        raise UsageError(f"{folder}: none of the {len(paths)} images could be read")
    return FolderEmbedding(emb, image_items(ok, folder), info, len(failures))


def npz_path(out: str | os.PathLike) -> Path:
    """The file ``numpy.savez`` really writes for ``out``: '.npz' is appended unless it ends so."""
    out = Path(out)
    return out if out.suffix == ".npz" else out.with_name(out.name + ".npz")


def embed_folder_to_npz(run: str | os.PathLike, folder: str | os.PathLike, out: str | os.PathLike,
                        modality: str = "photo", which: str = "best", batch_size: int = 64,
                        on_skip: Callable[[Path, str], None] | None = None) -> tuple[Path, FolderEmbedding]:
    """``sbirkit embed`` without shards: embeddings, ids, paths, labels and the model in one
    ``.npz`` (which ``index build --from-embeddings`` reads); returns the file written."""
    target = npz_path(out)
    if target.is_dir():
        raise UsageError(f"--out {target}: expected a file name, found a folder")
    found = embed_folder(run, folder, which, batch_size, modality, on_skip=on_skip)
    items = found.items
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, embeddings=found.embeddings, ids=np.array([i["id"] for i in items]),
             paths=np.array([i["path"] for i in items]),
             labels=np.array([i.get("class_name", "") for i in items]),
             model=json.dumps(found.model_info, sort_keys=True))
    return target, found


def embed_folder_shards(run: str | os.PathLike, folder: str | os.PathLike, out: str | os.PathLike,
                        worker: int, workers: int, num_shards: int, modality: str = "photo", which: str = "best",
                        batch_size: int = 64, echo: Callable[[str], None] | None = None,
                        before_start: Callable[[int], None] | None = None):
    """``sbirkit embed`` in shard mode: worker ``worker`` of ``workers`` embeds its shards of the
    sorted file list into the shard folder ``out`` (:func:`~sbirkit.index.shards.embed_shards`).
    The flags, ``out`` and the folder are checked before the model loads; ``before_start(n_files)``
    hears how many files the folder holds. Returns the :class:`~sbirkit.index.shards.ShardReport`."""
    import torch

    from .shards import Manifest, check_out_folder, embed_shards

    check_embed_options(modality, which, batch_size)
    if workers > num_shards:
        raise UsageError(f"--shards: expected at least as many shards as workers ({workers}), got {num_shards}")
    check_out_folder(out)
    manifest = Manifest.of_folder(folder)

    def load_model():
        encoder, size, info = load_run_encoder(run, which)
        fn = encoder.encode_photo if modality == "photo" else encoder.encode_sketch
        return fn, size, info

    if before_start is not None:
        before_start(len(manifest))
    with torch.no_grad():
        return embed_shards(Path(out), manifest, worker, workers, num_shards, load_model, batch_size=batch_size,
                            modality=modality, echo=echo)
