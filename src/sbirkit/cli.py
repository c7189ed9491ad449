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
    """``key=value`` pairs with YAML-typed values (``max_per_class=20`` -> int)."""
    import yaml

    out = {}
    for item in options or []:
        if "=" not in item:
            _fail(f"option {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
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


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where the report and run go."),
    quick: bool = typer.Option(False, help="A much shorter run, for smoke tests."),
) -> None:
    """The end-to-end demo on the built-in synthetic data (no files, no network)."""
    from .demo import run_demo

    run_demo(out, quick=quick)


def main() -> None:  # console-script entry point
    app()


__all__ = ["app", "main", "Registry"]
