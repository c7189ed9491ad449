"""'sbirkit dfl samples': what a data-free run's estimators generate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import _Group, _one_of, app

dfl_app = typer.Typer(help="Data-free SBIR (CrossX-DFL): look at what the estimators generate.",
                      no_args_is_help=True, cls=_Group)
app.add_typer(dfl_app, name="dfl")


@dfl_app.command("samples")
def dfl_samples(
    run: Path = typer.Argument(..., help="A crossx_dfl run folder (its teachers are loaded as the run names them)."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default RUN/samples.png); an existing "
                                       "file is refused unless --overwrite."),
    per_class: int = typer.Option(4, "--per-class", help="Pairs per class row (the most confident first)."),
    n: int = typer.Option(256, "--n", help="Pairs to generate from held-out noise before picking."),
    which: str = typer.Option("best", help="Checkpoint: best or last."),
    seed: int = typer.Option(24301, help="Seed of the noise."),
    overwrite: bool = typer.Option(False, "--overwrite/--no-overwrite", help="Replace an existing --out."),
    reference_photos: Optional[Path] = typer.Option(None, "--reference-photos", help="Real photos (a folder, read "
                                                    "for diagnosis only): the generated-vs-real probe accuracy."),
    reference_sketches: Optional[Path] = typer.Option(None, "--reference-sketches", help="Real sketches (a folder, "
                                                      "for diagnosis only), as --reference-photos."),
) -> None:
    """A grid of generated photo/sketch pairs per class: one row per class (the teachers' pseudo-label),
    and the synthesis diagnostics (teachers' agreement, class balance, confidence, probes) printed and
    written beside it as JSON."""
    import json

    from ..methods.crossx_dfl.diagnostics import format_diagnostics
    from .dfl_samples import write_samples_grid

    _one_of("--which", which, ("best", "last"))
    reference = {k: str(v) for k, v in (("photos", reference_photos), ("sketches", reference_sketches)) if v} or None
    path = write_samples_grid(run, out, per_class=per_class, n=n, which=which, seed=seed, overwrite=overwrite,
                              reference=reference)
    values = json.loads(path.with_suffix(".json").read_text())
    typer.echo(format_diagnostics({k: v for k, v in values.items() if "/" in k}))
    typer.echo(f"wrote {path} and {path.with_suffix('.json')}")
