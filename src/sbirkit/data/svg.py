"""SVG sketches to :class:`Strokes`: paths, polylines and lines, with transforms applied.

Follows the SVG 1.1 path grammar (section 8.3): commands M L H V C S Q T A Z in absolute and
relative form, implicit repeated arguments, comma/space separators. Curves and arcs are sampled
into polylines; each subpath (each moveto) becomes one stroke. Coordinates end up in the root
user space, and the canvas comes from ``viewBox`` (else ``width``/``height``).

Work on any input is bounded. Limits (module constants), each a one-line
:class:`~sbirkit.errors.DataError` naming the file and the limit when exceeded:

* :data:`MAX_SVG_BYTES` (5 MiB): file size, checked before the file is read;
* :data:`MAX_SVG_ELEMENTS` (20,000): elements in the document, every tag counted;
* :data:`MAX_SVG_DEPTH` (64): element nesting;
* :data:`MAX_SVG_POINTS` (200,000): points after curves and arcs are flattened, summed over
  the document; counted while flattening, so the work stops at the limit.

Coordinates must be finite: a NaN or inf (``1e999`` is inf) in a path, a point list, a line,
a transform or the viewBox is a DataError. XML is parsed by the standard library's expat, which
refuses external entities (XXE) and entity expansion bombs ("billion laughs").
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .records import DataError, EmptySketchError
from .strokes import Strokes

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SEPARATORS = re.compile(r"[\s,]*")
_COMMAND_ARGS = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "A": 7, "Z": 0}
_TRANSFORM = re.compile(r"\s*(matrix|translate|scale|rotate|skewX|skewY)\s*\(([^)]*)\)\s*,?")
_SKIPPED_TAGS = {
    "defs",
    "clipPath",
    "mask",
    "symbol",
    "metadata",
    "title",
    "desc",
    "style",
    "pattern",
}
_MIN_CURVE_SEGMENTS = 8
_MAX_CURVE_SEGMENTS = 128

#: Largest SVG file (bytes) read.
MAX_SVG_BYTES = 5 * 1024 * 1024
#: Most elements in one document (every tag, groups included).
MAX_SVG_ELEMENTS = 20_000
#: Deepest element nesting.
MAX_SVG_DEPTH = 64
#: Most points after flattening curves and arcs, over the whole document (real sketches: a few
#: thousand; the per-command parsing cost makes 200,000 points take up to about 2 s).
MAX_SVG_POINTS = 200_000


class PointLimitError(ValueError):
    """:func:`parse_path_d` would produce more than its ``max_points``."""


def read_svg(path: str | Path) -> Strokes:
    """Parse the SVG file at ``path`` into strokes (see :func:`parse_svg`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file: expected an SVG file, not found")
    _check_size(p.stat().st_size, str(p))
    return parse_svg(p.read_bytes(), str(p))


def _check_size(n_bytes: int, source: str) -> None:
    if n_bytes > MAX_SVG_BYTES:
        raise DataError(f"{source}: size: expected an SVG of at most {MAX_SVG_BYTES:,} bytes (MAX_SVG_BYTES), "
                        f"got {n_bytes:,}")


def parse_svg(text: str | bytes, source: str = "<svg>") -> Strokes:
    """Strokes of every ``<path>``, ``<polyline>``, ``<polygon>`` and ``<line>`` in an SVG document.

    Raises :class:`DataError` naming ``source`` for a document that is not SVG, has bad or
    non-finite geometry or is over a limit (module docstring), and :class:`EmptySketchError`
    when it holds no strokes.
    """
    _check_size(len(text.encode("utf-8")) if isinstance(text, str) else len(text), source)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise DataError(
            f"{source}: svg: expected an SVG (XML) document, got a parse error: {exc}"
        ) from None
    if _local(root.tag) != "svg":
        raise DataError(f"{source}: root element: expected <svg>, got <{_local(root.tag)}>")
    n_elements = 0
    for _ in root.iter():
        n_elements += 1
        if n_elements > MAX_SVG_ELEMENTS:
            raise DataError(f"{source}: elements: expected at most {MAX_SVG_ELEMENTS:,} elements "
                            "(MAX_SVG_ELEMENTS), got more")
    canvas = _canvas(root, source)
    step = max(canvas[2], canvas[3]) / 256.0 if canvas is not None else 1.0
    strokes: list[np.ndarray] = []
    counter = {"path": 0, "polyline": 0, "polygon": 0, "line": 0, "#points": 0}  # "#": no tag is named so
    _walk(root, np.eye(3), strokes, counter, step, source)
    result = Strokes(strokes, canvas=canvas, source=source)
    if result.is_empty():
        raise EmptySketchError(
            f"{source}: strokes: expected at least one <path>/<polyline>/<line>, got none"
        )
    return result


# ---- document structure -------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _length(value: str | None, source: str, field: str) -> float | None:
    """A width/height attribute in user units; percentages (no absolute size) give None."""
    if value is None or value.strip().endswith("%"):
        return None
    m = _NUMBER.match(value.strip())
    if not m or not math.isfinite(float(m.group())):
        raise DataError(f"{source}: {field}: expected a finite length, got {value!r}")
    return float(m.group())


def _canvas(root: ET.Element, source: str) -> tuple[float, float, float, float] | None:
    vb = root.get("viewBox")
    if vb is not None:
        nums = [float(n) for n in _NUMBER.findall(vb)]
        if len(nums) != 4 or nums[2] <= 0 or nums[3] <= 0 or not all(map(math.isfinite, nums)):
            raise DataError(
                f"{source}: viewBox: expected 'x y width height', finite with positive size, got {vb!r}"
            )
        return nums[0], nums[1], nums[2], nums[3]
    w = _length(root.get("width"), source, "width")
    h = _length(root.get("height"), source, "height")
    if w and h and w > 0 and h > 0:
        return 0.0, 0.0, w, h
    return None


def _walk(node, ctm, strokes, counter, step, source, depth: int = 1) -> None:
    if depth > MAX_SVG_DEPTH:
        raise DataError(f"{source}: nesting: expected elements nested at most {MAX_SVG_DEPTH} deep "
                        "(MAX_SVG_DEPTH), got deeper")
    for child in node:
        tag = _local(child.tag)
        if tag in _SKIPPED_TAGS:
            continue
        where = f"<{tag}>"
        if tag in counter:
            where = f"{tag}[{counter[tag]}]"
            counter[tag] += 1
        m = ctm @ parse_transform(child.get("transform", ""), f"{source}: {where}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below, not warned about
            scale = math.sqrt(abs(np.linalg.det(m[:2, :2]))) or 1.0
        if not math.isfinite(scale):
            raise DataError(f"{source}: {where} transform: expected a finite scale, got one that overflows")
        budget = MAX_SVG_POINTS - counter["#points"]
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf/NaN is refused below
                local = _element_points(tag, child, step / scale, budget)
            if sum(len(pts) for pts in local) > budget:
                raise PointLimitError(f"more than {budget} points")
        except PointLimitError:
            raise DataError(f"{source}: points: expected at most {MAX_SVG_POINTS:,} points after flattening "
                            f"curves (MAX_SVG_POINTS), got more by {where}") from None
        except (ValueError, ArithmeticError) as exc:
            attr = {"path": "d", "line": "x1/y1/x2/y2"}.get(tag, "points")
            if isinstance(exc, ArithmeticError):  # float overflow in curve geometry
                exc = ValueError("expected finite coordinates, got numbers that overflow")
            raise DataError(f"{source}: {where} {attr}: {exc}") from None
        for pts in local:
            counter["#points"] += len(pts)
            with np.errstate(over="ignore", invalid="ignore"):
                out = pts @ m[:2, :2].T + m[:2, 2]
            if not np.isfinite(out).all():  # finite input, overflowing transform (1e308 * 10)
                raise DataError(f"{source}: {where}: expected finite coordinates after the transform, got inf/NaN")
            strokes.append(out)
        _walk(child, m, strokes, counter, step, source, depth + 1)


def _element_points(tag: str, el, step: float, budget: int) -> list[np.ndarray]:
    """Polylines of one drawing element in its own user space (none for other tags)."""
    if tag == "path":
        return parse_path_d(el.get("d", ""), step, max_points=budget)
    if tag in ("polyline", "polygon"):
        pts = _number_list(el.get("points", ""))
        if len(pts) % 2:
            raise ValueError(f"expected an even number of coordinates, got {len(pts)}")
        if len(pts) // 2 > budget:
            raise PointLimitError(f"more than {budget} points")
        arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        if tag == "polygon" and len(arr):
            arr = np.vstack([arr, arr[:1]])
        return [arr] if len(arr) else []
    if tag == "line":
        xy = [_finite(el.get(k, "0")) for k in ("x1", "y1", "x2", "y2")]
        return [np.asarray(xy, dtype=np.float64).reshape(2, 2)]
    return []


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {text!r}")
    return v


def _number_list(text: str) -> list[float]:
    rest = _NUMBER.sub(" ", text)
    if rest.replace(",", " ").strip():
        raise ValueError(f"expected numbers, got {text.strip()[:40]!r}")
    out = [float(n) for n in _NUMBER.findall(text)]
    if not all(map(math.isfinite, out)):
        raise ValueError("expected finite numbers, got one that overflows to inf")
    return out


# ---- transforms ---------------------------------------------------------------------------------
def parse_transform(text: str, where: str = "<svg>") -> np.ndarray:
    """The 3×3 matrix of an SVG ``transform`` list; ``"A B"`` maps a point p to A(B(p))."""
    m = np.eye(3)
    pos = 0
    text = (text or "").strip()
    while pos < len(text):
        match = _TRANSFORM.match(text, pos)
        if not match:
            raise DataError(
                f"{where} transform: expected matrix/translate/scale/rotate/skew(...), got {text!r}"
            )
        name, args = match.group(1), [float(v) for v in _NUMBER.findall(match.group(2))]
        if not all(map(math.isfinite, args)):
            raise DataError(f"{where} transform: expected finite numbers, got {text[:60]!r}")
        m = m @ _transform_matrix(name, args, where, text)
        pos = match.end()
    return m


def _transform_matrix(name: str, a: list[float], where: str, text: str) -> np.ndarray:
    allowed = {
        "matrix": (6,),
        "translate": (1, 2),
        "scale": (1, 2),
        "rotate": (1, 3),
        "skewX": (1,),
        "skewY": (1,),
    }
    if len(a) not in allowed[name]:
        raise DataError(
            f"{where} transform: expected {name} with {' or '.join(map(str, allowed[name]))} numbers, got {text!r}"
        )
    if name == "matrix":
        return np.array([[a[0], a[2], a[4]], [a[1], a[3], a[5]], [0, 0, 1]], dtype=np.float64)
    if name == "translate":
        return np.array(
            [[1, 0, a[0]], [0, 1, a[1] if len(a) > 1 else 0.0], [0, 0, 1]], dtype=np.float64
        )
    if name == "scale":
        sy = a[1] if len(a) > 1 else a[0]
        return np.diag([a[0], sy, 1.0])
    if name == "rotate":
        t = math.radians(a[0])
        r = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
        if len(a) == 3:
            cx, cy = a[1], a[2]
            return _translate(cx, cy) @ r @ _translate(-cx, -cy)
        return r
    t = math.tan(math.radians(a[0]))
    if name == "skewX":
        return np.array([[1, t, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    return np.array([[1, 0, 0], [t, 1, 0], [0, 0, 1]], dtype=np.float64)


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], dtype=np.float64)


# ---- path data ----------------------------------------------------------------------------------
def bezier_points(ctrl: np.ndarray, n: int) -> np.ndarray:
    """``n + 1`` points of the Bézier curve with control points ``ctrl`` at t = 0, 1/n, ..., 1."""
    ctrl = np.asarray(ctrl, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    deg = len(ctrl) - 1
    out = np.zeros((n + 1, 2))
    for k in range(deg + 1):
        out += math.comb(deg, k) * (1 - t) ** (deg - k) * t**k * ctrl[k]
    return out


def _segments(ctrl: np.ndarray, step: float) -> int:
    return _n_segments(float(np.linalg.norm(np.diff(ctrl, axis=0), axis=1).sum()), step)


def _n_segments(length: float, step: float) -> int:
    """Segments for a curve of ``length``: about one per ``step``, within 8..128."""
    if not math.isfinite(length):
        raise ValueError("expected a curve of finite size, got coordinates that overflow")
    n = math.ceil(length / max(step, 1e-9))
    return int(min(_MAX_CURVE_SEGMENTS, max(_MIN_CURVE_SEGMENTS, n)))


def _arc_points(p0, rx, ry, phi_deg, large, sweep, p1, step) -> np.ndarray:
    """Sample an elliptical arc given in endpoint form (SVG 1.1 implementation notes F.6.5)."""
    if np.allclose(p0, p1):
        return np.empty((0, 2))
    rx, ry = abs(rx), abs(ry)
    if rx == 0 or ry == 0:
        return np.asarray([p1], dtype=np.float64)
    phi = math.radians(phi_deg % 360.0)
    c, s = math.cos(phi), math.sin(phi)
    dx, dy = (p0[0] - p1[0]) / 2, (p0[1] - p1[1]) / 2
    x1p, y1p = c * dx + s * dy, -s * dx + c * dy
    lam = x1p**2 / rx**2 + y1p**2 / ry**2
    if lam > 1:  # radii too small: scale up (F.6.6)
        rx, ry = rx * math.sqrt(lam), ry * math.sqrt(lam)
    num = rx**2 * ry**2 - rx**2 * y1p**2 - ry**2 * x1p**2
    den = rx**2 * y1p**2 + ry**2 * x1p**2
    coef = math.sqrt(max(0.0, num / den)) * (-1 if large == sweep else 1)
    cxp, cyp = coef * rx * y1p / ry, -coef * ry * x1p / rx
    cx = c * cxp - s * cyp + (p0[0] + p1[0]) / 2
    cy = s * cxp + c * cyp + (p0[1] + p1[1]) / 2

    def angle(ux, uy, vx, vy):
        return math.atan2(ux * vy - uy * vx, ux * vx + uy * vy)

    ux, uy = (x1p - cxp) / rx, (y1p - cyp) / ry
    vx, vy = (-x1p - cxp) / rx, (-y1p - cyp) / ry
    theta1 = angle(1.0, 0.0, ux, uy)
    delta = angle(ux, uy, vx, vy)
    if not sweep and delta > 0:
        delta -= 2 * math.pi
    elif sweep and delta < 0:
        delta += 2 * math.pi
    n = _n_segments(abs(delta) * max(rx, ry), step)
    th = theta1 + delta * np.linspace(0.0, 1.0, n + 1)[1:]
    xs = cx + rx * c * np.cos(th) - ry * s * np.sin(th)
    ys = cy + rx * s * np.cos(th) + ry * c * np.sin(th)
    pts = np.stack([xs, ys], axis=1)
    pts[-1] = p1  # land exactly on the endpoint
    return pts


def parse_path_d(d: str, step: float = 1.0, max_points: int | None = None) -> list[np.ndarray]:
    """Polylines (one per drawn subpath) of an SVG path's ``d`` attribute, in its local units.

    Curves are sampled uniformly in t with about one point per ``step`` units of control-polygon
    length (8 to 128 segments). A subpath that is only a moveto draws nothing and is left out.
    Raises ``ValueError`` describing the first malformed or non-finite token, and
    :class:`PointLimitError` as soon as more than ``max_points`` points have been made.
    """
    limit = math.inf if max_points is None else max_points
    made = 0
    out: list[list[np.ndarray]] = []  # per subpath, chunks of (m, 2) points
    current: list[np.ndarray] | None = None
    pos, n = 0, len(d)
    cmd: str | None = None
    point = np.zeros(2)
    start = np.zeros(2)
    last_ctrl: np.ndarray | None = None  # reflected by S/s (cubic) and T/t (quadratic)
    last_kind = ""
    closed = False

    def skip(p: int) -> int:
        return _SEPARATORS.match(d, p).end()

    def number(p: int, flag: bool = False) -> tuple[float, int]:
        p = skip(p)
        if flag:
            if p < n and d[p] in "01":
                return float(d[p]), p + 1
            raise ValueError(f"expected an arc flag 0 or 1 at offset {p}, got {d[p : p + 10]!r}")
        m = _NUMBER.match(d, p)
        if not m:
            raise ValueError(
                f"expected a number after {cmd!r} at offset {p}, got {d[p : p + 10]!r}"
            )
        v = float(m.group())
        if not math.isfinite(v):
            raise ValueError(f"expected a finite number at offset {p}, got {m.group()[:20]!r}")
        return v, m.end()

    def add(chunk: list[np.ndarray], pts: np.ndarray) -> None:
        nonlocal made
        made += len(pts)
        if made > limit:
            raise PointLimitError(f"more than {max_points} points")
        chunk.append(pts)

    def begin(at: np.ndarray) -> list[np.ndarray]:
        stroke: list[np.ndarray] = []
        add(stroke, at.copy()[None])
        out.append(stroke)
        return stroke

    pos = skip(0)
    while pos < n:
        ch = d[pos]
        if ch.isalpha():
            if ch.upper() not in _COMMAND_ARGS:
                raise ValueError(f"unknown path command {ch!r} at offset {pos}")
            if cmd is None and ch not in "Mm":
                raise ValueError(f"expected a moveto command first, got {ch!r}")
            cmd = ch
            pos += 1
        elif cmd is None:
            raise ValueError(f"expected a moveto command first, got {d[pos : pos + 10]!r}")
        elif cmd in "Zz":
            raise ValueError(f"expected a command after 'Z', got {d[pos : pos + 10]!r}")
        upper, rel = cmd.upper(), cmd.islower()
        args = []
        for k in range(_COMMAND_ARGS[upper]):
            v, pos = number(pos, flag=(upper == "A" and k in (3, 4)))
            args.append(v)
        base = point if rel else np.zeros(2)
        if upper == "M":
            point = base + args
            start = point.copy()
            current = begin(point)
            closed = False
            cmd = "l" if rel else "L"  # further pairs are implicit linetos
            last_kind = ""
            pos = skip(pos)
            continue
        if upper == "Z":
            if current is not None:
                add(current, start.copy()[None])
            point = start.copy()
            closed = True
            last_kind = ""
            pos = skip(pos)
            continue
        if current is None or closed:  # drawing right after Z starts a new subpath at its start
            current = begin(point)
            closed = False
        new: np.ndarray
        kind = ""
        if upper == "L":
            new = (base + args)[None]
        elif upper == "H":
            new = np.array([[args[0] + (point[0] if rel else 0.0), point[1]]])
        elif upper == "V":
            new = np.array([[point[0], args[0] + (point[1] if rel else 0.0)]])
        elif upper in ("C", "S"):
            if upper == "C":
                c1, c2, end = base + args[0:2], base + args[2:4], base + args[4:6]
            else:
                c1 = 2 * point - last_ctrl if last_kind == "C" else point.copy()
                c2, end = base + args[0:2], base + args[2:4]
            ctrl = np.stack([point, c1, c2, end])
            new = bezier_points(ctrl, _segments(ctrl, step))[1:]
            last_ctrl, kind = c2, "C"
        elif upper in ("Q", "T"):
            if upper == "Q":
                c1, end = base + args[0:2], base + args[2:4]
            else:
                c1 = 2 * point - last_ctrl if last_kind == "Q" else point.copy()
                end = base + args[0:2]
            ctrl = np.stack([point, c1, end])
            new = bezier_points(ctrl, _segments(ctrl, step))[1:]
            last_ctrl, kind = c1, "Q"
        else:  # arc
            end = base + args[5:7]
            new = _arc_points(
                point, args[0], args[1], args[2], bool(args[3]), bool(args[4]), end, step
            )
            if not len(new):
                new = end[None]
        add(current, np.asarray(new, dtype=np.float64).reshape(-1, 2))
        point = np.asarray(new[-1], dtype=np.float64).copy()
        last_kind = kind
        pos = skip(pos)
    return [np.concatenate(s) for s in out if sum(len(c) for c in s) > 1]
