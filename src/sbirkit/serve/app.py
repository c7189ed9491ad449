"""The FastAPI application: ``create_app(index_dir, ...)``.

Endpoints (OpenAPI at ``/openapi.json``, a self-contained reference page at ``/docs``):

* ``GET /`` the drawing page (static files shipped in the package, no external resources);
* ``GET /health``, ``GET /info`` (model, index size, embedding size, modalities, classes, build time,
  limits, batching);
* ``GET /items/{id}`` an item's metadata, ``GET /items/{id}/thumbnail`` a small JPEG of it: by the
  item's id in the index only; the file read is the one the index names;
* ``POST /search`` a sketch (JSON strokes, PNG/JPEG/WebP/GIF, SVG; raw body or multipart ``file``)
  or a photo (``direction=photo2*``), ``k``, ``class`` (repeatable) and ``direction`` in the query
  string;
* ``POST /admin/reload`` only when the server has an admin token (``Authorization: Bearer <token>``).

Every refusal is a 4xx with a one-line JSON body ``{"error": "..."}``; a bad request never
takes the worker down and never writes anything (the server has no write path to the index).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import SbirkitError, UsageError
from ..index.query import ranked_rows
from .batching import Batcher, Job, OverloadedError
from .config import ServeConfig
from .queries import (
    RASTER_TYPES,
    SVG_TYPES,
    RequestError,
    content_type_of,
    field_bytes,
    file_image,
    parse_strokes_json,
    sniff_media,
    strokes_image,
)
from .schemas import ErrorResponse, Health, SearchResponse, StrokeQuery
from .state import MODALITIES, StateHolder, check_classes
from .thumbs import ThumbnailCache, make_thumbnail

log = logging.getLogger("sbirkit.serve")

SEARCH_PARAMS = ("k", "class", "direction", "nprobe")
#: The page's files: name -> media type. Only these names are ever served from the package.
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "docs.html": "text/html; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
}
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
EXTENSION_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                   ".gif": "image/gif", ".svg": "image/svg+xml"}


def one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _shown(value: str) -> str:
    """An id from a request, safe to echo in a one-line error (repr, cut to 80 characters)."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413, before the app reads
    it (``Content-Length`` checked first, streamed chunks counted). The accepted body is
    buffered and handed on, so nothing downstream can read more than ``limit``."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
                if n < 0:
                    raise ValueError
            except ValueError:
                return await error_response(400, "Content-Length: expected a non-negative integer")(scope, receive, send)
            if n > self.limit:
                return await self._too_large(n, scope, receive, send)
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and declared is None:
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await self._too_large(size, scope, receive, send, at_least=True)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        data = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, n, scope, receive, send, at_least: bool = False):
        got = f"more than {self.limit:,}" if at_least else f"{n:,}"
        response = error_response(413, f"body: expected at most {self.limit:,} bytes, got {got}; "
                                  "shrink the image or raise --max-body-bytes")
        response.headers["Connection"] = "close"
        return await response(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: the page and the API may load nothing from other origins (CSP), are not
    framed, and send no referrer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for k, v in ((b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                             (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
                             (b"cross-origin-opener-policy", b"same-origin")):
                    if k not in names:
                        headers.append((k, v))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, with_headers)


def _static_files() -> dict[str, bytes]:
    root = resources.files("sbirkit.serve") / "static"
    return {name: (root / name).read_bytes() for name in STATIC_FILES}


def _openapi_body(config: ServeConfig) -> dict:
    binary = {"schema": {"type": "string", "format": "binary"}}
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/StrokeQuery"}},
               "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "additionalProperties": False,
                                                  "properties": {"file": {"type": "string", "format": "binary"}}}}}
    for media in ("image/png", "image/jpeg", "image/webp", "image/gif", "image/svg+xml"):
        content[media] = binary
    return {"requestBody": {"required": True, "content": content,
                            "description": f"the query: strokes, or a sketch or photo file (at most "
                                           f"{config.limits.max_body_bytes:,} bytes)"}}


def create_app(index_dir: str | os.PathLike | None = None, *, config: ServeConfig | None = None, **settings) -> FastAPI:
    """The server for the index in ``index_dir`` (keyword ``settings`` as :class:`ServeConfig`).

    Loads the index and its model now, so a bad index, a missing run or a model/index mismatch
    is a one-line :class:`~sbirkit.errors.SbirkitError` here, not at the first request.
    """
    if config is None:
        if index_dir is None:
            raise UsageError("index_dir: expected the index folder to serve")
        config = ServeConfig(index_dir=str(index_dir), **settings)
    elif settings or index_dir is not None:
        raise UsageError("create_app: pass either config= or index_dir with settings, not both")
    limits = config.limits
    holder = StateHolder(config)
    batcher = Batcher(config.batch_wait_ms / 1000.0, config.max_batch, limits.max_pending)
    thumbs = ThumbnailCache(config.thumb_cache)
    prep_limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
    static = _static_files()
    first = holder.snapshot

    @asynccontextmanager
    async def lifespan(app):
        yield
        await batcher.aclose()
        batcher.shutdown()

    app = FastAPI(
        title="sbirkit",
        version=__version__,
        summary="Sketch-based image retrieval: draw, get photos back.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.batcher = batcher
    app.state.config = config

    # ---- errors: one JSON line each ----------------------------------------------------------------
    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return error_response(exc.status, str(exc))

    @app.exception_handler(OverloadedError)
    async def _overloaded(request, exc):
        return error_response(503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(SbirkitError)
    async def _sbirkit_error(request, exc):
        return error_response(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        errors = exc.errors()
        err = errors[0] if errors else {}
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body")]
        where = ".".join(loc) or "request"
        got = err.get("input")
        shown = f", got {one_line(repr(got), 60)}" if got is not None and not isinstance(got, (dict, list)) else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return error_response(422, f"{where}: {err.get('msg', 'invalid value')}{shown}{more}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"not found: {request.method} {one_line(request.url.path, 120)}"
        elif exc.status_code == 405:
            detail = f"method not allowed: {request.method} {one_line(request.url.path, 120)}"
        return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request, exc):  # a bug: logged with its traceback, the client gets one line
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error (the server logged it)")

    # ---- the page --------------------------------------------------------------------------------
    def _file(name: str) -> Response:
        cache = "no-cache" if name.endswith(".html") else "public, max-age=300"
        return Response(static[name], media_type=STATIC_FILES[name], headers={"Cache-Control": cache})

    @app.get("/", include_in_schema=False)
    async def page():
        return _file("index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return _file("docs.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        if name not in STATIC_FILES:
            raise StarletteHTTPException(404)
        return _file(name)

    # ---- read-only endpoints ------------------------------------------------------------------------
    refusals = {status: {"model": ErrorResponse, "description": why} for status, why in (
        (400, "a body that is not JSON, or malformed multipart"),
        (413, "body or image over its limit"),
        (415, "unsupported content type"),
        (422, "a bad value, field, sketch or file; a limit on strokes, points or k"),
        (503, "too many queries waiting for the model"),
    )}

    @app.get("/health", response_model=Health, summary="Liveness: the index is loaded")
    async def health():
        return {"status": "ok", "items": len((await _current()).index)}

    @app.get("/info", summary="The model, the index and the server's limits")
    async def info():
        snap = await _current()
        index, model = snap.index, snap.model
        return {
            "sbirkit": __version__,
            "model": {"run": "/".join(model.run_dir.resolve().parts[-2:]), **{k: model.info.get(k) for k in (
                "fingerprint", "which", "backbone", "embed_dim", "image_size")}},
            "index": {"name": snap.index_dir.name, "items": len(index), "dim": index.dim, "factory": index.factory,
                      "metric": index.metric, "nprobe": index.nprobe, "created": index.created,
                      "updated": index.updated, "version": snap.version, "modalities": snap.modality_counts,
                      "classes": snap.class_counts},
            "directions": snap.directions,
            "default_direction": snap.default_direction,
            "limits": asdict(limits),
            "batching": {"wait_ms": config.batch_wait_ms, "max_batch": config.max_batch, **batcher.stats.as_dict()},
            "admin_reload": config.admin_token is not None,
        }

    async def _current():
        if holder.stale():
            return await anyio.to_thread.run_sync(holder.current)
        return holder.snapshot

    def _row(snap, item_id: str) -> int:
        row = snap.by_id.get(item_id)
        if row is None:
            raise RequestError(404, f"item: no item with id {_shown(item_id)} in the index")
        return row

    def _urls(snap, row: int) -> dict:
        item_id = snap.item_id(row)
        q = quote(item_id, safe="")
        has_image = bool(snap.index.items[row].get("path"))
        return {"thumbnail": f"items/{q}/thumbnail" if has_image else None, "item": f"items/{q}"}

    @app.get("/items/{item_id:path}/thumbnail", summary="A small JPEG of an item, by its id",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorResponse}},
             response_class=Response)
    async def thumbnail(item_id: str):
        snap = await _current()
        row = _row(snap, item_id)
        path = snap.index.items[row].get("path")
        if not path:
            raise RequestError(404, f"item {_shown(item_id)}: the index has no image file for it")
        key = (snap.generation, row)
        data = thumbs.get(key)
        if data is None:
            try:
                data = await anyio.to_thread.run_sync(make_thumbnail, str(path), config.thumb_size,
                                                      limiter=prep_limiter)
            except (SbirkitError, OSError) as exc:
                log.warning("thumbnail of %r failed: %s", item_id, exc)
                raise RequestError(404, f"item {_shown(item_id)}: its image file could not be read") from None
            thumbs.put(key, data)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/items/{item_id:path}", summary="An item's metadata, by its id",
             responses={404: {"model": ErrorResponse}})
    async def item(item_id: str):
        snap = await _current()
        row = _row(snap, item_id)
        public = snap.public_item(row)
        return {**public, "id": snap.item_id(row), "class_name": snap.class_names[row] or None,
                "modality": snap.modalities[row], "row": row, **_urls(snap, row)}

    # ---- search ---------------------------------------------------------------------------------------
    @app.post("/search", response_model=SearchResponse, responses=refusals, openapi_extra=_openapi_body(config),
              summary="Search the index with a sketch (strokes, image, SVG) or a photo")
    async def search(
        request: Request,
        k: int = Query(10, ge=1, le=limits.max_k, description=f"results to return (1..{limits.max_k})"),
        classes: Optional[list[str]] = Query(None, alias="class", max_length=256,
                                             description="only items of these classes (repeatable)"),
        direction: Optional[str] = Query(None, description="<query>2<gallery>; default sketch2photo",
                                         json_schema_extra={"enum": first.directions}),
        nprobe: Optional[int] = Query(None, ge=1, le=1_000_000, description="IVF lists to scan (IVF indexes)"),
    ):
        started = time.perf_counter()
        unknown = [name for name in request.query_params if name not in SEARCH_PARAMS]
        if unknown:
            raise RequestError(422, f"query parameter {_shown(unknown[0])}: unknown; expected {', '.join(SEARCH_PARAMS)}")
        snap = await _current()
        direction = direction or snap.default_direction
        if direction not in snap.directions:
            parts = direction.split("2")
            if len(parts) == 2 and parts[0] in MODALITIES and parts[1] in MODALITIES:
                raise RequestError(422, f"direction: this index holds no {parts[1]} items; expected one of "
                                   f"{', '.join(snap.directions)}, got {direction!r}")
            raise RequestError(422, f"direction: expected one of {', '.join(snap.directions)}, got {_shown(direction)}")
        query_modality, gallery_modality = direction.split("2")
        if nprobe is not None and not snap.index.is_ivf:
            raise RequestError(422, f"nprobe: only IVF indexes take it; this index is {snap.index.factory!r}")
        wanted = check_classes(snap, classes)
        batcher.arriving += 1  # on its way to the model: a batch being formed may wait for it
        try:
            query = await _read_query(request, query_modality, snap.model.size)
        finally:
            batcher.arriving -= 1
        rows = snap.row_filter(gallery_modality, wanted)
        job = Job(snapshot=snap, modality=query_modality, image=query.image, k=k, rows=rows,
                  filter_key=(gallery_modality, wanted), nprobe=nprobe)
        scores, found = await batcher.submit(job)
        results = [{"rank": rank, "id": snap.item_id(row), "score": score, "class_name": snap.class_names[row] or None,
                    "modality": snap.modalities[row], **_urls(snap, row)}
                   for rank, row, score in ranked_rows(scores, found)]  # as `sbirkit search` ranks them
        return {"results": results, "k": k, "direction": direction, "classes": list(wanted) if wanted else None,
                "metric": snap.index.metric, "warnings": query.warnings, "index_version": snap.version,
                "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    async def _read_query(request: Request, modality: str, size: int):
        media = content_type_of(request.headers.get("content-type"))
        if media == "application/json":
            if modality != "sketch":
                raise RequestError(422, "body: strokes are a sketch; a photo2* direction needs a photo file")
            parsed = parse_strokes_json(await request.body(), limits)
            return await anyio.to_thread.run_sync(strokes_image, parsed, size, limiter=prep_limiter)
        if media == "multipart/form-data":
            data, media = await _multipart_file(request)
        elif media in RASTER_TYPES or media in SVG_TYPES:
            data = await request.body()
        else:
            raise RequestError(415, f"Content-Type: expected application/json, multipart/form-data, "
                               f"{', '.join(RASTER_TYPES)} or image/svg+xml, got {one_line(media, 60) or '(none)'!r}")
        return await anyio.to_thread.run_sync(file_image, data, media, modality, size, limits, limiter=prep_limiter)

    async def _multipart_file(request: Request) -> tuple[bytes, str]:
        async with request.form(max_files=1, max_fields=8, max_part_size=limits.max_body_bytes) as form:
            extra = [name for name in form.keys() if name != "file"]
            if extra:
                raise RequestError(422, f"form field {_shown(extra[0])}: unknown; expected only 'file' "
                                   "(k, class and direction go in the query string)")
            upload = form.get("file")
            if upload is None:
                raise RequestError(422, "file: expected a file field named 'file'")
            if isinstance(upload, str):  # a part without a filename: Starlette decoded it as text
                data = field_bytes(upload)
                media = sniff_media(data)
                if media is None:
                    raise RequestError(422, "file: expected a file field named 'file' (an image or an SVG), "
                                       "got text that is neither")
            else:
                data = await upload.read()
                media = content_type_of(upload.content_type)
                if media not in RASTER_TYPES and media not in SVG_TYPES:
                    media = EXTENSION_TYPES.get(Path(upload.filename or "").suffix.lower(), media)
            if media not in RASTER_TYPES and media not in SVG_TYPES:  # none, or a generic one: by content
                media = sniff_media(data) or media
            return data, media

    # ---- admin ------------------------------------------------------------------------------------------
    if config.admin_token is not None:
        token = config.admin_token.encode("utf-8")

        @app.post("/admin/reload", summary="Load the index again (a rebuilt or extended one)",
                  responses={401: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
        async def reload(request: Request):
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if not hmac.compare_digest(value.strip().encode("utf-8"), token) or scheme.lower() != "bearer":
                return error_response(401, "authorization: expected 'Bearer <admin token>'",
                                      headers={"WWW-Authenticate": "Bearer"})
            before = holder.snapshot
            try:
                snap = await anyio.to_thread.run_sync(holder.reload, True)
            except SbirkitError as exc:
                return error_response(409, f"reload failed, still serving version {before.version}: {exc}")
            return {"status": "reloaded", "version": snap.version, "items": len(snap.index),
                    "previous_version": before.version, "model_reloaded": snap.model is not before.model}

    def custom_openapi():
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes,
                                 description="Every refusal is a 4xx with a one-line JSON body {\"error\": ...}.")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            stroke_schema = StrokeQuery.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(stroke_schema.pop("$defs", {}))
            components["StrokeQuery"] = stroke_schema
            components.setdefault("ErrorResponse", ErrorResponse.model_json_schema())
            for ops in schema.get("paths", {}).values():  # refusals are {"error": ...}, not FastAPI's list
                for op in ops.values():
                    bad = op.get("responses", {}).get("422")
                    if bad is not None:
                        bad["description"] = "a bad value, field or query (one-line error)"
                        bad["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = custom_openapi
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    if config.allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes (``sbirkit serve --workers N``): settings from the
    environment (:data:`~sbirkit.serve.config.CONFIG_ENV`)."""
    return create_app(config=ServeConfig.from_env())
