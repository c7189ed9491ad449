"""Helpers shared by the server tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from sbirkit.cli import app as cli_app

CLASSES = 6
GALLERY_PER_CLASS = 8


def cli(*args) -> str:
    result = CliRunner().invoke(cli_app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def folder_digest(folder: Path) -> str:
    """SHA-256 over every file (name and bytes) under ``folder``: equal iff nothing changed."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def asgi_get(app, url: str):
    """GET through httpx's ASGI transport, which decodes the path once, as uvicorn does.
    (Starlette's TestClient decodes it twice, so '%252F' would reach the app as '/'.)"""
    import anyio
    import httpx

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(url)

    return anyio.run(go)
