"""'sbirkit search': an index searched with a sketch file or a folder of them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import _fail, _positive, app


@app.command()
def search(
    index_dir: Path = typer.Option(..., "--index", help="Index folder from 'sbirkit index build'."),
    sketch: Path = typer.Option(..., "--sketch", help="Query sketch: PNG/JPG, SVG or Quick, Draw! .ndjson; or a "
                                "folder, to search with every sketch file in it (one block of results each)."),
    k: int = typer.Option(10, "-k", help="How many results per query."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: the one the index was built with)."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Write a PNG of each query beside its top results "
                                        "(one row per query)."),
    nprobe: Optional[int] = typer.Option(None, help="IVF lists to scan (IVF indexes only)."),
    drawing: int = typer.Option(0, "--drawing", help="Which drawing of a Quick, Draw! .ndjson file to search "
                                "with (0 = the first line)."),
    as_json: bool = typer.Option(False, "--json/--no-json", help="Print the results as one JSON object on stdout."),
) -> None:
    """Search an index with a sketch (or a folder of sketches); print ranked paths and scores.

    Scores are cosine similarities for the default metric (ip; higher is closer). In a folder, a
    sketch that cannot be used (blank, unreadable) is reported on stderr and skipped.
    """
    import json

    from ..index import draw_grid_rows
    from ..index.search import search_sketch_files

    _positive("-k", k)
    if drawing < 0:
        _fail(f"--drawing: expected a drawing number >= 0, got {drawing}")
    if grid is not None and not grid.parent.is_dir():  # checked first; nothing is created for it
        _fail(f"--grid {grid}: expected a file in an existing folder, {grid.parent} is not one")

    def skipped_line(path, exc) -> None:
        typer.secho(f"skipped {path}: {exc}", fg=typer.colors.YELLOW, err=True)

    def warning_line(message: str) -> None:  # e.g. "looks like a photo": one line each, not a warning block
        typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)

    found = search_sketch_files(index_dir, sketch, k, run=run, nprobe=nprobe, drawing=drawing,
                                on_skip=skipped_line, on_warning=warning_line)
    if grid is not None:
        draw_grid_rows([(im, [(item.get("path"), f"{item['score']:.2f}", None) for item in rows])
                        for im, rows in zip(found.images, found.blocks)], grid)
    if as_json:
        typer.echo(json.dumps(found.as_dict(grid), indent=2, default=str))
        return
    for n, (path, rows) in enumerate(zip(found.used, found.blocks)):
        if sketch.is_dir():
            typer.echo(("\n" if n else "") + f"query: {path}")
        for rank, item in enumerate(rows, 1):
            typer.echo(f"{rank:>3}  {item['score']:.4f}  {item.get('path', item.get('id'))}")
    if sketch.is_dir():
        typer.echo(f"\nsearched with {len(found.used)} sketches ({len(found.skipped)} skipped)")
    if grid is not None:
        typer.echo(f"grid: {grid}")
