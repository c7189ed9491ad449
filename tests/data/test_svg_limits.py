"""Bounded work on any SVG: file size, element count, nesting, flattened points; finite coordinates.

The pathological documents are generated; each test asserts the one-line error and its limit
(how fast the refusal comes is measured in benchmarks/bench_query.py, not asserted here).
"""

from __future__ import annotations

import numpy as np
import pytest

import sbirkit.data.svg as svg_module
from sbirkit.data import DataError, Strokes, rasterize
from sbirkit.data.svg import (
    MAX_SVG_BYTES,
    MAX_SVG_DEPTH,
    MAX_SVG_ELEMENTS,
    MAX_SVG_POINTS,
    PointLimitError,
    parse_path_d,
    parse_svg,
    read_svg,
)


def svg(body: str, attrs: str = 'viewBox="0 0 100 100"') -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" {attrs}>{body}</svg>'


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_defaults_are_sane():
    assert MAX_SVG_BYTES == 5 * 1024 * 1024
    assert MAX_SVG_ELEMENTS == 20_000 and MAX_SVG_DEPTH == 64
    assert 10_000 < MAX_SVG_POINTS <= 1_000_000


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    f = tmp_path / "big.svg"
    f.write_text(svg('<path d="M0 0 L1 1"/>' + " " * 2000))
    monkeypatch.setattr(svg_module, "MAX_SVG_BYTES", 1000)
    read_bytes = []
    monkeypatch.setattr(type(f), "read_bytes", lambda self: read_bytes.append(self) or b"")
    with pytest.raises(DataError) as err:
        read_svg(f)
    assert _one_line(err) == (
        f"{f}: size: expected an SVG of at most 1,000 bytes (MAX_SVG_BYTES), got {f.stat().st_size:,}"
    )
    assert read_bytes == []
    with pytest.raises(DataError, match=r"^doc: size: expected an SVG of at most 1,000 bytes"):
        parse_svg(svg('<path d="M0 0 L1 1"/>' + " " * 2000), "doc")


def test_too_many_elements(monkeypatch):
    doc = svg('<path d="M0 0 L1 1"/>' * (MAX_SVG_ELEMENTS + 5))
    with pytest.raises(DataError) as err:
        parse_svg(doc, "many.svg")
    assert _one_line(err) == "many.svg: elements: expected at most 20,000 elements (MAX_SVG_ELEMENTS), got more"
    monkeypatch.setattr(svg_module, "MAX_SVG_ELEMENTS", 300)
    # empty groups count too: they cost parsing and walking; so does the root
    with pytest.raises(DataError, match="elements: expected at most 300 elements"):
        parse_svg(svg("<g/>" * 299 + '<path d="M0 0 L1 1"/>'), "groups.svg")
    ok = parse_svg(svg('<path d="M0 0 L1 1"/>' * 299), "fine.svg")
    assert len(ok) == 299


def test_deep_nesting_is_a_data_error_not_a_recursion_error():
    deep = svg("<g>" * 5000 + '<path d="M0 0 L1 1"/>' + "</g>" * 5000)
    with pytest.raises(DataError) as err:
        parse_svg(deep, "deep.svg")
    assert _one_line(err) == "deep.svg: nesting: expected elements nested at most 64 deep (MAX_SVG_DEPTH), got deeper"
    shallow = svg("<g>" * 40 + '<path d="M0 0 L1 1"/>' + "</g>" * 40)
    assert len(parse_svg(shallow, "ok.svg")) == 1


def test_the_issues_100k_arcs_are_refused():
    body = '<path d="M0 0 ' + "a1 1 0 0 1 0.001 0 " * 100_000 + '"/>'  # about 2 MB
    assert 1_500_000 < len(body) < MAX_SVG_BYTES
    with pytest.raises(DataError) as err:
        parse_svg(svg(body), "arcs.svg")
    assert _one_line(err) == (
        f"arcs.svg: points: expected at most {MAX_SVG_POINTS:,} points after flattening curves "
        "(MAX_SVG_POINTS), got more by path[0]"
    )


LIMIT = 2_000


@pytest.mark.parametrize(
    "name, body, where",
    [
        ("big arcs", '<path d="M0 0 ' + "a50 50 0 1 1 1 0 " * 20 + '"/>', "path[0]"),  # 128 points each
        ("cubics", '<path d="M0 0 ' + "c10 90 90 90 100 0 " * 40 + '"/>', "path[0]"),
        ("linetos", '<path d="M0 0' + "l1 1" * LIMIT + '"/>', "path[0]"),
        ("movetos", '<path d="' + "M1 1 " * (LIMIT + 1) + '"/>', "path[0]"),  # draw nothing, still work
        ("many paths", '<path d="M0 0 a50 50 0 1 1 1 0"/>' * 20, "path[15]"),
        ("polyline", '<polyline points="' + "1 2 " * (LIMIT + 1) + '"/>', "polyline[0]"),
        ("lines", '<line x1="0" y1="0" x2="1" y2="1"/>' * (LIMIT // 2 + 1), "line[1000]"),
    ],
)
def test_points_after_flattening_are_limited(monkeypatch, name, body, where):
    monkeypatch.setattr(svg_module, "MAX_SVG_POINTS", LIMIT)
    with pytest.raises(DataError) as err:
        parse_svg(svg(body), f"{name}.svg")
    assert _one_line(err) == (
        f"{name}.svg: points: expected at most 2,000 points after flattening curves (MAX_SVG_POINTS), got more by {where}"
    )


def test_point_limit_stops_flattening_early():
    d = "M0 0 " + "a50 50 0 1 1 1 0 " * 1000  # 128 points per arc
    with pytest.raises(PointLimitError):
        parse_path_d(d, step=0.01, max_points=1000)
    pts = parse_path_d(d, step=0.01, max_points=1000 * 128 + 1)
    assert sum(len(p) for p in pts) == 1000 * 128 + 1


@pytest.mark.parametrize(
    "body, field",
    [
        ('<path d="M0 0 L1e999 5"/>', "path[0] d"),
        ('<path d="M0 0 C0 0 1 1 2 1e400"/>', "path[0] d"),

        ('<polyline points="0 0 1e999 1"/>', "polyline[0] points"),
        ('<line x1="0" y1="0" x2="nan" y2="1"/>', "line[0] x1/y1/x2/y2"),
        ('<line x1="0" y1="0" x2="inf" y2="1"/>', "line[0] x1/y1/x2/y2"),
        ('<path transform="scale(1e999)" d="M0 0 L1 1"/>', "transform"),
        ('<path transform="scale(1e300)" d="M0 0 L1 1"/>', "transform"),
        ('<path transform="translate(1e308 0)" d="M0 0 L1e308 1"/>', "after the transform"),
        ('<path d="M0 0 A1e300 1e300 0 0 1 1e300 1e300"/>', "path[0]"),
    ],
)
def test_non_finite_coordinates_are_refused_at_parse_time(body, field):
    with pytest.raises(DataError) as err:
        parse_svg(svg(body), "nan.svg")
    msg = _one_line(err)
    assert msg.startswith("nan.svg") and field in msg and "finite" in msg, msg


def test_nan_and_inf_words_are_not_numbers():
    for word in ("NaN", "inf", "Infinity"):
        with pytest.raises(DataError, match=rf"^w.svg: path\[0\] d: expected a number after 'L' at offset 6, got '{word}"):
            parse_svg(svg(f'<path d="M0 0 L{word} 5"/>'), "w.svg")
        with pytest.raises(DataError, match=r"^w.svg: polyline\[0\] points: expected numbers"):
            parse_svg(svg(f'<polyline points="0 0 {word} 1"/>'), "w.svg")


def test_non_finite_viewbox_and_size():
    with pytest.raises(DataError, match=r"viewBox: expected 'x y width height', finite"):
        parse_svg(svg('<path d="M0 0 L1 1"/>', 'viewBox="0 0 1e999 10"'), "v.svg")
    with pytest.raises(DataError, match=r"width: expected a finite length"):
        parse_svg(svg('<path d="M0 0 L1 1"/>', 'width="1e999" height="10"'), "w.svg")


def test_xxe_and_billion_laughs_still_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file://{secret}">]>'
           + svg('<title>&x;</title><path d="M0 0 L1 1"/>'))
    with pytest.raises(DataError) as err:
        parse_svg(xxe, "xxe.svg")
    assert "TOP SECRET" not in _one_line(err) and "xxe.svg: svg: expected an SVG (XML) document" in str(err.value)
    entities = '<!ENTITY a0 "lol">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
    laughs = f'<?xml version="1.0"?><!DOCTYPE svg [{entities}]>' + svg('<title>&a9;</title><path d="M0 0 L1 1"/>')
    with pytest.raises(DataError) as err:
        parse_svg(laughs, "lol.svg")
    assert "lol.svg: svg: expected an SVG (XML) document" in _one_line(err)


# ---- Strokes and rasterize, shared by every vector format ----------------------------------------
def test_strokes_refuse_non_finite_points():
    for bad in (np.inf, -np.inf, np.nan, 1e39):  # 1e39 overflows float32
        with pytest.raises(DataError) as err:
            Strokes([np.array([[0, 0], [1, 1]]), np.array([[0, 0], [bad, 1]])], source="q.ndjson:3")
        assert _one_line(err) == (
            "q.ndjson:3: coordinates: expected finite x, y (within float32), got NaN or inf in stroke 1"
        )
    with pytest.raises(DataError, match=r"^x.npz#train\[0\]: stroke-3: expected finite"):
        Strokes.from_stroke3(np.array([[1, 2, 0], [np.nan, 1, 1]]), source="x.npz#train[0]")
    with pytest.raises(DataError, match="coordinates: expected finite"):
        Strokes.from_ndjson_drawing([[[0, float("inf")], [0, 1]]], source="d")


def test_rasterize_bounds_points_and_inked_length(monkeypatch):
    import sbirkit.data.strokes as strokes_module

    zigzag = np.tile([[0.0, 0.0], [100.0, 100.0]], (5_000, 1))  # 10,000 page-crossing segments
    with pytest.raises(DataError) as err:
        rasterize(Strokes([zigzag], canvas=(0, 0, 100, 100), source="zz"), 64)
    assert _one_line(err).startswith(
        "zz: strokes: expected a total length of at most 1000 image sides (MAX_INK_LENGTH), got 14,"
    )
    normal = rasterize(Strokes([zigzag[:200]], canvas=(0, 0, 100, 100)), 64)  # 280 sides: drawn
    assert np.asarray(normal).min() == 0
    monkeypatch.setattr(strokes_module, "MAX_STROKE_POINTS", 100)
    with pytest.raises(DataError, match=r"^many: points: expected at most 100 points to draw \(MAX_STROKE_POINTS\), got 101"):
        rasterize(Strokes([np.zeros((101, 2))], source="many"), 32)
