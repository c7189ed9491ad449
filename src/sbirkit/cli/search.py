"""'sbirkit search': an index searched with a sketch file or a folder of them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import _fail, _positive, app
from .embed import _run_encoder


def _query_files(sketch: Path) -> list[Path]:
    """The sketch file, or every sketch file under a folder (recursive, sorted by relative path)."""
    from ..index.files import SKETCH_EXTENSIONS

    if not sketch.is_dir():
        return [sketch]
    found = sorted((p for p in sketch.rglob("*") if p.is_file() and p.suffix.lower() in SKETCH_EXTENSIONS),
                   key=lambda p: p.relative_to(sketch).as_posix())
    if not found:
        _fail(f"--sketch {sketch}: expected sketch files ({', '.join(sorted(SKETCH_EXTENSIONS))}) in the folder, "
              "found none")
    return found


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
    import warnings

    import numpy as np
    import torch

    from ..errors import DataError
    from ..index import GalleryIndex, check_model, draw_grid_rows, load_query_sketch

    _positive("-k", k)
    if drawing < 0:
        _fail(f"--drawing: expected a drawing number >= 0, got {drawing}")
    if grid is not None and not grid.parent.is_dir():  # checked first; nothing is created for it
        _fail(f"--grid {grid}: expected a file in an existing folder, {grid.parent} is not one")
    queries = _query_files(sketch)
    index = GalleryIndex.load(index_dir)
    if nprobe is not None:
        if not index.is_ivf:
            _fail(f"--nprobe: only IVF indexes take it; {index_dir} is a {index.factory!r} index")
        _positive("--nprobe", nprobe)
    built_with = index.model_info
    run_dir = Path(run) if run else Path(built_with.get("run", ""))
    encoder, size, info = _run_encoder(run_dir, built_with.get("which", "best"))
    check_model(built_with, info, where=str(index_dir))
    if info["embed_dim"] != index.dim:
        _fail(f"{index_dir}: embedding size {index.dim}, but the model {run_dir} embeds to {info['embed_dim']}")
    images, used, skipped, notes = [], [], [], []
    for path in queries:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                image = load_query_sketch(path, size=size, index=drawing)
            except DataError as exc:
                if not sketch.is_dir():
                    raise
                skipped.append({"query": str(path), "error": str(exc)})
                typer.secho(f"skipped {path}: {exc}", fg=typer.colors.YELLOW, err=True)
                continue
        for w in caught:  # e.g. "looks like a photo": one line each, not a Python warning block
            typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
        images.append(image)
        used.append(path)
        notes.append([str(w.message) for w in caught])
    if not used:
        _fail(f"--sketch {sketch}: none of the {len(queries)} sketch files could be used")
    x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1) for im in images])
    with torch.no_grad():
        q = encoder.encode_sketch(x).numpy()
    result = index.search(q, k=k, nprobe=nprobe)
    blocks = [result.items_for(i) for i in range(len(used))]
    if grid is not None:
        draw_grid_rows([(im, [(item.get("path"), f"{item['score']:.2f}", None) for item in rows])
                        for im, rows in zip(images, blocks)], grid)
    if as_json:
        out = {
            "index": str(index_dir), "metric": index.metric, "k": k, "nprobe": nprobe if nprobe else index.nprobe,
            "model": {key: info.get(key) for key in ("run", "fingerprint", "which")},
            "queries": [
                {"query": str(path), **({"drawing": drawing} if path.suffix.lower() == ".ndjson" else {}),
                 "warnings": note,
                 "results": [{**{key: v for key, v in item.items() if key != "rank"}, "rank": item["rank"] + 1}
                             for item in rows]}
                for path, rows, note in zip(used, blocks, notes)
            ],
            "skipped": skipped,
            "grid": str(grid) if grid is not None else None,
        }
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    for n, (path, rows) in enumerate(zip(used, blocks)):
        if sketch.is_dir():
            typer.echo(("\n" if n else "") + f"query: {path}")
        for rank, item in enumerate(rows, 1):
            typer.echo(f"{rank:>3}  {item['score']:.4f}  {item.get('path', item.get('id'))}")
    if sketch.is_dir():
        typer.echo(f"\nsearched with {len(used)} sketches ({len(skipped)} skipped)")
    if grid is not None:
        typer.echo(f"grid: {grid}")
