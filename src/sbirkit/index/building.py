"""Building an index and adding to one: what ``sbirkit index build`` and ``index add`` do, as
library calls (the command parses its options, calls these and prints).

* :func:`build_index_from_folder`: a photo folder embedded with a run, then a
  :class:`~sbirkit.index.gallery.GalleryIndex` (``Flat`` or a given factory), or through
  :func:`~sbirkit.index.autotune.build_index` with a memory budget or a recall target;
* :func:`build_index_from_embeddings`: from a shard folder or an ``.npz`` (``sbirkit embed``),
  read one shard at a time, the model checked against a run when one is given;
* :func:`add_folder_to_index`: photos added to an existing index by the model that built it.

Every check that needs no model (the flags, ``--out``, the folder, ids already in the index) runs
before the model loads, and those that need it (the factory's dimension, the model the index was
built with) before the first image is embedded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .gallery import GalleryIndex
from .run_model import check_model, load_run_encoder

#: FAISS's nlist warning is said in words by the caller (``factory_note``), not as a warning
_NLIST_WARNING = r"factory .*: nlist"


@dataclass
class Built:
    """An index built (or updated) and saved: ``saved`` is the version folder written; ``skipped``
    counts the images that could not be read (or, from embeddings, were not when embedded)."""

    index: GalleryIndex
    saved: Path
    skipped: int

    def factory_changed(self, asked: str | None) -> str | None:
        """Why the factory used is not the one asked for (an IVF shrunk to the data), or None."""
        if asked is not None and self.index.factory != asked:
            return f"factory: asked for {asked}, used {self.index.factory}: {self.index.factory_note}"
        return None


def check_build_options(out: str | os.PathLike, factory: str | None = None, max_memory: str | None = None,
                        target_recall: float | None = None) -> int | None:
    """The checks ``index build`` makes before anything is read: one of ``--factory`` and
    ``--max-memory``, the budget, the recall target and ``--out``; returns the budget in bytes."""
    from .autotune import check_target_recall
    from .sizes import parse_memory

    if factory is not None and max_memory is not None:
        raise UsageError("--factory, --max-memory: expected one of them (--max-memory chooses the factory)")
    budget = parse_memory(max_memory) if max_memory is not None else None
    check_target_recall(target_recall)
    GalleryIndex.check_target(out)
    return budget


def _build_large(source, factory: str | None, budget: int | None, target_recall: float | None, mmap: bool,
                 source_info: dict, echo: Callable[[str], None] | None) -> GalleryIndex:
    """Through :func:`sbirkit.index.autotune.build_index` (shards, budgets, recall)."""
    from .autotune import build_index

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NLIST_WARNING)
        return build_index(source, factory=factory, max_memory=budget, target_recall=target_recall, mmap=mmap,
                           echo=echo, source_info=source_info)


def build_index_from_folder(run: str | os.PathLike, folder: str | os.PathLike, out: str | os.PathLike, *,
                            factory: str | None = None, max_memory: str | None = None,
                            target_recall: float | None = None, mmap: bool | None = None, which: str = "best",
                            batch_size: int = 64, echo: Callable[[str], None] | None = None,
                            on_skip: Callable[[Path, str], None] | None = None) -> Built:
    """Embed the photos under ``folder`` with ``run`` and save an index to ``out`` (a new index
    folder, or a new version of one). ``factory`` None is ``Flat``; ``max_memory`` (e.g. "4GiB")
    or ``target_recall`` go through the bounded-memory builder, which chooses and tunes."""
    budget = check_build_options(out, factory, max_memory, target_recall)
    return _from_folder(run, folder, out, factory, budget, target_recall, mmap, which, batch_size, echo, on_skip)


def _from_folder(run, folder, out, factory, budget, target_recall, mmap, which, batch_size, echo, on_skip) -> Built:
    from .faiss_ops import check_factory
    from .folder_embedding import embed_folder

    found = embed_folder(run, folder, which, batch_size,
                         before_embedding=lambda info: factory is None or check_factory(factory, info["embed_dim"]),
                         on_skip=on_skip)
    if budget is not None or target_recall is not None:
        from .autotune import ArraySource

        index = _build_large(ArraySource(found.embeddings, found.items, found.model_info), factory, budget,
                             target_recall, mmap if mmap is not None else budget is not None,
                             {"kind": "folder", "path": str(folder)}, echo)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NLIST_WARNING)
            index = GalleryIndex.build(found.embeddings, found.items, found.model_info, factory=factory or "Flat")
        if mmap:
            index.build_info = {"mmap": True}
    return Built(index, index.save(out), found.skipped)


def build_index_from_embeddings(path: str | os.PathLike, out: str | os.PathLike, *, run: str | os.PathLike | None = None,
                                factory: str | None = None, max_memory: str | None = None,
                                target_recall: float | None = None, mmap: bool | None = None, which: str = "best",
                                echo: Callable[[str], None] | None = None) -> Built:
    """An index from a shard folder (``embed --shard``) or an ``.npz`` (``embed --out x.npz``),
    read one shard at a time; with ``run``, its model must be the one that embedded them.
    Memory-mapped unless ``mmap=False``."""
    budget = check_build_options(out, factory, max_memory, target_recall)
    return _from_embeddings(path, out, run, factory, budget, target_recall, mmap, which, echo)


def _from_embeddings(path, out, run, factory, budget, target_recall, mmap, which, echo) -> Built:
    from .autotune import open_source
    from .faiss_ops import check_factory

    path = Path(path)
    source = open_source(path)
    if factory is not None:
        check_factory(factory, source.dim)
    info = source.model_info
    if run is not None:  # the model named on the command line must be the one that embedded the shards
        _, _, run_info = load_run_encoder(run, which)
        check_model(info, run_info, where=str(path))
    if getattr(source, "header", {}).get("modality") == "sketch":
        source.model_info["modality"] = "sketch"
    kind = "shards" if hasattr(source, "shards") else "npz"
    index = _build_large(source, factory, budget, target_recall, True if mmap is None else mmap,
                         {"kind": kind, "path": str(path.resolve()),
                          **({"shards": len(source.shards)} if kind == "shards" else {})}, echo)
    return Built(index, index.save(out), source.skipped)


def build_index_for(out: str | os.PathLike, *, run: str | os.PathLike | None = None,
                    folder: str | os.PathLike | None = None, from_embeddings: str | os.PathLike | None = None,
                    factory: str | None = None, max_memory: str | None = None, target_recall: float | None = None,
                    mmap: bool | None = None, which: str = "best", batch_size: int = 64,
                    echo: Callable[[str], None] | None = None,
                    on_skip: Callable[[Path, str], None] | None = None) -> Built:
    """``sbirkit index build``: from ``folder`` embedded by ``run``, or ``from_embeddings`` (then
    ``run`` is optional and checked against them); every check in the command's order."""
    budget = check_build_options(out, factory, max_memory, target_recall)
    if from_embeddings is not None:
        if folder is not None:
            raise UsageError(f"FOLDER {folder}: --from-embeddings builds from the embeddings; give no photo folder")
        return _from_embeddings(from_embeddings, out, run, factory, budget, target_recall, mmap, which, echo)
    if run is None or folder is None:
        raise UsageError("RUN FOLDER: expected a run folder and a photo folder (or --from-embeddings DIR)")
    return _from_folder(run, folder, out, factory, budget, target_recall, mmap, which, batch_size, echo, on_skip)


@dataclass
class Added:
    """Photos added to an index: the index as saved, how many were added and skipped."""

    index: GalleryIndex
    added: int
    skipped: int


def add_folder_to_index(folder: str | os.PathLike, index_dir: str | os.PathLike, *,
                        run: str | os.PathLike | None = None, id_prefix: str = "", batch_size: int = 64,
                        on_skip: Callable[[Path, str], None] | None = None) -> Added:
    """Add the photos under ``folder`` to the index in ``index_dir``, embedded by the model that
    built it (``run``, default the run the index records; checked as a search checks it).

    Atomic: a new version only when every step worked. Ids already in the index (paths relative to
    ``folder``, after ``id_prefix``) are refused before anything is embedded."""
    from .folder_embedding import embed_folder
    from .image_folders import image_items, list_image_files

    index = GalleryIndex.load(index_dir)
    built_with: dict[str, Any] = index.model_info
    run_dir = Path(run) if run else Path(built_with.get("run", ""))
    paths = list_image_files(folder)
    if not paths:
        raise UsageError(f"{folder}: expected image files, found none")
    have = {str(it["id"] if "id" in it else it["path"]) for it in index.items}
    clash = next((i["id"] for i in image_items(paths, folder) if id_prefix + i["id"] in have), None)
    if clash is not None:
        raise UsageError(f"{folder}: id {id_prefix + clash!r} is already in {index_dir}; pick another --id-prefix")
    del index, have

    def check(info: dict) -> None:
        check_model(built_with, info, where=str(index_dir))
        if info["embed_dim"] != int(built_with.get("embed_dim", info["embed_dim"])):
            raise UsageError(f"{index_dir}: embedding size {built_with['embed_dim']}, but the model {run_dir} "
                             f"embeds to {info['embed_dim']}")

    found = embed_folder(run_dir, folder, built_with.get("which", "best"), batch_size, before_embedding=check,
                         on_skip=on_skip)
    items = [{**item, "id": id_prefix + item["id"]} for item in found.items]
    updated, _ = GalleryIndex.update(index_dir, lambda idx: idx.add(found.embeddings, items),
                                     expect_model=found.model_info)
    return Added(updated, len(items), found.skipped)
