"""A dot is not a sketch (issue 21's probe): one dark pixel on a cell boundary of a large page, or
a one-point Quick, Draw! drawing, used to pass the ink minimum and be searched. Small but real
drawings must still be accepted."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sbirkit.data.records import EmptySketchError
from sbirkit.index.files import MIN_INK_SPAN, ink_stats, load_query_sketch


def _png(path, draw, side=512):
    img = Image.new("L", (side, side), 255)
    draw(img)
    img.save(path)
    return path


def _load(path, size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_query_sketch(path, size=size)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_one_dark_pixel_on_a_cell_boundary_is_refused(tmp_path, size):
    p = _png(tmp_path / "dot.png", lambda img: img.putpixel((256, 256), 0))
    with pytest.raises(EmptySketchError, match="dot.png: pixels: expected ink on the sketch"):
        _load(p, size)


def test_the_dot_used_to_pass_at_32_px_and_now_fails_on_its_span(tmp_path):
    p = _png(tmp_path / "dot.png", lambda img: img.putpixel((256, 256), 0))
    with pytest.raises(EmptySketchError, match=rf"spanning at least {MIN_INK_SPAN} pixels, got a dot 2 pixel"):
        _load(p, 32)


@pytest.mark.parametrize("size", [32, 64, 128, 224])
def test_a_one_point_ndjson_drawing_is_refused(tmp_path, size):
    p = tmp_path / "one.ndjson"
    p.write_text(json.dumps({"word": "cat", "drawing": [[[10], [10]]]}) + "\n")
    with pytest.raises(EmptySketchError, match="one.ndjson: strokes: expected ink on the sketch that draws a line"):
        _load(p, size)
    q = tmp_path / "same.ndjson"  # several points, all in one place
    q.write_text(json.dumps({"word": "cat", "drawing": [[[10, 10, 10], [20, 20, 20]], [[10], [20]]]}) + "\n")
    with pytest.raises(EmptySketchError, match="a dot"):
        _load(q, size)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_small_real_drawings_are_kept(tmp_path, size):
    # a short stroke in the corner of a big page, and a tiny circle: drawings, however small
    line = _png(tmp_path / "line.png", lambda img: ImageDraw.Draw(img).line([20, 20, 140, 20], fill=0, width=3))
    assert (np.asarray(_load(line, size).convert("L")) < 128).any()
    ring = _png(tmp_path / "ring.png", lambda img: ImageDraw.Draw(img).ellipse([240, 240, 272, 272], outline=0,
                                                                                width=2))
    assert ink_stats(_load(ring, size).convert("L")).ink_span >= MIN_INK_SPAN
    two = tmp_path / "two.ndjson"  # a two-point stroke is a line, fitted to the image
    two.write_text(json.dumps({"word": "line", "drawing": [[[0, 30], [0, 0]]]}) + "\n")
    assert ink_stats(_load(two, size).convert("L")).has_ink


def test_ink_span_is_measured_between_the_outermost_ink_pixels():
    page = np.full((64, 64), 250, np.uint8)
    page[10, 5:60] = 20
    assert ink_stats(page).ink_span == 55
    page = np.full((64, 64), 250, np.uint8)
    page[30:32, 30:32] = 0  # a 2x2 block: enough pixels at this size, but a dot
    s = ink_stats(page)
    assert (s.ink_pixels, s.min_ink_pixels, s.ink_span, s.has_ink) == (4, 5, 2, False)
    assert ink_stats(np.full((8, 8), 255, np.uint8)).ink_span == 0
