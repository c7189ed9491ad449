"""The page in a real browser, against `sbirkit serve` run as a subprocess on a free local port.

Playwright drives Debian's Chromium (`apt-get install chromium`; `./dev test` installs it when it
runs as root): Playwright's own browser download is not available offline. Without Chromium or
the playwright package the browser test skips and says how to enable it; the raw-HTTP checks of
the real server still run.
"""

from __future__ import annotations

import http.client
import io
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image
from serve_helpers import CLASSES, GALLERY_PER_CLASS

CHROMIUM = os.environ.get("SBIRKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HOW_TO_ENABLE = (f"install Debian's Chromium (apt-get install chromium; './dev test' does it when run as root) "
                 f"and the dev extra's playwright, or point SBIRKIT_CHROMIUM at a Chromium binary (looked for {CHROMIUM})")


@pytest.fixture(scope="module")
def server(index_dir):
    """`python -m sbirkit serve --index IDX --port 0` in a subprocess; yields its base URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sbirkit", "serve", "--index", str(index_dir), "--port", "0",
                             "--no-access-log", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url, seen = None, []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("sbirkit serve: http://"):
                url = line.split()[2]
                break
        assert url is not None, "".join(seen)
        assert "localhost only" in seen[-1]
        _wait_healthy(url)
        yield url.rstrip("/")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(url: str) -> None:
    parts = urlsplit(url)
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url}: /health never answered")


def _get(url: str, raw_path: str) -> int:
    """Status of a GET with the path sent exactly as given (no client-side normalising)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("GET", raw_path, skip_accept_encoding=True)
    conn.endheaders()
    return conn.getresponse().status


def test_the_real_server_decodes_ids_once_and_serves_only_indexed_items(server, synth):
    assert _get(server, "/items/house%2F0003.png/thumbnail") == 200
    real = str((synth / "photo" / "house" / "0003.png").resolve())
    for path in ("/items/house%252F0003.png/thumbnail", "/items/..%2F..%2F..%2Fetc%2Fpasswd/thumbnail",
                 "/items/../../../etc/passwd", "/items/%2Fetc%2Fpasswd/thumbnail", f"/items{real}/thumbnail",
                 "/items/house%EF%BC%8F0003.png/thumbnail", "/items/house%2F0003.png%00/thumbnail",
                 "/static/..%2F..%2Fcli.py", "/static/%2E%2E/app.py"):
        assert _get(server, path) == 404, path
    parts = urlsplit(server)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/health", headers={"Host": "attacker.example"})
    assert conn.getresponse().status == 400  # bound to loopback: other Host names are refused


def _browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason=f"playwright is not installed: {HOW_TO_ENABLE}")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        pytest.skip(f"Chromium not found: {HOW_TO_ENABLE}")
    return sync_api


def _star_strokes():
    """A star as a person of the synthetic set drew it (instance 1, user 'neat', unseen in training),
    on the unit canvas, and its line width at 64 px."""
    from sbirkit.data.synthetic.dataset import SyntheticSBIR

    data = SyntheticSBIR(num_classes=CLASSES, photos_per_class=GALLERY_PER_CLASS, image_size=32, seed=7)
    sample = next(s for s in data.sketches() if s.key == "sketch/star/0001-1")
    return data.read(sample).strokes, data.styles[data.user_index(sample.user_id)].width


def test_draw_a_star_and_see_stars(server, synth, tmp_path):
    sync_api = _browser()
    strokes, width64 = _star_strokes()
    origin = server
    outside, requests = [], []
    with sync_api.sync_playwright() as pw:
        # a fresh profile folder for this run (Playwright passes it as --user-data-dir)
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1100, "height": 900}, device_scale_factor=1)
        try:

            def guard(route):
                url = route.request.url
                requests.append(url)
                if url.startswith(origin + "/") or url.startswith("blob:") or url.startswith("data:"):
                    route.continue_()
                else:  # nothing may leave the server: record it and stop it
                    outside.append(url)
                    route.abort()
            context.route("**/*", guard)
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(origin + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert f"{CLASSES * GALLERY_PER_CLASS} items" in page.locator("#info").inner_text()

            # draw the star with the mouse, at the line width its drawer used
            page.locator("#width").fill(str(round(width64 * 512 / 64)))
            box = page.locator("#pad").bounding_box()
            for stroke in strokes:
                points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke.tolist()]
                page.mouse.move(*points[0])
                page.mouse.down()
                for p in points[1::2]:
                    page.mouse.move(*p)
                page.mouse.up()
            _wait_for_results(page)
            classes = page.eval_on_selector_all("#results li", "els => els.map(e => e.dataset.class)")
            assert len(classes) == 24
            assert classes[0] == "star" and classes[:5].count("star") >= 3, classes[:10]
            page.wait_for_function("() => [...document.querySelectorAll('#results li img')].slice(0, 5)"
                                   ".every(e => e.complete && e.naturalWidth > 0)", timeout=10_000)
            sizes = page.eval_on_selector_all("#results li img", "els => els.slice(0, 5).map(e => e.naturalWidth)")
            assert len(sizes) == 5 and min(sizes) >= 96  # the thumbnails arrived (enlarged from 32 px)
            assert "results in" in page.locator("#status").inner_text()
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot))
            assert Image.open(shot).size == (1100, 900)
            if os.environ.get("SBIRKIT_SCREENSHOT"):
                shutil.copy(shot, os.environ["SBIRKIT_SCREENSHOT"])

            # the class filter narrows the grid to one class
            page.select_option("#class", "house")
            page.wait_for_function("() => [...document.querySelectorAll('#results li')].length === "
                                   f"{GALLERY_PER_CLASS} && [...document.querySelectorAll('#results li')]"
                                   ".every(e => e.dataset.class === 'house')", timeout=15_000)
            page.select_option("#class", "")

            # a file the server refuses: a blank page -> a clear message, the grid is kept
            blank = io.BytesIO()
            Image.new("L", (300, 300), 255).save(blank, format="PNG")
            page.set_input_files("#file", files=[{"name": "blank.png", "mimeType": "image/png",
                                                  "buffer": blank.getvalue()}])
            page.wait_for_selector("#error:not([hidden])", timeout=15_000)
            message = page.locator("#error").inner_text()
            assert message.startswith("The server refused this query (422): ") and "expected ink" in message

            # drag and drop a sketch file onto the drawing area
            star_png = (synth / "sketch" / "star" / "0001-1.png").read_bytes()
            page.evaluate("""async (bytes) => {
                const file = new File([new Uint8Array(bytes)], 'star.png', {type: 'image/png'});
                const dt = new DataTransfer();
                dt.items.add(file);
                document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
            }""", list(star_png))
            page.wait_for_selector("#error[hidden]", state="attached", timeout=15_000)
            _wait_for_results(page)
            dropped = page.eval_on_selector_all("#results li", "els => els.map(e => e.dataset.class)")
            assert dropped[0] == "star" and not page.locator("#preview").is_hidden()

            # keyboard only: Clear, then draw a square with the arrows and Space
            page.locator("#clear").focus()
            page.keyboard.press("Enter")
            page.wait_for_selector("#empty:not([hidden])", timeout=10_000)
            page.locator("#pad").focus()
            page.keyboard.press("Space")
            for key in ("ArrowRight", "ArrowDown", "ArrowLeft", "ArrowUp"):
                for _ in range(4):
                    page.keyboard.press(f"Shift+{key}")
            page.keyboard.press("Space")
            _wait_for_results(page)
            page.keyboard.press("Control+z")
            page.wait_for_selector("#empty:not([hidden])", timeout=10_000)
            assert errors == []
        finally:
            context.close()
    assert outside == [], outside
    assert requests and all(u.startswith(origin + "/") or u.startswith(("blob:", "data:")) for u in requests)
    assert any("/search?" in u for u in requests) and any("/thumbnail" in u for u in requests)


def _circle(cx, cy, r, n=24):
    return [(cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n)) for i in range(n + 1)]


# shapes of our own (not the synthetic generator's), as (x, y) points on a unit square, y down
MY_SHAPES = {
    "house": [[(0.2, 0.45), (0.2, 0.9), (0.8, 0.9), (0.8, 0.45), (0.2, 0.45)], [(0.12, 0.5), (0.5, 0.1), (0.88, 0.5)],
              [(0.42, 0.9), (0.42, 0.65), (0.58, 0.65), (0.58, 0.9)]],
    "tree": [_circle(0.5, 0.35, 0.27), [(0.45, 0.6), (0.45, 0.95), (0.55, 0.95), (0.55, 0.6)]],
    "star": [[(0.5 + (0.45 if k % 2 == 0 else 0.19) * math.sin(math.pi * k / 5),
               0.53 - (0.45 if k % 2 == 0 else 0.19) * math.cos(math.pi * k / 5)) for k in range(11)]],
}
# where on the drawing area, how large (a fraction of its side) and with which line width
PLACES = [((0.5, 0.5), 0.7, 18), ((0.3, 0.32), 0.35, 6), ((0.58, 0.55), 0.85, 40)]


def test_draw_shapes_of_my_own_with_the_mouse(server, tmp_path):
    """Three shapes drawn with the mouse, each small in a corner, mid-sized in the middle and large
    with a thick pen: most of the top 8 results (a class has 8 photos) are of the drawn class, and
    where and how large it was drawn, and the line width, do not change the results (the page's
    strokes are framed like the training drawings: docs/serve.md, "One rasterisation")."""
    sync_api = _browser()
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1100, "height": 900}, device_scale_factor=1)
        try:
            page = context.new_page()
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            box = page.locator("#pad").bounding_box()
            for name, strokes in MY_SHAPES.items():
                seen = []
                for (cx, cy), size, width in PLACES:
                    page.locator("#clear").click()
                    page.wait_for_selector("#empty:not([hidden])", timeout=10_000)
                    page.locator("#width").fill(str(width))
                    for stroke in strokes:
                        points = [(box["x"] + (cx + (x - 0.5) * size) * box["width"],
                                   box["y"] + (cy + (y - 0.5) * size) * box["height"]) for x, y in stroke]
                        page.mouse.move(*points[0])
                        page.mouse.down()
                        for p in points[1:]:
                            page.mouse.move(*p, steps=3)
                        page.mouse.up()
                    _wait_for_results(page)
                    top = page.eval_on_selector_all("#results li", "els => els.slice(0, 8).map(e => e.dataset.class)")
                    assert len(top) == 8 and top.count(name) >= 5, (name, size, width, top)
                    seen.append(page.eval_on_selector_all("#results li", "els => els.slice(0, 8).map(e => e.dataset.id)"))
                for other in seen[1:]:  # the same photos, up to sub-pixel differences in the pointer's path
                    assert len(set(other) & set(seen[0])) >= 6, (name, seen)
        finally:
            context.close()


def _wait_for_results(page) -> None:
    """Wait until the debounced search has run and its answer is shown (no request in flight)."""
    page.wait_for_timeout(400)  # past the 250 ms debounce
    page.wait_for_function("() => !document.querySelector('.results').classList.contains('busy') && "
                           "document.querySelectorAll('#results li').length > 0", timeout=20_000)
