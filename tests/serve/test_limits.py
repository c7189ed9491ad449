"""Every refusal: the right 4xx, a one-line JSON error naming what was wrong, and nothing changed."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image, ImageDraw
from serve_helpers import folder_digest


def png_bytes(w=200, h=200, draw=True, mode="L") -> bytes:
    img = Image.new(mode, (w, h), 255)
    if draw:
        ImageDraw.Draw(img).ellipse([w * 0.2, h * 0.2, w * 0.8, h * 0.8], outline=0, width=max(2, w // 50))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def huge_png(w: int, h: int) -> bytes:
    """A valid PNG header claiming w x h pixels with one tiny compressed row (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (w + 1))) + \
        chunk(b"IEND", b"")


def refused(response, status: int, *needles: str) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert "\n" not in message and "Traceback" not in message and len(message) <= 400
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def raw(client, data: bytes, content_type: str, query: str = ""):
    return client.post(f"/search{query}", content=data, headers={"Content-Type": content_type})


# ---- size ---------------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_413_before_it_is_read(client):
    refused(raw(client, b"\0" * 2_000_001, "image/png"), 413, "body: expected at most 2,000,000 bytes",
            "got 2,000,001")


def test_a_streamed_body_over_the_limit_is_413(client):
    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        for _ in range(40):
            yield b"\0" * 100_000
    r = client.post("/search", content=chunks(), headers={"Content-Type": "image/png"})
    refused(r, 413, "body: expected at most 2,000,000 bytes, got more than 2,000,000")


def test_an_image_with_too_many_pixels_is_413_without_decoding_it(client):
    bomb = huge_png(20_000, 20_000)  # 400 MP declared, a few hundred bytes sent
    assert len(bomb) < 1000
    refused(raw(client, bomb, "image/png"), 413, "pixels: expected at most 16,777,216 pixels, got 400,000,000")
    refused(raw(client, huge_png(5000, 5000), "image/png"), 413, "pixels: expected at most 16,777,216 pixels, "
            "got 5000x5000")
    refused(raw(client, huge_png(5000, 4000), "image/png", "?direction=photo2photo"), 413, "pixels")


def test_the_pixel_limit_can_be_changed(index_dir):
    from fastapi.testclient import TestClient

    from sbirkit.serve import Limits, create_app

    with TestClient(create_app(index_dir, limits=Limits(max_pixels=100 * 100))) as c:
        refused(raw(c, png_bytes(101, 100), "image/png"), 413, "expected at most 10,000 pixels, got 101x100")
        assert raw(c, png_bytes(100, 100), "image/png").status_code == 200


# ---- strokes --------------------------------------------------------------------------------------
def test_too_many_strokes_or_points_are_422(client):
    many = {"strokes": [[[i, i + 1], [0, 5]] for i in range(1001)]}
    refused(client.post("/search", json=many), 422, "strokes: expected at most 1,000 strokes, got 1,001")
    dense = {"strokes": [[list(range(20_001)), [0] * 20_001]]}
    refused(client.post("/search", json=dense), 422, "strokes: expected at most 20,000 points in all, got 20,001")


@pytest.mark.parametrize("body,status,needle", [
    ({"strokes": [[[0, 10, 20], [0, 10]]]}, 422, "strokes.0: expected [xs, ys] (or [xs, ys, ts]) lists of equal length"),
    ({"strokes": [[[0, 1e9], [0, 10]]]}, 422, "strokes.0: expected coordinates within ±1e+06"),
    ({"strokes": [[[0, 10]]]}, 422, "strokes.0: List should have at least 2 items"),
    ({"strokes": [[["a", "b"], [0, 1]]]}, 422, "strokes.0.0.0"),
    ({"strokes": []}, 422, "strokes: expected at least one stroke"),
    ({"strokes": [[[], []]]}, 422, "strokes: expected at least one stroke"),
    ({"strokes": [[[5, 5], [5, 5]]], "canvas": [1000, 1000], "fit": "canvas"}, 422, "expected ink on the sketch"),
    ({"strokes": [[[0, 10], [0, 10]]], "fit": "canvas"}, 422, "fit: 'canvas' places the drawing on its canvas"),
    ({"strokes": [[[0, 10], [0, 10]]], "fit": "middle"}, 422, "fit: Input should be 'bbox' or 'canvas'"),
    ({"strokes": [[[0, 10], [0, 10]]], "extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ({"strokes": [[[0, 10], [0, 10]]], "stroke_width": 3}, 422, "stroke_width: expected a canvas too"),
    ({"strokes": [[[0, 10], [0, 10]]], "canvas": [100, 100], "stroke_width": 60}, 422, "stroke_width: expected"),
    ({"strokes": [[[0, 10], [0, 10]]], "canvas": [0, 100]}, 422, "canvas: expected a width and height"),
    ({"strokes": [[[0, 10], [0, 10]]], "canvas": [100, 100, 3]}, 422, "canvas"),
    ({"drawing": [[[0, 10], [0, 10]]]}, 422, "strokes: Field required"),
    ([1, 2, 3], 422, "body: expected a JSON object"),
])
def test_bad_strokes_are_422_naming_the_field(client, body, status, needle):
    refused(client.post("/search", json=body), status, needle)


@pytest.mark.parametrize("text", ['{"strokes": [[[0, NaN], [0, 1]]]}', '{"strokes": [[[0, Infinity], [0, 1]]]}'])
def test_non_finite_coordinates_are_422(client, text):
    refused(raw(client, text.encode(), "application/json"), 422, "strokes.0.0.1")


def test_bodies_that_are_not_json_are_400(client):
    refused(raw(client, b"{not json", "application/json"), 400, "body: expected JSON")
    refused(raw(client, b"[" * 100_000 + b"]" * 100_000, "application/json"), 400, "body: expected JSON")
    refused(raw(client, b"\xff\xfe\x00garbage", "application/json"), 400, "body: expected JSON")


# ---- files ----------------------------------------------------------------------------------------
def test_unsupported_or_missing_content_type_is_415(client):
    refused(raw(client, b"hello", "text/plain"), 415, "Content-Type: expected application/json", "'text/plain'")
    r = client.post("/search", content=b"hello", headers={"Content-Type": ""})
    refused(r, 415, "got '(none)'")
    refused(client.post("/search", files={"file": ("x.tiff", b"II*\0", "image/tiff")}), 415, "image/tiff")


@pytest.mark.parametrize("data,ctype,needle", [
    (b"\x89PNG\r\n\x1a\n garbage", "image/png", "could not decode the image"),
    (b"", "image/png", "expected a sketch or photo file, got an empty body"),
    (png_bytes(draw=False), "image/png", "expected ink on the sketch"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "image/png", "could not decode the image"),
    (b"II*\x00\x08\x00\x00\x00", "image/jpeg", "could not decode the image"),  # a TIFF header: not an upload format
])
def test_undecodable_or_blank_images_are_422(client, data, ctype, needle):
    refused(raw(client, data, ctype), 422, needle)


SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">{}</svg>'


@pytest.mark.parametrize("svg,needle", [
    ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
     '<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0 L10 10"/><text>&xxe;</text></svg>',
     "svg: expected no <!DOCTYPE> or <!ENTITY> declaration"),
    ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
     '<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0 L10 10"/><desc>&lol2;</desc></svg>',
     "svg: expected no <!DOCTYPE>"),
    ('<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0 L10', "expected an SVG (XML) document"),
    ('<html><body/></html>', "root element: expected <svg>"),
    (SVG.format('<image href="http://example.invalid/x.png" width="10" height="10"/>'),
     "expected at least one <path>/<polyline>/<line>"),
    (SVG.format('<path d="M0 0 L1e999 5"/>'), "expected a"),
    (SVG.format("<g>" * 70 + '<path d="M0 0 L10 10"/>' + "</g>" * 70), "MAX_SVG_DEPTH"),
    (SVG.format('<polyline points="' + " ".join(f"{i % 100},{i % 7}" for i in range(21_000)) + '"/>'),
     "points: expected at most 20,000 points after flattening curves, got 21,000"),
    (SVG.format("".join(f'<path d="M{i} 0 L{i} 10"/>' for i in range(1001))),
     "strokes: expected at most 1,000 strokes, got 1,001"),
])
def test_bad_svg_is_422(client, svg, needle):
    refused(raw(client, svg.encode(), "image/svg+xml"), 422, needle)


def test_svg_external_references_are_never_fetched(client):
    """<image>/<use> pointing elsewhere are not drawn nor followed; the path alone is searched."""
    svg = SVG.format('<image href="http://127.0.0.1:9/x.png" width="50" height="50"/>'
                     '<use href="file:///etc/passwd#x"/><path d="M10 10 L90 90 M90 10 L10 90" stroke="black"/>')
    assert raw(client, svg.encode(), "image/svg+xml").status_code == 200


def test_multipart_without_a_file_or_with_other_fields_is_422(client):
    refused(client.post("/search", data={"k": "5"}, files={"file": ("a.png", png_bytes(), "image/png")}), 422,
            "form field 'k': unknown; expected only 'file'")
    refused(client.post("/search", files={"note": (None, "x")}), 422, "form field 'note': unknown")
    refused(client.post("/search", files={"file": (None, "not a file")}), 422, "file: expected a file field named 'file'")
    refused(client.post("/search", data={"note": "x"}), 415, "application/x-www-form-urlencoded")
    r = client.post("/search", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code in (400, 422) and "\n" not in r.json()["error"]


def test_unknown_query_parameters_are_422(client):
    refused(client.post("/search?k=5&top=3", json={"strokes": [[[0, 9], [0, 9]]]}), 422,
            "query parameter 'top': unknown; expected k, class, direction, nprobe")


# ---- nothing breaks, nothing changes ----------------------------------------------------------------
def test_a_barrage_of_bad_requests_leaves_the_server_up_and_the_index_unchanged(client, index_dir):
    before = folder_digest(index_dir)
    bad = [
        ("image/png", huge_png(30_000, 30_000)), ("image/png", b"\x89PNG"), ("image/svg+xml", b"<svg"),
        ("application/json", b'{"strokes": "x"}'), ("application/json", b"[" * 5000),
        ("image/jpeg", b"\xff\xd8\xff\xe0" + b"\0" * 5000), ("image/gif", b"GIF89a" + b"\xff" * 300),
        ("image/webp", b"RIFF\x10\0\0\0WEBPVP8 "),
    ]
    for ctype, data in bad * 3:
        r = raw(client, data, ctype)
        assert 400 <= r.status_code < 500, (ctype, r.status_code, r.text[:200])
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/search?k=2", content=png_bytes(), headers={"Content-Type": "image/png"}).status_code == 200
    assert folder_digest(index_dir) == before


def test_overload_is_503_with_retry_after(index_dir, monkeypatch):
    import time

    import anyio
    import httpx

    from sbirkit.serve import Limits, batching, create_app

    real = batching.run_batch

    def slow(jobs):  # the model is busy for a second with the first query
        time.sleep(1.0)
        return real(jobs)
    monkeypatch.setattr(batching, "run_batch", slow)
    app = create_app(index_dir, limits=Limits(max_pending=1), batch_wait_ms=0, max_batch=64)
    body = json.dumps({"strokes": [[[0, 50, 100], [0, 100, 0]]]})

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            async def one():
                return await c.post("/search", content=body, headers={"Content-Type": "application/json"})
            return await _gather([one for _ in range(6)])

    async def _gather(fns):
        results = [None] * len(fns)

        async def run(i, fn):
            results[i] = await fn()
        async with anyio.create_task_group() as tg:
            for i, fn in enumerate(fns):
                tg.start_soon(run, i, fn)
        return results

    codes = sorted(r.status_code for r in anyio.run(go))
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
    busy = next(r for r in anyio.run(go) if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"].startswith("server busy:")
