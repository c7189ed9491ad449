"""Query sketch files, gallery folders, embedding with skip-and-report, result grids."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from sbirkit.data import DataError, EmptySketchError
from sbirkit.index import (
    GalleryIndex,
    draw_grid,
    draw_grid_rows,
    embed_image_files,
    grid_size,
    image_items,
    list_image_files,
    load_query_sketch,
)
from sbirkit.index.grid import BORDER, PAD

SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100" width="100" height="100">
<path d="M 10 10 L 90 10 L 90 90" fill="none" stroke="black"/></svg>"""


def _ink(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L")) < 128


# ---- query sketches ---------------------------------------------------------------------------
def test_svg_query_is_rasterised_on_its_canvas(tmp_path):
    p = tmp_path / "q.svg"
    p.write_text(SVG)
    img = load_query_sketch(p, size=100)
    assert img.mode == "RGB" and img.size == (100, 100)
    ink = _ink(img)
    # the viewBox maps 1:1 onto 100 px: ink along y=10 (x 10..90) and x=90 (y 10..90), none elsewhere
    assert ink[10, 20:80].all() and ink[20:80, 90].all()
    assert not ink[40:60, 20:60].any() and not ink[95:, :].any()


def test_ndjson_query_picks_the_drawing_by_index(tmp_path):
    p = tmp_path / "cat.ndjson"
    horizontal = {"word": "cat", "drawing": [[[0, 100], [50, 50], [0, 1]]]}
    vertical = {"word": "cat", "drawing": [[[50, 50], [0, 100]]]}
    p.write_text(json.dumps(horizontal) + "\n\n" + json.dumps(vertical) + "\n")
    rows = _ink(load_query_sketch(p, size=64)).any(axis=1).sum()
    cols = _ink(load_query_sketch(p, size=64, index=1)).any(axis=0).sum()
    assert rows <= 8 and cols <= 8  # a thin horizontal line, then a thin vertical one
    assert _ink(load_query_sketch(p, size=64)).any(axis=0).sum() > 40
    with pytest.raises(
        DataError, match=r"cat.ndjson: index: expected a drawing number below 2, got 5"
    ):
        load_query_sketch(p, index=5)


def test_empty_ndjson_drawing_is_refused_naming_the_file(tmp_path):
    p = tmp_path / "empty.ndjson"
    p.write_text(json.dumps({"word": "cat", "drawing": []}) + "\n")
    with pytest.raises(EmptySketchError, match="empty.ndjson") as e:
        load_query_sketch(p)
    assert "\n" not in str(e.value)
    p.write_text(json.dumps({"word": "cat"}) + "\n")
    with pytest.raises(DataError, match=r"empty.ndjson:1: drawing"):
        load_query_sketch(p)


def test_blank_png_is_refused_and_inked_png_loads(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    with pytest.raises(EmptySketchError, match="blank.png: pixels: expected ink"):
        load_query_sketch(blank)
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(clear)  # transparent black = nothing drawn
    with pytest.raises(EmptySketchError, match="clear.png"):
        load_query_sketch(clear)


def test_transparent_png_is_composited_on_white_and_padded_square(tmp_path):
    arr = np.zeros((40, 80, 4), np.uint8)  # fully transparent black, 80 wide x 40 high
    arr[18:22, :, 3] = 255  # one opaque black bar across the middle
    p = tmp_path / "q.png"
    Image.fromarray(arr, "RGBA").save(p)
    img = load_query_sketch(p, size=80)
    assert img.size == (80, 80) and img.mode == "RGB"
    ink = _ink(img)
    assert np.asarray(img)[:10].min() > 240  # the padding is white, not black
    assert ink[38:42, 5:75].all() and ink.sum() < 80 * 8


def test_white_on_black_sketch_is_inverted(tmp_path):
    arr = np.zeros((32, 32), np.uint8)
    arr[16, 4:28] = 255
    p = tmp_path / "inv.jpg"
    Image.fromarray(arr).save(p, quality=100)
    ink = _ink(load_query_sketch(p, size=32))
    assert ink[16, 6:26].all() and ink.sum() < 32 * 4


def test_unknown_extension_and_missing_file(tmp_path):
    p = tmp_path / "sketch.pdf"
    p.write_bytes(b"%PDF")
    with pytest.raises(DataError, match=r"sketch.pdf: extension: expected one of .*got '.pdf'"):
        load_query_sketch(p)
    with pytest.raises(DataError, match="nope.png: expected a sketch file"):
        load_query_sketch(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="bad.png: could not decode"):
        load_query_sketch(bad)


def test_real_tuberlin_svg_and_quickdraw_ndjson(shared_data):
    svg = min((shared_data / "tuberlin_svg").rglob("*.svg"))
    img = load_query_sketch(svg, size=128)
    assert img.size == (128, 128) and 0.005 < _ink(img).mean() < 0.5
    nd = shared_data / "quickdraw_raw" / "cat.ndjson"
    img = load_query_sketch(nd, size=128, index=3)
    assert img.size == (128, 128) and 0.005 < _ink(img).mean() < 0.5


# ---- gallery folders ----------------------------------------------------------------------------
def _photo(path, colour, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_list_image_files_sorted_filtered_and_labelled(tmp_path):
    _photo(tmp_path / "dog" / "b.JPG", (0, 0, 255))
    _photo(tmp_path / "cat" / "z.png", (255, 0, 0))
    _photo(tmp_path / "cat" / "a.png", (0, 255, 0))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    files = list_image_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "cat/a.png",
        "cat/z.png",
        "dog/b.JPG",
    ]
    assert list_image_files(tmp_path, recursive=False) == []
    items = image_items(files, tmp_path)
    assert [(i["id"], i["class_name"]) for i in items] == [
        ("cat/a.png", "cat"),
        ("cat/z.png", "cat"),
        ("dog/b.JPG", "dog"),
    ]
    _photo(tmp_path / "loose.png", (9, 9, 9))
    files = list_image_files(tmp_path)
    assert "class_name" not in image_items(files, tmp_path)[0]  # mixed depths: no folder labels
    with pytest.raises(DataError, match="missing: expected a folder of images"):
        list_image_files(tmp_path / "missing")


def test_list_image_files_counts_real_cifar_layout(shared_data):
    root = shared_data / "cifar10" / "train"
    files = list_image_files(root)
    items = image_items(files, root)
    assert len(files) == 10_000
    assert sorted({i["class_name"] for i in items}) == sorted(p.name for p in root.iterdir())
    assert sum(i["class_name"] == "cat" for i in items) == 1000


def test_embed_image_files_skips_and_reports_corrupt_files(tmp_path, caplog):
    colours = {"a": (255, 0, 0), "b": (0, 255, 0), "d": (0, 0, 255), "e": (255, 255, 0)}
    for name, c in colours.items():
        _photo(tmp_path / f"{name}.png", c)
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.new("RGB", (30, 30), (10, 10, 10)).save(tmp_path / "f.jpg")
    (tmp_path / "f.jpg").write_bytes((tmp_path / "f.jpg").read_bytes()[:200])  # cut-off JPEG
    paths = list_image_files(tmp_path)
    seen_shapes = []

    def mean_colour(x: torch.Tensor) -> torch.Tensor:
        seen_shapes.append(tuple(x.shape))
        return x.mean(dim=(2, 3))

    with caplog.at_level(logging.WARNING, logger="sbirkit.index.image_folders"):
        emb, ok, failures = embed_image_files(
            mean_colour, paths, image_size=16, batch_size=3, progress=False
        )
    assert [p.name for p in ok] == ["a.png", "b.png", "d.png", "e.png"]
    assert [p.name for p, _ in failures] == ["c.png", "f.jpg"]
    assert all(reason for _, reason in failures)
    assert "skipped 2 of 6 image files" in caplog.text
    assert emb.dtype == np.float32 and emb.shape == (4, 3)
    expected = np.array([colours[p.stem] for p in ok], np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(emb, expected, atol=1e-6)
    assert seen_shapes == [(3, 3, 16, 16), (1, 3, 16, 16)]

    g = GalleryIndex.build(emb, image_items(ok, tmp_path), {"embed_dim": 3}, progress=False)
    assert g.search(expected[2], 1).items_for(0)[0]["id"] == "d.png"


# ---- result grids -------------------------------------------------------------------------------
def test_draw_grid_size_and_correctness_frames(tmp_path):
    q = Image.new("RGB", (40, 40), (255, 255, 255))
    _photo(tmp_path / "r.png", (128, 128, 128), size=(30, 60))
    results = [
        (Image.new("RGB", (50, 50), (200, 200, 255)), "0.91 cat", True),
        (tmp_path / "r.png", "0.85 a very long caption that will not fit", False),
        (Image.new("RGB", (50, 50), (255, 255, 255)), "0.80", None),
    ]
    out = draw_grid(q, results, tmp_path / "grid.png", thumb=48)
    img = Image.open(out)
    assert img.format == "PNG" and img.size == grid_size(3, 48) == (6 + 4 * 54 + 12, 48 + 16 + 12)
    px = np.asarray(img.convert("RGB")).astype(int)
    x_first = PAD + 1 * (48 + PAD) + 12  # left edge of result 1 (after the query and the gap)
    green, red = px[PAD + 20, x_first + 1], px[PAD + 20, x_first + 48 + PAD + 1]
    assert green[1] > 120 and green[0] < 80 and red[0] > 180 and red[1] < 80
    assert px[PAD + 20, x_first + BORDER + 2].tolist() == [200, 200, 255]  # image inside the frame


def test_draw_grid_rows_stacks_queries(tmp_path):
    q = Image.new("RGB", (20, 20), "white")
    rows = [(q, [(q, "a", True)] * 4), (q, [(q, "b", None)] * 2), (q, [])]
    img = Image.open(draw_grid_rows(rows, tmp_path / "sub" / "rows.png", thumb=32))
    assert img.size == grid_size(4, 32, rows=3) == (6 + 5 * 38 + 12, 3 * (32 + 16 + 6) + 6)
    with pytest.raises(ValueError, match="at least one"):
        draw_grid_rows([], tmp_path / "x.png")
