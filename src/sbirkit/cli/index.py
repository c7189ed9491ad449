"""'sbirkit index build | info | add | remove': persistent search indexes."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import _fail, _Group, app
from .embed import _skipped

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
    from ..index.building import build_index_for

    built = build_index_for(out, run=run, folder=folder, from_embeddings=from_embeddings, factory=factory,
                            max_memory=max_memory, target_recall=target_recall, mmap=mmap, which=which,
                            batch_size=batch_size, echo=lambda line: typer.echo(line, err=True), on_skip=_skipped)
    if from_embeddings is not None:
        typer.echo(f"indexed {len(built.index)} vectors from {from_embeddings} ({built.skipped} unreadable when "
                   f"embedded) with {built.index.factory} -> {built.saved}")
    else:
        typer.echo(f"indexed {len(built.index)} photos ({built.skipped} unreadable, skipped) with "
                   f"{built.index.factory} -> {built.saved}")
    note = built.factory_changed(factory)
    if note is not None:
        typer.echo(note)


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
    from ..index.building import add_folder_to_index

    done = add_folder_to_index(folder, index_dir, run=run, id_prefix=id_prefix, batch_size=batch_size,
                               on_skip=_skipped)
    typer.echo(f"added {done.added} photos ({done.skipped} unreadable, skipped) to {index_dir}: {len(done.index)} "
               f"items now ({done.index.factory})")


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
