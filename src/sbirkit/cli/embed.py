"""'sbirkit embed': a folder of images to an .npz file, or to embedding shards (docs/scale.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import _fail, _one_of, _positive, app


def _run_encoder(run: Path, which: str):
    """(encoder, image_size, model_info) for a trained run (:mod:`sbirkit.index.run_model`)."""
    from ..index.run_model import load_run_encoder

    return load_run_encoder(run, which)


def _embed_folder(run: Path, folder: Path, which: str, batch_size: int, modality: str = "photo",
                  before_embedding=None):
    """Embed every image under ``folder`` with a run's model: (embeddings, items, info, skipped count).

    Flags and the folder are checked before the model is loaded, and ``before_embedding(info)``
    (more checks that need the model, e.g. the index factory) runs before any image is embedded.
    Unreadable images are reported on stderr and skipped; a folder with none readable fails.
    """
    import torch

    from ..index import embed_image_files, image_items, list_image_files

    _one_of("--modality", modality, ("photo", "sketch"))
    _one_of("--which", which, ("best", "last"))
    _positive("--batch-size", batch_size)
    paths = list_image_files(folder)
    if not paths:
        _fail(f"{folder}: expected image files, found none")
    encoder, size, info = _run_encoder(run, which)
    if before_embedding is not None:
        before_embedding(info)
    fn = encoder.encode_photo if modality == "photo" else encoder.encode_sketch
    with torch.no_grad():
        emb, ok, failures = embed_image_files(fn, paths, size, batch_size=batch_size, modality=modality)
    for path, reason in failures:
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    if not ok:
        _fail(f"{folder}: none of the {len(paths)} images could be read")
    return emb, image_items(ok, folder), info, len(failures)


def _npz_path(out: Path) -> Path:
    """The file ``numpy.savez`` really writes for ``out``: '.npz' is appended unless it ends so."""
    return out if out.suffix == ".npz" else out.with_name(out.name + ".npz")


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
    import json

    import numpy as np

    from ..index.shards import parse_shard_spec, worker_from_env

    env_worker = worker_from_env()
    if shard is not None or shards is not None or (env_worker is not None and env_worker[1] > 1):
        worker, workers = parse_shard_spec(shard) if shard is not None else (env_worker or (0, 1))
        if shards is not None:
            _positive("--shards", shards)
        _embed_shards(run, folder, out, modality, which, batch_size, worker, workers,
                      shards if shards is not None else workers, from_env=shard is None and env_worker is not None)
        return
    target = _npz_path(out)
    if target.is_dir():
        _fail(f"--out {target}: expected a file name, found a folder")
    emb, items, info, skipped = _embed_folder(run, folder, which, batch_size, modality)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, embeddings=emb, ids=np.array([i["id"] for i in items]),
             paths=np.array([i["path"] for i in items]),
             labels=np.array([i.get("class_name", "") for i in items]), model=json.dumps(info, sort_keys=True))
    typer.echo(f"embedded {len(items)} images ({skipped} skipped) -> {target}")


def _embed_shards(run: Path, folder: Path, out: Path, modality: str, which: str, batch_size: int,
                  worker: int, workers: int, num_shards: int, from_env: bool) -> None:
    """``embed`` in shard mode: flags, --out and the folder are checked before the model loads."""
    import torch

    from ..index.shards import Manifest, check_out_folder, embed_shards

    _one_of("--modality", modality, ("photo", "sketch"))
    _one_of("--which", which, ("best", "last"))
    _positive("--batch-size", batch_size)
    if workers > num_shards:
        _fail(f"--shards: expected at least as many shards as workers ({workers}), got {num_shards}")
    check_out_folder(out)
    manifest = Manifest.of_folder(folder)

    def load_model():
        encoder, size, info = _run_encoder(run, which)
        fn = encoder.encode_photo if modality == "photo" else encoder.encode_sketch
        return fn, size, info

    who = f"worker {worker}/{workers}" + (" (torchrun RANK/WORLD_SIZE)" if from_env else "")
    typer.echo(f"{who}: {len(manifest)} files in {folder}, {num_shards} shards -> {out}", err=True)
    with torch.no_grad():
        report = embed_shards(out, manifest, worker, workers, num_shards, load_model, batch_size=batch_size,
                              modality=modality, echo=lambda line: typer.echo(line, err=True))
    typer.echo(f"{who}: embedded {report.rows} images in {len(report.embedded)} shards ({report.skipped} "
               f"unreadable, skipped); {len(report.finished_before)} shards finished earlier"
               + (f"; {len(report.busy)} being written by another worker" if report.busy else "") + f" -> {out}")
