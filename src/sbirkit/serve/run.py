"""``sbirkit serve``: check everything, bind the port, say where the server listens, run uvicorn."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from .config import CONFIG_ENV, LOOPBACK_HOSTS, ServeConfig, is_loopback


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: could not resolve it ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"--port {port}: could not listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    config: ServeConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = True,
    root_path: str = "",
    echo: Callable[[str], None] = print,
) -> None:
    """Run the server until interrupted. The index and model are loaded (and checked) before the
    port is opened, so a mistake is a one-line error and nothing listens."""
    import uvicorn

    from . import _need_extra

    _need_extra()
    if not 0 <= port <= 65535:
        raise UsageError(f"--port: expected 0..65535, got {port}")
    if not 1 <= workers <= 64:
        raise UsageError(f"--workers: expected 1..64, got {workers}")
    if workers > 1 and port == 0:
        raise UsageError("--port 0 (any free port) works with one worker only; give a port for --workers")
    local = is_loopback(host)
    if config.allowed_hosts is None and local:
        config = replace(config, allowed_hosts=LOOPBACK_HOSTS)  # no DNS-rebinding page can read the API
    signal_dir = None
    if workers > 1 and config.admin_token is not None:
        signal_dir = tempfile.mkdtemp(prefix="sbirkit-serve-")
        config = replace(config, reload_signal=str(Path(signal_dir) / "reload"))
    try:
        from .app import create_app

        app = create_app(config=config)  # loads and checks the index and its model
        snap = app.state.holder.snapshot
        sock = _bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        where = "localhost only" if local else (
            f"on {host}: reachable from other machines (--host {host}); search has no authentication")
        admin = ", POST /admin/reload enabled (token)" if config.admin_token else ""
        echo(f"sbirkit serve: http://{shown}:{bound}/  ({where}; index {config.index_dir}: {len(snap.index):,} "
             f"items, model {'/'.join(snap.model.run_dir.resolve().parts[-2:])} {snap.model.info['fingerprint']}; "
             f"{workers} worker"
             f"{'s' if workers > 1 else ''}, batching {config.batch_wait_ms:g} ms / {config.max_batch}{admin})")
        from .header_timeout import HeaderTimeoutHTTPProtocol

        common = dict(log_level=log_level, access_log=access_log, root_path=root_path, timeout_keep_alive=5,
                      server_header=False, proxy_headers=False, http=HeaderTimeoutHTTPProtocol)
        if workers == 1:
            server = uvicorn.Server(uvicorn.Config(app, **common))
            server.run(sockets=[sock])
            return
        sock.close()  # the port was free; uvicorn's supervisor binds it again for its workers
        del app
        os.environ[CONFIG_ENV] = config.to_json()
        uvicorn.run("sbirkit.serve.app:app_from_env", factory=True, host=host, port=bound, workers=workers,
                    **common)
    finally:
        if signal_dir is not None:
            shutil.rmtree(signal_dir, ignore_errors=True)
