"""The ``sbirkit`` command line: parse arguments, then call the library. No logic lives here."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .registry import Registry


def _names(kind: str) -> list[str]:
    """Registered names for the help text; an import problem shows up as '(unavailable)'."""
    try:
        if kind == "datasets":
            from .data import list_datasets

            return list_datasets()
        if kind == "backbones":
            from .models import list_backbones

            return list_backbones()
        if kind == "methods":
            from .methods import list_methods

            return list_methods()
        if kind == "presets":
            from .engine.config import list_presets

            return list_presets()
        if kind == "splits":
            from .data.splits import list_manifests

            return list_manifests()
    except Exception as exc:  # pragma: no cover - only when a module is broken
        return [f"(unavailable: {exc})"]
    raise KeyError(kind)


def _help() -> str:
    backbones = [b for b in _names("backbones") if "/" not in b] + ["timm/<name>", "tv/<name>"]
    return (
        "sbirkit: sketch-based image retrieval. Train, evaluate, index and search.\n\n"
        f"Datasets: {', '.join(_names('datasets'))}\n\n"
        f"Backbones: {', '.join(backbones)}\n\n"
        "Run 'sbirkit list' for methods, presets and zero-shot split manifests."
    )


app = typer.Typer(help=_help(), no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Generate, inspect and validate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _parse_options(options: list[str] | None) -> dict:
    """``key=value`` pairs with YAML-typed values (``max_per_class=20`` -> int, ``1e-3`` -> float)."""
    from .engine.config import load_yaml

    out = {}
    for item in options or []:
        if "=" not in item:
            _fail(f"option {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = load_yaml(value)
    return out


@app.command("list")
def list_cmd() -> None:
    """List registered datasets, backbones, methods, presets and split manifests."""
    for kind in ("datasets", "backbones", "methods", "presets", "splits"):
        typer.echo(f"{kind}: {', '.join(_names(kind))}")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write (generic folder layout)."),
    num_classes: int = typer.Option(20, help="Number of object classes."),
    photos_per_class: int = typer.Option(30, help="Photos (instances) per class."),
    sketches_per_photo: int = typer.Option(1, help="Sketches drawn of each photo."),
    image_size: int = typer.Option(64, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Generator seed."),
) -> None:
    """Write the built-in synthetic dataset to OUT as photo/<class>, sketch/<class> and metadata.csv."""
    from .data import create_dataset
    from .data.synthetic import write_folder_layout

    ds = create_dataset("synthetic", num_classes=num_classes, photos_per_class=photos_per_class,
                        sketches_per_photo=sketches_per_photo, image_size=image_size, seed=seed)
    counts = write_folder_layout(ds, out, progress=True)
    typer.echo(f"wrote {out}: {counts}")


@data_app.command("info")
def data_info(
    path: Optional[Path] = typer.Argument(None, help="Dataset root (omit for --format synthetic)."),
    format: str = typer.Option("folder", "--format", "-f", help="Dataset format; see 'sbirkit list'."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-o", help="Loader option key=value (repeatable)."),
    validate: bool = typer.Option(False, help="Decode every sample and report the ones that fail."),
    per_class: bool = typer.Option(True, help="Print the per-class table."),
) -> None:
    """Validate a dataset and print counts per class, modality, split and user."""
    from .data import DataError, create_dataset
    from .data.report import format_summary

    try:
        ds = create_dataset(format, str(path) if path is not None else None, **_parse_options(option))
    except (DataError, KeyError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc).strip("'\""))
    report = ds.validate(progress=True) if validate else None
    typer.echo(format_summary(ds.summary(), report, per_class=per_class))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    preset: str = typer.Argument(..., help="A preset name (see 'sbirkit list'; shipped in src/sbirkit/configs/) or a YAML path."),
    run_dir: Optional[Path] = typer.Option(None, help="Run folder (default runs/<preset>); resumes if it has last.pt."),
) -> None:
    """Train a model from a preset; key=value arguments override any config key (train.steps=200)."""
    from .engine import ConfigError, apply_overrides, load_preset
    from .engine import train as train_run

    try:
        config = apply_overrides(load_preset(preset), list(ctx.args))
    except (ConfigError, KeyError, FileNotFoundError) as exc:
        _fail(str(exc).strip("'\""))
    out = train_run(config, run_dir)
    typer.echo(f"run: {out}")


@app.command("eval")
def eval_cmd(
    run: Path = typer.Argument(..., help="A run folder written by 'sbirkit train'."),
    split: str = typer.Option("test", help="Split to evaluate (queries and gallery)."),
    direction: Optional[List[str]] = typer.Option(None, "--direction", "-d",
                                                  help="sketch2photo, photo2sketch, sketch2sketch, photo2photo (repeatable; default all four)."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="Override the run's data section: key=value (root=/path, name=folder)."),
    which: str = typer.Option("best", help="Checkpoint: best (selected on val) or last."),
    gzsl: bool = typer.Option(False, "--gzsl", help="Zero-shot runs: generalised zero-shot, the gallery also holds "
                              "the seen-class items of the split."),
) -> None:
    """Evaluate a run: mAP@all, P@100, P@200 (and Acc@K where instances are paired), per direction."""
    from .engine import evaluate_run
    from .eval import DIRECTIONS

    overrides = _parse_options(data)
    if "options" in overrides and not isinstance(overrides["options"], dict):
        _fail("--data options=...: expected a mapping, e.g. options={category: shoes}")
    report = evaluate_run(run, split=split, directions=direction or list(DIRECTIONS), data_overrides=overrides,
                          which=which, progress=True, gzsl=gzsl)
    typer.echo(_format_eval(report))
    typer.echo(f"saved: {run / 'eval.json'}")


def _format_eval(report: dict) -> str:
    """The protocol (dataset, split, gallery, checkpoint) above the metrics table."""
    from .eval import RetrievalResult, format_table

    p, c = report["protocol"], report["checkpoint"]
    head = [
        f"dataset: {p['dataset']}" + (f" ({p['root']})" if p.get("root") else "") + f"  split: {p['split']}",
        f"queries/gallery: {p['gallery']}",
        f"checkpoint: {c['which']} (step {c['step']}, fingerprint {str(c['fingerprint'])[:12]})",
        "",
    ]
    results = {d: RetrievalResult(**r) for d, r in report["results"].items()}
    return "\n".join(head) + format_table(results)


def _run_encoder(run: Path, which: str):
    """(encode_fn(images, modality), image_size, model_info) for a trained run."""
    from .engine import load_run, model_fingerprint

    method, config = load_run(run, which)
    encoder = method.encoder.eval()
    size = int((config["data"].get("options") or {}).get("image_size", 64))
    info = {"run": str(run.resolve()), "fingerprint": model_fingerprint(run, which), "which": which,
            "backbone": config["model"]["backbone"], "embed_dim": int(encoder.embed_dim), "image_size": size}
    return encoder, size, info


def _embed_folder(run: Path, folder: Path, which: str, batch_size: int, modality: str = "photo"):
    """Embed every image under ``folder`` with a run's model: (embeddings, items, info, skipped count).

    Unreadable images are reported on stderr and skipped; a folder with none readable fails.
    """
    import torch

    from .index import embed_image_files, image_items, list_image_files

    if modality not in ("photo", "sketch"):
        _fail(f"--modality: expected photo or sketch, got {modality!r}")
    encoder, size, info = _run_encoder(run, which)
    paths = list_image_files(folder)
    if not paths:
        _fail(f"{folder}: expected image files, found none")
    fn = encoder.encode_photo if modality == "photo" else encoder.encode_sketch
    with torch.no_grad():
        emb, ok, failures = embed_image_files(fn, paths, size, batch_size=batch_size)
    for path, reason in failures:
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    if not ok:
        _fail(f"{folder}: none of the {len(paths)} images could be read")
    return emb, image_items(ok, folder), info, len(failures)


@app.command()
def embed(
    run: Path = typer.Argument(..., help="Run folder of the model to embed with."),
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Output .npz with embeddings, ids and labels."),
    modality: str = typer.Option("photo", help="photo or sketch: which encoder branch to use."),
    which: str = typer.Option("best", help="Checkpoint: best or last."),
    batch_size: int = typer.Option(64, help="Images per batch."),
) -> None:
    """Embed a folder of images to disk (.npz: embeddings, ids, paths, labels where the layout gives them)."""
    import json

    import numpy as np

    emb, items, info, skipped = _embed_folder(run, folder, which, batch_size, modality)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, embeddings=emb, ids=np.array([i["id"] for i in items]), paths=np.array([i["path"] for i in items]),
             labels=np.array([i.get("class_name", "") for i in items]), model=json.dumps(info, sort_keys=True))
    typer.echo(f"embedded {len(items)} images ({skipped} skipped) -> {out}")


index_app = typer.Typer(help="Build and inspect persistent search indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build(
    run: Path = typer.Argument(..., help="Run folder of the model to embed with."),
    folder: Path = typer.Argument(..., help="Photo collection (searched recursively; ROOT/<class>/* gives labels)."),
    out: Path = typer.Option(..., "--out", help="Index folder to write."),
    factory: str = typer.Option("Flat", help="FAISS index factory: Flat (exact), IVF256,Flat, HNSW32 ..."),
    which: str = typer.Option("best", help="Checkpoint: best or last."),
    batch_size: int = typer.Option(64, help="Images per batch."),
) -> None:
    """Embed a photo collection with a trained model and save a FAISS index with its metadata."""
    from .index import GalleryIndex

    emb, items, info, skipped = _embed_folder(run, folder, which, batch_size)
    saved = GalleryIndex.build(emb, items, info, factory=factory).save(out)
    typer.echo(f"indexed {len(items)} photos ({skipped} unreadable, skipped) with {factory} -> {saved}")


@app.command()
def search(
    index_dir: Path = typer.Option(..., "--index", help="Index folder from 'sbirkit index build'."),
    sketch: Path = typer.Option(..., "--sketch", help="Query sketch: PNG/JPG, SVG or Quick, Draw! .ndjson."),
    k: int = typer.Option(10, "-k", help="How many results."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: the one the index was built with)."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Write a PNG of the query beside its top results."),
    nprobe: Optional[int] = typer.Option(None, help="IVF lists to scan (approximate indexes)."),
) -> None:
    """Search an index with a sketch; print ranked paths and scores."""
    import numpy as np
    import torch

    from .data import DataError
    from .engine import CheckpointError
    from .index import GalleryIndex, check_model, draw_grid, load_query_sketch

    try:
        index = GalleryIndex.load(index_dir)
        built_with = index.model_info
        run_dir = Path(run) if run else Path(built_with.get("run", ""))
        encoder, size, info = _run_encoder(run_dir, built_with.get("which", "best"))
        check_model(built_with, info, where=str(index_dir))
        if info["embed_dim"] != index.dim:
            _fail(f"{index_dir}: embedding size {index.dim}, but the model {run_dir} embeds to {info['embed_dim']}")
        image = load_query_sketch(sketch, size=size)
    except (DataError, CheckpointError) as exc:
        _fail(str(exc))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        q = encoder.encode_sketch(x).numpy()
    result = index.search(q, k=k, nprobe=nprobe)
    rows = result.items_for(0)
    for rank, item in enumerate(rows, 1):
        typer.echo(f"{rank:>3}  {item['score']:.4f}  {item.get('path', item.get('id'))}")
    if grid is not None:
        draw_grid(image, [(item.get("path"), f"{item['score']:.2f}", None) for item in rows], grid)
        typer.echo(f"grid: {grid}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where the report and run go."),
    quick: bool = typer.Option(False, help="A much shorter run, for smoke tests."),
    fresh: bool = typer.Option(False, help="Delete OUT first instead of reusing a finished run."),
) -> None:
    """The end-to-end demo on the built-in synthetic data (no files, no network)."""
    from .demo import run_demo

    run_demo(out, quick=quick, fresh=fresh)


def main() -> None:  # console-script entry point
    app()


__all__ = ["app", "main", "Registry"]
