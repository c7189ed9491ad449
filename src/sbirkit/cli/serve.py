"""'sbirkit serve' (the HTTP server) and 'sbirkit demo'."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import _fail, _one_of, _positive, app


@app.command()
def serve(
    index_dir: Path = typer.Option(..., "--index", help="Index folder to serve (from 'sbirkit index build' or the "
                                   "demo: runs/demo/index)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Loopback by default; any other address "
                             "(0.0.0.0: every interface) makes the server reachable from other machines."),
    port: int = typer.Option(8000, help="Port (0: any free port, printed at start-up)."),
    workers: int = typer.Option(1, help="Worker processes; each loads the model once."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: the one the index was built with)."),
    which: Optional[str] = typer.Option(None, help="Checkpoint best or last (default: the index's)."),
    admin_token: Optional[str] = typer.Option(None, "--admin-token", envvar="SBIRKIT_ADMIN_TOKEN",
                                              help="Enable POST /admin/reload for 'Authorization: Bearer TOKEN' "
                                              "(at least 16 characters; prefer the SBIRKIT_ADMIN_TOKEN variable, "
                                              "which 'ps' does not show)."),
    batch_wait_ms: float = typer.Option(5.0, help="How long a query waits for others to share its forward pass."),
    max_batch: int = typer.Option(32, help="Most queries in one forward pass (1: no batching)."),
    max_body_bytes: int = typer.Option(2_000_000, help="Largest request body (413 above)."),
    max_pixels: int = typer.Option(4096 * 4096, help="Largest uploaded image, in pixels (413 above)."),
    max_strokes: int = typer.Option(1_000, help="Most strokes in a query (422 above)."),
    max_points: int = typer.Option(20_000, help="Most points in a query's strokes (422 above)."),
    max_k: int = typer.Option(100, help="Most results per query (422 above)."),
    allowed_host: Optional[List[str]] = typer.Option(None, "--allowed-host", help="A Host header to accept "
                                                     "(repeatable; default: the loopback names when bound to "
                                                     "loopback, any otherwise). Set it behind a reverse proxy."),
    root_path: str = typer.Option("", help="The path prefix a reverse proxy strips before forwarding (e.g. /sketch); "
                                  "names the prefixed URL in the OpenAPI schema."),
    threads: Optional[int] = typer.Option(None, help="torch threads for the model (as 'sbirkit --threads N serve'; "
                                          "default: see 'sbirkit --help')."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request."),
) -> None:
    """Serve an index over HTTP: the drawing page at /, the API (POST /search ...) and its reference at /docs.

    The index and its model are loaded and checked before the port opens. Localhost only unless
    --host says otherwise; POST /admin/reload exists only with --admin-token.
    """
    from ..serve import Limits, ServeConfig
    from ..serve.run import serve as run_server
    from . import threads as _threads

    _one_of("--log-level", log_level, ("critical", "error", "warning", "info", "debug"))
    if threads is not None:
        _positive("--threads", threads)
        _threads.use_threads(threads)
    for flag, value in (("--max-body-bytes", max_body_bytes), ("--max-pixels", max_pixels),
                        ("--max-strokes", max_strokes), ("--max-points", max_points), ("--max-k", max_k),
                        ("--max-batch", max_batch), ("--workers", workers)):
        _positive(flag, value)
    _threads.share_among_workers(workers)  # N workers: each its share of a count sbirkit chose
    if not 0 <= batch_wait_ms <= 1000:
        _fail(f"--batch-wait-ms: expected 0..1000 milliseconds, got {batch_wait_ms:g}")
    if admin_token is not None and len(admin_token) < 16:
        _fail("--admin-token: expected at least 16 characters (a long random string, e.g. from 'openssl rand -hex 16')")
    limits = Limits(max_body_bytes=max_body_bytes, max_pixels=max_pixels, max_strokes=max_strokes,
                    max_points=max_points, max_k=max_k)
    config = ServeConfig(index_dir=str(index_dir), run=str(run) if run else None, which=which, limits=limits,
                         batch_wait_ms=batch_wait_ms, max_batch=max_batch, admin_token=admin_token,
                         allowed_hosts=tuple(allowed_host) if allowed_host else None)
    run_server(config, host=host, port=port, workers=workers, log_level=log_level, access_log=access_log,
               root_path=root_path, echo=typer.echo)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where the report and run go."),
    quick: bool = typer.Option(False, help="A much shorter run, for smoke tests."),
    fresh: bool = typer.Option(False, help="Delete OUT first instead of reusing a finished run."),
) -> None:
    """The end-to-end demo on the built-in synthetic data (no files, no network)."""
    from ..demo import run_demo

    run_demo(out, quick=quick, fresh=fresh)
