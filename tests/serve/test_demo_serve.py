"""What the demo writes is servable: `sbirkit serve --index runs/demo/index` from a fresh clone."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from sbirkit.demo import run_demo
from sbirkit.serve import create_app


def test_the_demo_index_serves_photos_with_thumbnails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_demo("runs/demo", quick=True)  # relative, as ./dev demo runs it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the index must not depend on the folder the demo ran in
    sketch = Image.new("L", (256, 256), 255)
    ImageDraw.Draw(sketch).polygon([(128, 20), (160, 100), (240, 100), (175, 150), (200, 235), (128, 185),
                                    (56, 235), (81, 150), (16, 100), (96, 100)], outline=0, width=8)
    buf = io.BytesIO()
    sketch.save(buf, format="PNG")
    with TestClient(create_app(tmp_path / "runs" / "demo" / "index")) as c:
        info = c.get("/info").json()
        assert info["index"]["items"] == 12 and info["model"]["run"] == "demo/run"
        hits = c.post("/search?k=5", content=buf.getvalue(), headers={"Content-Type": "image/png"}).json()["results"]
        assert len(hits) == 5 and all(h["class_name"] and h["thumbnail"] for h in hits)
        thumb = c.get(f"/{hits[0]['thumbnail']}")
        assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (128, 128)
        page = c.get("/")
        assert page.status_code == 200 and "Draw to search" in page.text
