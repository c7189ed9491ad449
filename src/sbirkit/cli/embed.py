"""'sbirkit embed': a folder of images to an .npz file, or to embedding shards (docs/scale.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import _positive, app


def _skipped(path, reason: str) -> None:
    """An unreadable image, one yellow line on stderr."""
    typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)


@app.command()
def embed(
    run: Path = typer.Argument(..., help="Run folder of the model to embed with."),
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Output file with embeddings, ids, paths and labels; '.npz' is "
                             "appended unless the name ends in it (x -> x.npz). In shard mode (--shard, --shards "
                             "or under torchrun): a folder of shards (docs/scale.md)."),
    modality: str = typer.Option("photo", help="photo or sketch: which encoder branch to use."),
    which: str = typer.Option("best", help="Checkpoint: best or last."),
    batch_size: int = typer.Option(64, help="Images per batch."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: this is worker i of n (0-based; e.g. "
                                        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); under torchrun the default "
                                        "is RANK/WORLD_SIZE. Each worker embeds its shards of the sorted file list."),
    shards: Optional[int] = typer.Option(None, "--shards", help="How many shards the folder holds (default: the "
                                         "number of workers); worker i embeds shards i, i+n, ... Finished shards "
                                         "are never redone, so more shards lose less work to a killed worker."),
) -> None:
    """Embed a folder of images to disk (.npz: embeddings, ids, paths, labels where the layout gives them),
    or, in shard mode, one worker's shards of it into a folder that 'index build --from-embeddings' reads."""
    from ..index.folder_embedding import embed_folder_to_npz
    from ..index.shards import parse_shard_spec, worker_from_env

    env_worker = worker_from_env()
    if shard is not None or shards is not None or (env_worker is not None and env_worker[1] > 1):
        worker, workers = parse_shard_spec(shard) if shard is not None else (env_worker or (0, 1))
        if shards is not None:
            _positive("--shards", shards)
        _embed_shards(run, folder, out, modality, which, batch_size, worker, workers,
                      shards if shards is not None else workers, from_env=shard is None and env_worker is not None)
        return
    target, found = embed_folder_to_npz(run, folder, out, modality, which, batch_size, on_skip=_skipped)
    typer.echo(f"embedded {len(found.items)} images ({found.skipped} skipped) -> {target}")


def _embed_shards(run: Path, folder: Path, out: Path, modality: str, which: str, batch_size: int,
                  worker: int, workers: int, num_shards: int, from_env: bool) -> None:
    """``embed`` in shard mode (:func:`sbirkit.index.folder_embedding.embed_folder_shards`)."""
    from ..index.folder_embedding import embed_folder_shards

    who = f"worker {worker}/{workers}" + (" (torchrun RANK/WORLD_SIZE)" if from_env else "")

    def started(n_files: int) -> None:
        typer.echo(f"{who}: {n_files} files in {folder}, {num_shards} shards -> {out}", err=True)

    report = embed_folder_shards(run, folder, out, worker, workers, num_shards, modality, which, batch_size,
                                 echo=lambda line: typer.echo(line, err=True), before_start=started)
    typer.echo(f"{who}: embedded {report.rows} images in {len(report.embedded)} shards ({report.skipped} "
               f"unreadable, skipped); {len(report.finished_before)} shards finished earlier"
               + (f"; {len(report.busy)} being written by another worker" if report.busy else "") + f" -> {out}")
