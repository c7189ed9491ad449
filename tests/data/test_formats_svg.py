"""SVG parsing: every path command against hand-computed coordinates, transforms, real files."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from PIL import Image

from sbirkit.data import DataError, EmptySketchError, rasterize
from sbirkit.data.svg import parse_path_d, parse_svg, parse_transform, read_svg


def svg(body: str, attrs: str = 'viewBox="0 0 100 100"') -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" {attrs}>{body}</svg>'


def strokes_of(d: str) -> list[np.ndarray]:
    return parse_svg(svg(f'<path d="{d}"/>'), "t.svg").strokes


def bernstein(ctrl, t):
    """Reference Bézier evaluation written out term by term (degree 2 or 3)."""
    p = [np.asarray(c, float) for c in ctrl]
    if len(p) == 3:
        return (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t**2 * p[2]
    return (
        (1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t**2 * p[2] + t**3 * p[3]
    )


def assert_on_curve(points: np.ndarray, ctrl) -> None:
    """points[k] == B(k / n) for n = len(points) - 1 (uniform sampling in t, ends included)."""
    n = len(points) - 1
    assert n >= 8
    expected = np.stack([bernstein(ctrl, k / n) for k in range(n + 1)])
    np.testing.assert_allclose(points, expected, atol=1e-4)


# ---- lines --------------------------------------------------------------------------------------
def test_line_commands_absolute_and_relative():
    (s,) = strokes_of("M10 20 L30 40 l5 -5 H50 h-10 V0 v10 Z")
    expected = [(10, 20), (30, 40), (35, 35), (50, 35), (40, 35), (40, 0), (40, 10), (10, 20)]
    np.testing.assert_allclose(s, expected)


def test_implicit_repeats_separators_and_number_forms():
    (a,) = strokes_of("M0,0 10,0,10 10")  # pairs after M are implicit linetos
    np.testing.assert_allclose(a, [(0, 0), (10, 0), (10, 10)])
    (b,) = strokes_of("m1 1 2 2 l1-2.5e1")  # after m they are relative; '-' splits numbers
    np.testing.assert_allclose(b, [(1, 1), (3, 3), (4, -22)])
    (c,) = strokes_of("M.5.5L-1.5e-3 +2E1")
    np.testing.assert_allclose(c, [(0.5, 0.5), (-0.0015, 20)], rtol=1e-6)


def test_each_moveto_starts_a_stroke_and_bare_movetos_draw_nothing():
    s = strokes_of("M0 0 L1 1 M5 5 L6 6 m1 1 l1 0")
    assert len(s) == 3
    np.testing.assert_allclose(s[1], [(5, 5), (6, 6)])
    np.testing.assert_allclose(s[2], [(7, 7), (8, 7)])
    # QMUL-V2 style: an absolute M immediately followed by a relative m
    (only,) = strokes_of("M10, 10 m0.0, 2.0 l3.0, 0.0")
    np.testing.assert_allclose(only, [(10, 12), (13, 12)])


def test_drawing_after_close_starts_a_new_subpath_at_its_start():
    s = strokes_of("M0 0 L4 0 L4 4 z l0 5")
    assert len(s) == 2
    np.testing.assert_allclose(s[0], [(0, 0), (4, 0), (4, 4), (0, 0)])
    np.testing.assert_allclose(s[1], [(0, 0), (0, 5)])


# ---- curves -------------------------------------------------------------------------------------
def test_cubic_and_smooth_cubic_follow_the_bezier_formula():
    (s,) = strokes_of("M0 0 C0 10 10 10 10 0 S20 -10 20 0")
    # the S curve starts where C ended; its first control point reflects C's second one
    split = int(np.flatnonzero(np.all(np.isclose(s, [10, 0]), axis=1))[0])
    assert_on_curve(s[: split + 1], [(0, 0), (0, 10), (10, 10), (10, 0)])
    assert_on_curve(s[split:], [(10, 0), (10, -10), (20, -10), (20, 0)])
    (rel,) = strokes_of("m0 0 c0 10 10 10 10 0 s10 -10 10 0")
    np.testing.assert_allclose(rel, s, atol=1e-5)


def test_smooth_cubic_without_previous_cubic_uses_current_point():
    (s,) = strokes_of("M0 0 S10 10 20 0")
    assert_on_curve(s, [(0, 0), (0, 0), (10, 10), (20, 0)])


def test_quadratic_and_smooth_quadratic():
    (s,) = strokes_of("M0 0 Q5 10 10 0 T20 0")
    split = int(np.flatnonzero(np.all(np.isclose(s, [10, 0]), axis=1))[0])
    assert_on_curve(s[: split + 1], [(0, 0), (5, 10), (10, 0)])
    assert_on_curve(s[split:], [(10, 0), (15, -10), (20, 0)])
    (rel,) = strokes_of("M0 0 q5 10 10 0 t10 0")
    np.testing.assert_allclose(rel, s, atol=1e-5)


def test_arc_is_a_half_circle_and_accepts_packed_flags():
    (s,) = strokes_of("M0 0 A5 5 0 0 1 10 0")
    np.testing.assert_allclose(s[[0, -1]], [(0, 0), (10, 0)], atol=1e-6)
    np.testing.assert_allclose(np.hypot(s[:, 0] - 5, s[:, 1]), 5.0, atol=1e-4)
    assert (s[1:-1, 1] < 0).all()  # sweep=1 from (0,0) to (10,0) passes through (5,-5)
    assert np.isclose(s[:, 1].min(), -5, atol=0.05)
    (packed,) = strokes_of("M0 0a5 5 0 0110 0")
    np.testing.assert_allclose(packed, s, atol=1e-5)
    (other,) = strokes_of("M0 0 A5 5 0 0 0 10 0")
    assert (other[1:-1, 1] > 0).all()


def test_curve_sampling_is_denser_for_longer_curves():
    short = parse_path_d("M0 0 C0 10 10 10 10 0", step=1.0)[0]
    long = parse_path_d("M0 0 C0 100 100 100 100 0", step=1.0)[0]
    assert 9 <= len(short) < len(long) <= 129


# ---- elements, transforms, canvas --------------------------------------------------------------
def test_nested_transforms_compose_outer_first():
    doc = svg(
        '<g transform="translate(10,20) scale(2)">'
        '<path transform="matrix(1 0 0 1 1 1)" d="M0 0 L1 0"/>'
        '<g transform="scale(1, 3) translate(1)"><line x1="0" y1="1" x2="2" y2="1"/></g>'
        "</g>"
    )
    a, b = parse_svg(doc, "t.svg").strokes
    np.testing.assert_allclose(a, [(12, 22), (14, 22)])
    # (0,1) -> translate(1) (1,1) -> scale(1,3) (1,3) -> scale(2) (2,6) -> translate (12,26)
    np.testing.assert_allclose(b, [(12, 26), (16, 26)])


def test_rotate_and_skew_matrices():
    r = parse_transform("rotate(90)")
    np.testing.assert_allclose(r @ [1, 0, 1], [0, 1, 1], atol=1e-12)
    rc = parse_transform("rotate(180, 5, 5)")
    np.testing.assert_allclose(rc @ [0, 0, 1], [10, 10, 1], atol=1e-12)
    sk = parse_transform("skewX(45)")
    np.testing.assert_allclose(sk @ [0, 2, 1], [2, 2, 1], atol=1e-12)


def test_polyline_polygon_and_line_elements():
    doc = svg(
        '<polyline points="0,0 1,2 3,4"/><polygon points="0 0 2 0 2 2"/>'
        '<line x1="1" y1="1" x2="5" y2="1"/><rect x="0" y="0" width="9" height="9"/>'
    )
    s = parse_svg(doc, "t.svg").strokes
    assert len(s) == 3  # <rect> is not a stroke
    np.testing.assert_allclose(s[0], [(0, 0), (1, 2), (3, 4)])
    np.testing.assert_allclose(s[1], [(0, 0), (2, 0), (2, 2), (0, 0)])
    np.testing.assert_allclose(s[2], [(1, 1), (5, 1)])


def test_canvas_from_viewbox_then_width_height():
    line = '<path d="M0 0 L1 1"/>'
    assert parse_svg(svg(line, 'viewBox="-5 -5 800 600" width="10"'), "a").canvas == (
        -5,
        -5,
        800,
        600,
    )
    assert parse_svg(svg(line, 'width="81.5px" height="99"'), "b").canvas == (0, 0, 81.5, 99)
    assert parse_svg(svg(line, 'width="100%" height="100%"'), "c").canvas is None


def test_read_svg_file_with_declaration_and_doctype(tmp_path):
    f = tmp_path / "sketch.svg"
    f.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
        + svg('<g fill="none"><g transform="translate(1,2)"><path d="M0 0 L2 0"/></g></g>')
    )
    s = read_svg(f)
    assert s.source == str(f)
    np.testing.assert_allclose(s.strokes[0], [(1, 2), (3, 2)])


# ---- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, field",
    [
        ("this is not xml", "svg"),
        ("<html><body/></html>", "root element"),
        (svg('<rect width="5" height="5"/>'), "strokes"),
        (svg('<path d="M0 0 L1"/>'), "path[0] d"),
        (svg('<path d="M0 0"/><path d="L1 1"/>'), "path[1] d"),
        (svg('<path d="M0 0 X1 1"/>'), "path[0] d"),
        (svg('<path d="M0 0 A1 1 0 2 0 1 1"/>'), "path[0] d"),
        (svg('<polyline points="0 0 1"/>'), "polyline[0] points"),
        (svg('<path transform="shear(3)" d="M0 0 L1 1"/>'), "transform"),
        (svg('<path d="M0 0 L1 1"/>', 'viewBox="0 0 0 10"'), "viewBox"),
    ],
)
def test_bad_svg_raises_one_line_naming_the_file_and_field(tmp_path, content, field):
    f = tmp_path / "bad.svg"
    f.write_text(content)
    with pytest.raises(DataError) as err:
        read_svg(f)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(f)) and field in msg


def test_missing_file_and_empty_sketch(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope.svg"))):
        read_svg(tmp_path / "nope.svg")
    with pytest.raises(EmptySketchError):
        parse_svg(svg('<path d="M5 5"/>'), "x.svg")


# ---- real files ---------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_real_tuberlin_svgs(shared_data):
    files = sorted((shared_data / "tuberlin_svg").glob("*/*.svg"))
    assert len(files) == 15
    for f in files:
        s = read_svg(f)
        n_paths = len(re.findall(r"<path\b", f.read_text()))
        assert len(s) == n_paths  # one M per path in these files
        assert s.canvas == (0, 0, 800, 800)
        x0, y0, x1, y1 = s.bounds()
        # the groups scale each sketch to fill the 800 canvas with a margin of about 87.5
        assert 80 < min(x0, y0) and max(x1, y1) < 725 and max(x1 - x0, y1 - y0) > 600
    img = rasterize(read_svg(files[0]), 64)
    assert img.size == (64, 64) and np.asarray(img).min() < 50


@pytest.mark.shared_data
def test_real_qmul_v2_svgs_match_their_png_renders(shared_data):
    folders = sorted(p for p in (shared_data / "qmul_v2_samples").iterdir() if p.is_dir())
    assert len(folders) == 3
    for folder in folders:
        s = read_svg(folder / "sketch_gt.svg")
        png = np.asarray(Image.open(folder / "sketch_gt.png").convert("L"))
        w, h = s.canvas[2], s.canvas[3]
        assert png.shape == (math.floor(h), math.floor(w))
        ours = np.asarray(
            rasterize(s, (png.shape[1], png.shape[0]), stroke_width=1.0, supersample=2)
        )
        ink, ref = ours < 128, png < 200
        assert ink.sum() > 100
        # both renders agree to within one pixel (a 2-px shift or a y-flip fails this)
        assert (ink & _dilate(ref)).sum() / ink.sum() > 0.98
        assert (ref & _dilate(ink)).sum() / ref.sum() > 0.93


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out
