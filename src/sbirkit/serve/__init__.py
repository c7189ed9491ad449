"""Sketch search as a service: an HTTP API (FastAPI) and a drawing page, for one index.

``create_app(index_dir, ...)`` makes the application (the index and its model are loaded once,
per worker); ``sbirkit serve --index DIR`` runs it on uvicorn, on localhost unless told
otherwise. Needs the ``serve`` extra (``pip install 'sbirkit[serve]'``; ``./dev`` installs it).
See ``docs/serve.md`` for the endpoints, the limits and the security model.
"""

from __future__ import annotations

from ..errors import SbirkitError
from .config import Limits, ServeConfig


class ServeExtraMissing(SbirkitError):
    """FastAPI or uvicorn is not installed."""


def _need_extra() -> None:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        names = {"multipart": "python-multipart"}
        raise ServeExtraMissing(
            f"serve: needs {', '.join(names.get(m, m) for m in missing)}; install them with "
            "pip install 'sbirkit[serve]' (./dev installs it)"
        )


def create_app(index_dir=None, **settings):
    """The FastAPI app serving ``index_dir``; see :func:`sbirkit.serve.app.create_app`."""
    _need_extra()
    from .app import create_app as _create

    return _create(index_dir, **settings)


__all__ = ["Limits", "ServeConfig", "ServeExtraMissing", "create_app"]
