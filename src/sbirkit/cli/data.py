"""'sbirkit list' and 'sbirkit data ...': registered names, synthetic data, a dataset's summary."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import _fail, _Group, _names, _parse_options, _positive, app

data_app = typer.Typer(help="Generate, inspect and validate datasets.", no_args_is_help=True, cls=_Group)
app.add_typer(data_app, name="data")


@app.command("list")
def list_cmd() -> None:
    """List registered datasets, backbones (and the timm/<name>, tv/<name> forms), methods, presets, splits."""
    for kind in ("datasets", "backbones", "methods", "presets", "splits"):
        names = _names(kind)
        if kind == "backbones":
            names = [n for n in names if "/" not in n] + ["timm/<name>", "tv/<name>"]
        typer.echo(f"{kind}: {', '.join(names)}")
        if kind == "backbones":
            typer.echo("  timm/<name>: any model in timm.list_models(), e.g. timm/resnet18 "
                       "(built without downloading weights)")
            typer.echo(f"  tv/<name>: torchvision, e.g. tv/resnet18; {', '.join(_torchvision_names())}")


def _torchvision_names() -> list[str]:
    try:
        from ..models.torchvision_backbones import supported_torchvision_models

        return list(supported_torchvision_models())
    except Exception as exc:  # pragma: no cover - only when torchvision is broken
        return [f"(unavailable: {exc})"]


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write (generic folder layout); must be new or empty "
                             "unless --overwrite."),
    num_classes: int = typer.Option(20, help="Number of object classes."),
    photos_per_class: int = typer.Option(30, help="Photos (instances) per class."),
    sketches_per_photo: int = typer.Option(1, help="Sketches drawn of each photo."),
    image_size: int = typer.Option(64, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Generator seed."),
    overwrite: bool = typer.Option(False, "--overwrite/--no-overwrite",
                                   help="Write into a non-empty OUT: first delete what an export writes there "
                                   "(photo/, sketch/, metadata.csv), keeping any other file."),
) -> None:
    """Write the built-in synthetic dataset to OUT as photo/<class>, sketch/<class> and metadata.csv.

    OUT must be new or empty: writing over an earlier export would mix its files with the new ones
    and give the old samples no split. --overwrite replaces an earlier export.
    """
    from ..data import create_dataset
    from ..data.synthetic import write_folder_layout
    from ..data.synthetic.writer import prepare_output_folder

    for flag, value in (("--num-classes", num_classes), ("--photos-per-class", photos_per_class),
                        ("--sketches-per-photo", sketches_per_photo), ("--image-size", image_size)):
        _positive(flag, value)
    if not overwrite:
        prepare_output_folder(out)  # refuse a non-empty OUT before generating anything
    ds = create_dataset("synthetic", num_classes=num_classes, photos_per_class=photos_per_class,
                        sketches_per_photo=sketches_per_photo, image_size=image_size, seed=seed)
    counts = write_folder_layout(ds, out, progress=True, overwrite=overwrite)
    typer.echo(f"wrote {out}: {counts}")


def _check_loader_call(format: str, path: Optional[Path], options: dict) -> None:
    """Refuse a missing dataset root or an option the loader does not take, naming the flag."""
    import inspect

    from ..data import DATASETS, list_datasets

    list_datasets()  # registers the built-in loaders
    factory = DATASETS.get(format)  # an unknown format is a one-line error already
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - a loader without a signature
        return
    if path is None and params and params[0].default is inspect.Parameter.empty \
            and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        _fail(f"PATH: format {format!r} reads files: expected the dataset root, "
              f"e.g. 'sbirkit data info DATA -f {format}'")
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params[1:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in options:
        if key not in known:
            _fail(f"--option {key}: format {format!r} has no option {key!r}; "
                  f"it takes: {', '.join(known) or '(none)'}")


@data_app.command("info")
def data_info(
    path: Optional[Path] = typer.Argument(None, help="Dataset root (omit for --format synthetic)."),
    format: str = typer.Option("folder", "--format", "-f", help="Dataset format; see 'sbirkit list'."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-o", help="Loader option key=value (repeatable)."),
    validate: bool = typer.Option(False, "--validate/--no-validate",
                                  help="Decode every sample and report the ones that fail (exit code 1 if any "
                                  "does)."),
    per_class: bool = typer.Option(True, "--per-class/--no-per-class", help="Print the per-class table."),
) -> None:
    """Validate a dataset and print counts per class, modality, split and user.

    Exit code 0, or 1 when --validate found files that fail to decode, or 2 for a bad path or flag.
    """
    from ..data import create_dataset
    from ..data.report import format_summary

    options = _parse_options(option)
    _check_loader_call(format, path, options)
    ds = create_dataset(format, str(path) if path is not None else None, **options)
    report = ds.validate(progress=True) if validate else None
    typer.echo(format_summary(ds.summary(), report, per_class=per_class))
    if report is not None and report.failures:
        total = report.checked + len(report.failures)
        typer.secho(f"error: {len(report.failures)} of {total} files failed to load or decode (listed above)",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
