"""One rasterisation for training and for the page.

The same strokes go through the dataset path (a Quick, Draw! ``.ndjson`` file read by the
``quickdraw-ndjson`` loader, ``load_image`` at the model's size: what training and evaluation
see) and through the server's JSON-strokes path (placed on the page's canvas as a person would
draw them, at the page's line width: ``parse_strokes_json`` then ``strokes_image``). The two
images must agree on where the ink is (centring, margins), how much of it there is (the line
width relative to the image) and pixel by pixel, within the tolerances below, for any canvas
size, placement, drawing size and line width the page allows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbirkit.data import Strokes, create_dataset
from sbirkit.serve.config import Limits
from sbirkit.serve.page_drawing import page_body
from sbirkit.serve.queries import parse_strokes_json, strokes_image

#: Tolerances: the ink's bounding box edges (centring and margins) within one pixel of the
#: image, total ink (darkness summed: the normalised line width) within 3 %, mean absolute grey
#: difference at most 3 levels of 255, and at most 1 % of the pixels more than 96 levels apart.
#: What is left is sub-pixel: the page rounds points to 0.1 canvas px and the rasteriser rounds
#: line ends to a quarter of an output pixel, so an edge may land one supersampled pixel over.
EDGE_PX = 1.0
INK_RATIO = 0.03
MEAN_ABS = 3.0
FAR_FRACTION = 0.01

# screen-pixel drawings in the Quick, Draw! raw form: a house, a wide fish, a tall tree
DRAWINGS = {
    "house": [[[100, 100, 300, 300, 100], [400, 200, 200, 400, 400]], [[90, 200, 310], [200, 80, 200]],
              [[180, 180, 220, 220], [400, 320, 320, 400]]],
    "fish": [[[50, 150, 400, 520, 400, 150, 50], [200, 150, 140, 200, 260, 250, 200]],
             [[520, 600, 600, 520], [200, 130, 270, 200]], [[120], [185]]],
    "tree": [[[300, 300], [700, 450]], [[300, 200, 250, 180, 300, 420, 350, 400, 300],
                                        [450, 450, 350, 350, 120, 350, 350, 450, 450]]],
}
PAGES = [  # canvas side, line width (the page's slider), drawing size (fraction of the canvas), centre
    (512, 18, 0.6, (0.5, 0.5)),
    (512, 4, 0.3, (0.25, 0.7)),
    (512, 48, 0.9, (0.52, 0.48)),
    (300, 10, 0.45, (0.7, 0.3)),
    (1024, 30, 0.75, (0.4, 0.6)),
]


def _write_ndjson(folder, drawings):
    folder.mkdir(parents=True, exist_ok=True)
    for name, drawing in drawings.items():
        (folder / f"{name}.ndjson").write_text(json.dumps({"word": name, "key_id": "1", "drawing": drawing}) + "\n")
    return create_dataset("quickdraw-ndjson", str(folder))


def _ink_box(grey: np.ndarray) -> np.ndarray:
    """Sub-pixel ink bounding box (left, top, right, bottom) from the darkness profile of each axis."""
    ink = (255.0 - grey) / 255.0
    edges = []
    for axis in (0, 1):  # columns (x), rows (y)
        profile = ink.sum(axis=axis)
        cum = np.cumsum(profile) / profile.sum()
        edges.append((np.searchsorted(cum, 0.002), np.searchsorted(cum, 0.998)))
    (x0, x1), (y0, y1) = edges
    return np.array([x0, y0, x1, y1], dtype=float)


def compare(dataset_img: np.ndarray, page_img: np.ndarray) -> dict:
    a = dataset_img.astype(float)
    b = page_img.astype(float)
    ink_a, ink_b = (255 - a).sum(), (255 - b).sum()
    return {"edges": np.abs(_ink_box(a) - _ink_box(b)).max(), "ink_ratio": abs(ink_b / ink_a - 1),
            "mean_abs": np.abs(a - b).mean(), "far": (np.abs(a - b) > 96).mean()}


def _check(ds, size):
    failures = []
    for sample in ds.sketches():
        train = np.asarray(ds.load_image(sample, size).convert("L"))
        strokes = ds.load_strokes(sample)
        for canvas, width, fill, centre in PAGES:
            body = json.dumps(page_body(strokes, canvas, width, fill, centre)).encode()
            page = strokes_image(parse_strokes_json(body, Limits()), size).image[..., 0]
            got = compare(train, page)
            if (got["edges"] > EDGE_PX or got["ink_ratio"] > INK_RATIO or got["mean_abs"] > MEAN_ABS
                    or got["far"] > FAR_FRACTION):
                failures.append((sample.key, size, canvas, width, fill, {k: round(float(v), 3) for k, v in got.items()}))
    return failures


@pytest.mark.parametrize("size", [32, 64, 224])
def test_the_page_and_the_dataset_draw_the_same_image(tmp_path, size):
    ds = _write_ndjson(tmp_path / "qd", DRAWINGS)
    assert _check(ds, size) == []


def test_real_quickdraw_drawings_too(tmp_path, shared_data):
    lines = {}
    for name in ("cat", "airplane", "sailboat"):
        with open(shared_data / "quickdraw_raw" / f"{name}.ndjson", encoding="utf-8") as fh:
            lines[name] = json.loads(fh.readline())["drawing"]
    ds = _write_ndjson(tmp_path / "qd", lines)
    for size in (32, 64):
        assert _check(ds, size) == []


def test_the_comparison_can_fail():
    """The measures see a drawing half the size, shifted, or drawn twice as thick."""
    strokes = Strokes([np.array(DRAWINGS["house"][0], dtype=float).T])
    from sbirkit.data.strokes import rasterize

    base = np.asarray(rasterize(strokes, 64, 2.0))
    small = np.asarray(rasterize(strokes, 64, 2.0, padding=0.25))
    thick = np.asarray(rasterize(strokes, 64, 4.0))
    shifted = np.roll(base, 2, axis=1)
    assert compare(base, base) == {"edges": 0, "ink_ratio": 0, "mean_abs": 0, "far": 0}
    assert compare(base, small)["edges"] > 5 and compare(base, small)["mean_abs"] > MEAN_ABS
    assert compare(base, thick)["ink_ratio"] > 0.5 and compare(base, thick)["far"] > FAR_FRACTION
    assert compare(base, shifted)["edges"] == 2 > EDGE_PX and compare(base, shifted)["far"] > FAR_FRACTION
