"""'sbirkit index build | info | add | remove': persistent search indexes."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import _fail, _Group, app
from .embed import _embed_folder, _run_encoder

index_app = typer.Typer(help="Build and inspect persistent search indexes.", no_args_is_help=True, cls=_Group)
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build(
    run: Optional[Path] = typer.Argument(None, help="Run folder of the model to embed with (with "
                                         "--from-embeddings: optional, checked against the shards' model)."),
    folder: Optional[Path] = typer.Argument(None, help="Photo collection (searched recursively; ROOT/<class>/* "
                                            "gives labels). Not with --from-embeddings."),
    out: Path = typer.Option(..., "--out", help="Index folder to write: new, or an index folder (a new version "
                             "replaces the old one; searches running meanwhile see one or the other)."),
    factory: Optional[str] = typer.Option(None, help="FAISS index factory: Flat (exact, the default), IVF256,Flat, "
                                          "HNSW32 ... (an IVF with more lists than photos is shrunk; the one used "
                                          "is printed)."),
    from_embeddings: Optional[Path] = typer.Option(None, "--from-embeddings", help="Build from a shard folder "
                                                   "('embed --shard') or an .npz ('embed --out x.npz') instead of "
                                                   "embedding photos; vectors are read one shard at a time."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Choose the index for this memory budget "
                                             "(e.g. 4GB = 4e9 bytes, 4GiB = 4G = 2^30 bytes): Flat, HNSW, IVF-Flat, "
                                             "IVF-PQ or OPQ+IVF-PQ; recorded with its measured recall (docs/scale.md)."),
    target_recall: Optional[float] = typer.Option(None, "--target-recall", help="Tune nprobe/efSearch until "
                                                  "recall@10 against exact search reaches this on held-out "
                                                  "gallery vectors (default 0.95 with --max-memory)."),
    mmap: Optional[bool] = typer.Option(None, "--mmap/--no-mmap", help="Whether search and serve memory-map the "
                                        "index instead of reading it (default: on with --max-memory or "
                                        "--from-embeddings)."),
    which: str = typer.Option("best", help="Checkpoint: best or last."),
    batch_size: int = typer.Option(64, help="Images per batch."),
) -> None:
    """Embed a photo collection with a trained model (or read shards) and save a FAISS index with its metadata.

    --out, the folder, the flags and the factory are checked before anything is embedded.
    """
    import warnings

    from ..index import GalleryIndex
    from ..index.autotune import check_target_recall, parse_memory
    from ..index.gallery import check_factory

    if factory is not None and max_memory is not None:
        _fail("--factory, --max-memory: expected one of them (--max-memory chooses the factory)")
    budget = parse_memory(max_memory) if max_memory is not None else None
    check_target_recall(target_recall)
    GalleryIndex.check_target(out)
    large = from_embeddings is not None or budget is not None or target_recall is not None
    if from_embeddings is not None:
        if folder is not None:
            _fail(f"FOLDER {folder}: --from-embeddings builds from the embeddings; give no photo folder")
        _index_from_embeddings(from_embeddings, run, out, factory, budget, target_recall, mmap, which)
        return
    if run is None or folder is None:
        _fail("RUN FOLDER: expected a run folder and a photo folder (or --from-embeddings DIR)")
    factory_used = factory or "Flat"
    emb, items, info, skipped = _embed_folder(
        run, folder, which, batch_size,
        before_embedding=lambda info: factory is None or check_factory(factory, info["embed_dim"]))
    if large:
        from ..index.autotune import ArraySource

        index = _build_large(ArraySource(emb, items, info), factory, budget, target_recall,
                             mmap if mmap is not None else budget is not None, {"kind": "folder", "path": str(folder)})
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"factory .*: nlist")  # said below, in words
            index = GalleryIndex.build(emb, items, info, factory=factory_used)
        if mmap:
            index.build_info = {"mmap": True}
    saved = index.save(out)
    typer.echo(f"indexed {len(items)} photos ({skipped} unreadable, skipped) with {index.factory} -> {saved}")
    if factory is not None and index.factory != factory:
        typer.echo(f"factory: asked for {factory}, used {index.factory}: {index.factory_note}")


def _build_large(source, factory, budget, target_recall, mmap: bool, source_info: dict):
    """``index build`` through :func:`sbirkit.index.autotune.build_index` (shards, budgets, recall)."""
    import warnings

    from ..index.autotune import build_index

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"factory .*: nlist")
        return build_index(source, factory=factory, max_memory=budget, target_recall=target_recall, mmap=mmap,
                           echo=lambda line: typer.echo(line, err=True), source_info=source_info)


def _index_from_embeddings(path: Path, run: Optional[Path], out: Path, factory, budget, target_recall, mmap,
                           which: str) -> None:
    from ..index import check_model
    from ..index.autotune import open_source
    from ..index.gallery import check_factory

    source = open_source(path)
    if factory is not None:
        check_factory(factory, source.dim)
    info = source.model_info
    if run is not None:  # the model named on the command line must be the one that embedded the shards
        _, _, run_info = _run_encoder(run, which)
        check_model(info, run_info, where=str(path))
    if getattr(source, "header", {}).get("modality") == "sketch":
        source.model_info["modality"] = "sketch"
    kind = "shards" if hasattr(source, "shards") else "npz"
    index = _build_large(source, factory, budget, target_recall, True if mmap is None else mmap,
                         {"kind": kind, "path": str(path.resolve()),
                          **({"shards": len(source.shards)} if kind == "shards" else {})})
    saved = index.save(out)
    typer.echo(f"indexed {len(index)} vectors from {path} ({source.skipped} unreadable when embedded) with "
               f"{index.factory} -> {saved}")
    if factory is not None and index.factory != factory:
        typer.echo(f"factory: asked for {factory}, used {index.factory}: {index.factory_note}")


@index_app.command("info")
def index_info(
    index_dir: Path = typer.Argument(..., help="Index folder from 'sbirkit index build'."),
    as_json: bool = typer.Option(False, "--json/--no-json", help="Print meta.json (plus path, version, file "
                                 "sizes) as JSON instead."),
    verify: bool = typer.Option(False, "--verify", help="Also check the full SHA-256 of every file (reads the "
                                "whole index once; memory-mapped loads check only sizes and the file's ends)."),
) -> None:
    """Describe an index without loading its vectors: size, model, factory, metric, dim, nprobe, created."""
    import json

    from ..index.info import describe_index, format_index_info

    meta = describe_index(index_dir, verify=verify)
    if as_json:
        typer.echo(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return
    typer.echo(format_index_info(meta))


@index_app.command("add")
def index_add(
    folder: Path = typer.Argument(..., help="Photos to add (searched recursively; ROOT/<class>/* gives labels)."),
    index_dir: Path = typer.Option(..., "--index", help="Index folder from 'sbirkit index build'."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: the one the index was built with)."),
    id_prefix: str = typer.Option("", "--id-prefix", help="Put before each new id (ids are paths relative to "
                                  "FOLDER, and must not be in the index already), e.g. 'batch2/'."),
    batch_size: int = typer.Option(64, help="Images per batch."),
) -> None:
    """Add photos to an existing index, embedded by the model that built it (checked as 'search' checks).

    Atomic: the index gets a new version only when every step worked; a failure leaves the old one
    live and unchanged. Ids already in the index are refused before anything is embedded.
    """
    from ..index import GalleryIndex, check_model, image_items, list_image_files

    index = GalleryIndex.load(index_dir)
    built_with = index.model_info
    run_dir = Path(run) if run else Path(built_with.get("run", ""))
    paths = list_image_files(folder)
    if not paths:
        _fail(f"{folder}: expected image files, found none")
    have = {str(it["id"] if "id" in it else it["path"]) for it in index.items}
    clash = next((i["id"] for i in image_items(paths, folder) if id_prefix + i["id"] in have), None)
    if clash is not None:
        _fail(f"{folder}: id {id_prefix + clash!r} is already in {index_dir}; pick another --id-prefix")
    del index, have

    def check(info: dict) -> None:
        check_model(built_with, info, where=str(index_dir))
        if info["embed_dim"] != int(built_with.get("embed_dim", info["embed_dim"])):
            _fail(f"{index_dir}: embedding size {built_with['embed_dim']}, but the model {run_dir} embeds to "
                  f"{info['embed_dim']}")

    emb, items, info, skipped = _embed_folder(run_dir, folder, built_with.get("which", "best"), batch_size,
                                              before_embedding=check)
    items = [{**item, "id": id_prefix + item["id"]} for item in items]
    updated, _ = GalleryIndex.update(index_dir, lambda idx: idx.add(emb, items), expect_model=info)
    typer.echo(f"added {len(items)} photos ({skipped} unreadable, skipped) to {index_dir}: {len(updated)} items "
               f"now ({updated.factory})")


@index_app.command("remove")
def index_remove(
    ids: Optional[List[str]] = typer.Argument(None, help="Ids of the items to remove (as 'search --json' and the "
                                              "HTTP API show them)."),
    index_dir: Path = typer.Option(..., "--index", help="Index folder from 'sbirkit index build'."),
    ids_from: Optional[Path] = typer.Option(None, "--ids-from", help="A file with more ids, one per line."),
) -> None:
    """Remove items from an index by id. All or nothing: an id the index does not hold is an error and
    nothing changes; the rows left keep their vectors as they are (no model is needed)."""
    from ..index import GalleryIndex

    wanted = list(ids or [])
    if ids_from is not None:
        if not ids_from.is_file():
            _fail(f"--ids-from {ids_from}: expected a file of ids, one per line, found nothing there")
        wanted += [line.strip() for line in ids_from.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        _fail("ID: expected at least one id to remove (or --ids-from FILE)")
    updated, n = GalleryIndex.update(index_dir, lambda idx: idx.remove(wanted))
    typer.echo(f"removed {n} items from {index_dir}: {len(updated)} left")
