"""Export a dataset to the generic folder layout the ``"folder"`` loader reads.

``OUT/photo/<class>/<id>.png``, ``OUT/sketch/<class>/<id>-<n>.png`` (a sketch pairs with the
photo whose stem it starts with), optional vector ``OUT/sketch/<class>/<id>-<n>.svg``, and
``OUT/metadata.csv`` with header ``path,split,user`` (paths relative to OUT).

OUT must be new or empty: writing into an earlier export would mix old and new files and
rewrite ``metadata.csv``, so the old samples would lose their split. ``overwrite=True`` first
deletes what an export writes (``photo/``, ``sketch/`` and ``metadata.csv``) and nothing else.
"""

from __future__ import annotations

import csv
import re
import shutil
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ..dataset import SBIRDataset
from ..records import DataError, Sample
from ..strokes import Strokes

_UNSAFE = re.compile(r"[/\\:\x00-\x1f]+")
#: what :func:`write_folder_layout` writes into OUT (and so what ``overwrite`` deletes)
EXPORT_ENTRIES = ("photo", "sketch", "metadata.csv")


def _safe(name: str) -> str:
    """A file-system safe name: path separators and control characters become ``_``."""
    out = _UNSAFE.sub("_", name).strip().lstrip(".")
    return out or "_"


def _plan(dataset: SBIRDataset) -> list[tuple[Sample, str]]:
    """(sample, relative path without extension) for every photo, then every sketch."""
    plan: list[tuple[Sample, str]] = []
    stems: dict[str, str] = {}
    for p in dataset.photos():
        cls = _safe(dataset.classes[p.class_index])
        stem = _safe((p.instance_id or p.key).rsplit("/", 1)[-1])
        if p.instance_id is not None:
            stems[p.instance_id] = stem
        plan.append((p, f"photo/{cls}/{stem}"))
    counts: Counter[str] = Counter()
    for s in dataset.sketches():
        cls = _safe(dataset.classes[s.class_index])
        own = _safe(s.key.rsplit("/", 1)[-1])
        photo_stem = stems.get(s.instance_id) if s.instance_id is not None else None
        if photo_stem is None:
            name = own
        elif own.startswith(f"{photo_stem}-") and own[len(photo_stem) + 1 :].isdigit():
            name = own
        else:
            counts[s.instance_id] += 1
            name = f"{photo_stem}-{counts[s.instance_id]}"
        plan.append((s, f"sketch/{cls}/{name}"))
    seen: dict[str, str] = {}
    for sample, rel in plan:
        if rel in seen:
            raise DataError(f"{rel}.png: path: expected one sample per file, got {seen[rel]!r} and {sample.key!r}")
        seen[rel] = sample.key
    return plan


def strokes_to_svg(strokes: Strokes, size: int, stroke_width: float) -> str:
    """A minimal SVG (one ``polyline`` per stroke) of ``strokes`` in a ``size`` px square."""
    if strokes.canvas is not None:
        x0, y0, w, h = strokes.canvas
    else:
        bx0, by0, bx1, by1 = strokes.bounds()
        pad = 0.08 * max(bx1 - bx0, by1 - by0, 1e-6)
        x0, y0, w, h = bx0 - pad, by0 - pad, bx1 - bx0 + 2 * pad, by1 - by0 + 2 * pad
    scale = size / max(w, h, 1e-9)
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}">',
        f'<rect width="{size}" height="{size}" fill="white"/>',
    ]
    for s in strokes.strokes:
        pts = " ".join(f"{(x - x0) * scale:.2f},{(y - y0) * scale:.2f}" for x, y in s.tolist())
        lines.append(
            f'<polyline points={quoteattr(pts)} fill="none" stroke="black" '
            f'stroke-width="{stroke_width:.2f}" stroke-linecap="round" stroke-linejoin="round"/>'
        )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def prepare_output_folder(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Check that an export may write into ``out_dir``; with ``overwrite``, clear the old export.

    A missing or empty folder is fine. A non-empty one raises :class:`DataError` naming what
    it holds, unless ``overwrite``: then ``photo/``, ``sketch/`` and ``metadata.csv`` are
    deleted (any other file there is kept). A file at ``out_dir`` is always refused.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: expected a folder to write the dataset into, found a file")
    if not out.is_dir():
        return out
    held = sorted(p.name for p in out.iterdir())
    if not held:
        return out
    if not overwrite:
        shown = ", ".join(held[:5]) + (f" ... ({len(held)} entries)" if len(held) > 5 else "")
        raise DataError(
            f"{out}: expected a new or empty folder, it holds {shown}; pass --overwrite "
            "(overwrite=True) to replace its photo/, sketch/ and metadata.csv"
        )
    for name in EXPORT_ENTRIES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return out


def write_folder_layout(
    dataset: SBIRDataset,
    out_dir: str | Path,
    progress: bool = True,
    svg: bool = False,
    size: int | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write every sample of ``dataset`` as PNG (at ``size``, default its ``image_size``) plus
    ``metadata.csv``; returns the counts written. With ``svg``, vector sketches are also
    written as SVG beside their PNG (the ``"folder"`` loader would then read each sketch twice:
    keep one of the two for loading). ``out_dir`` must be new or empty unless ``overwrite``
    (see :func:`prepare_output_folder`)."""
    from tqdm.auto import tqdm

    out = prepare_output_folder(out_dir, overwrite)
    size = int(size or dataset.image_size)
    plan = _plan(dataset)
    rows: list[tuple[str, str, str]] = []
    counts = Counter(photos=0, sketches=0, svg=0)
    for cls in {rel.rsplit("/", 1)[0] for _, rel in plan}:
        (out / cls).mkdir(parents=True, exist_ok=True)
    for sample, rel in tqdm(plan, desc=f"writing {dataset.name}", unit="file", disable=not progress):
        img = dataset.load_image(sample, size)
        if sample.is_sketch:
            img.convert("L").save(out / f"{rel}.png")
            counts["sketches"] += 1
            if svg:
                strokes = dataset.load_strokes(sample)
                if strokes is not None:
                    (out / f"{rel}.svg").write_text(strokes_to_svg(strokes, size, _line_width(dataset, sample, size)))
                    counts["svg"] += 1
        else:
            img.save(out / f"{rel}.png")
            counts["photos"] += 1
        rows.append((f"{rel}.png", sample.split or "", (sample.user_id or "") if sample.is_sketch else ""))
    with open(out / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "split", "user"])
        writer.writerows(rows)
    result = dict(counts)
    result["classes"] = len({s.class_index for s, _ in plan})
    result["rows"] = len(rows)
    return result


def _line_width(dataset: SBIRDataset, sample: Sample, size: int) -> float:
    styles = getattr(dataset, "styles", None)
    if styles is not None and sample.user_id is not None:
        for style in styles:
            if style.name == sample.user_id:
                return style.width * size / 64.0
    return dataset.stroke_width * size / 64.0
