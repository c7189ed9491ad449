"""Google Quick, Draw!: ``.ndjson`` vector drawings and ``.npy`` 28×28 bitmaps, one file per class.

ndjson rows are JSON objects with ``drawing`` = list of strokes ``[xs, ys(, ts)]`` (raw screen
pixels or the 256-px simplified format), ``key_id`` and ``recognized``. The ``.npy`` files hold
uint8 bitmaps, 255 = ink on 0, shaped (N, 784) or (N, 1, 784). The class is the file stem.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ..classnames import normalize_class_name
from ..dataset import SBIRDataset, SkippedFile
from ..records import DataError, Modality, Sample
from ..registry import register_dataset
from ..strokes import Strokes


def class_files(root: str, suffix: str) -> list[Path]:
    """The ``*{suffix}`` files of a folder (sorted by name), or ``[root]`` when it is one such file."""
    base = Path(root)
    if base.is_file():
        if base.suffix != suffix:
            raise DataError(f"{base}: file: expected a {suffix} file or a folder of them")
        return [base]
    if not base.is_dir():
        raise DataError(f"{base}: root: expected a {suffix} file or a folder of them, not found")
    files = sorted(base.glob(f"*{suffix}"))
    if not files:
        raise DataError(f"{base}: files: expected one <class>{suffix} file per class, found none")
    return files


def select_classes(files: list[Path], classes: Iterable[str] | None, root: str) -> list[Path]:
    """Keep the files whose stem matches one of ``classes`` (any spelling); unknown names fail."""
    if classes is None:
        return files
    wanted = [classes] if isinstance(classes, str) else list(classes)
    by_name = {normalize_class_name(f.stem): f for f in files}
    unknown = [c for c in wanted if normalize_class_name(c) not in by_name]
    if unknown:
        raise DataError(
            f"{root}: classes: expected names among the {len(files)} class files, not found: {unknown}"
        )
    keep = {normalize_class_name(c) for c in wanted}
    return [f for f in files if normalize_class_name(f.stem) in keep]


def _check_limit(max_per_class: int | None, root: str) -> None:
    if max_per_class is not None and (not isinstance(max_per_class, int) or max_per_class < 1):
        raise DataError(
            f"{root}: max_per_class: expected a positive integer or None, got {max_per_class!r}"
        )


class QuickDrawNdjsonDataset(SBIRDataset):
    """Quick, Draw! vector sketches; each ndjson file is parsed once and its strokes are kept.

    ``unrecognized`` counts rows left out by ``recognized_only`` (they are not errors).
    """

    name = "quickdraw-ndjson"

    def __init__(self, strokes: dict[str, Strokes], unrecognized: int, **kwargs):
        self._strokes = strokes
        self.unrecognized = unrecognized
        super().__init__(**kwargs)

    def read(self, sample: Sample) -> Strokes:
        return self._strokes[sample.key]


@register_dataset("quickdraw-ndjson")
def quickdraw_ndjson(
    root: str,
    max_per_class: int | None = None,
    recognized_only: bool = False,
    classes: Iterable[str] | None = None,
    image_size: int = 64,
    stroke_width: float = 2.0,
) -> QuickDrawNdjsonDataset:
    """Quick, Draw! ``<class>.ndjson`` drawings (raw or simplified), a folder of them or one file.

    A row that is not valid JSON, has no ``drawing`` or draws nothing is recorded in ``skipped``
    as ``path#line`` (0-based line number). With ``max_per_class`` the rest of a file is not read.
    A row without ``recognized`` counts as recognised.
    """
    _check_limit(max_per_class, root)
    files = select_classes(class_files(root, ".ndjson"), classes, root)
    names = [f.stem for f in files]
    samples: list[Sample] = []
    strokes: dict[str, Strokes] = {}
    skipped: list[SkippedFile] = []
    unrecognized = 0
    for ci, path in enumerate(files):
        kept = rows = 0
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh):
                if max_per_class is not None and kept >= max_per_class:
                    break
                if not line.strip():
                    continue
                rows += 1
                where = f"{path}#{line_no}"
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict) or not isinstance(row.get("drawing"), list):
                        raise TypeError("expected a JSON object with a 'drawing' list")
                    drawing = Strokes.from_ndjson_drawing(row["drawing"], source=where)
                except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
                    skipped.append(
                        SkippedFile(where, f"could not decode row: {str(exc).splitlines()[0]}")
                    )
                    continue
                if drawing.is_empty():
                    skipped.append(SkippedFile(where, "empty drawing: expected at least one point"))
                    continue
                if recognized_only and not row.get("recognized", True):
                    unrecognized += 1
                    continue
                key = f"{path.stem}/{line_no}"
                strokes[key] = drawing
                key_id = row.get("key_id")
                samples.append(
                    Sample(
                        key=key,
                        modality=Modality.SKETCH,
                        class_index=ci,
                        class_name=path.stem,
                        source=str(path),
                        index=line_no,
                        instance_id=str(key_id) if key_id is not None else None,
                    )
                )
                kept += 1
        if rows == 0:
            raise DataError(
                f"{path}: rows: expected at least one drawing (one JSON object a line), the file is empty"
            )
    return QuickDrawNdjsonDataset(
        strokes,
        unrecognized,
        classes=names,
        samples=samples,
        root=str(root),
        image_size=image_size,
        stroke_width=stroke_width,
        skipped=skipped,
    )


class QuickDrawBitmapDataset(SBIRDataset):
    """Quick, Draw! 28×28 bitmaps, memory-mapped; returned inverted (black ink on white)."""

    name = "quickdraw-npy"

    def __init__(self, arrays: dict[str, np.ndarray], **kwargs):
        self._arrays = arrays
        super().__init__(**kwargs)

    def read(self, sample: Sample) -> Image.Image:
        row = np.asarray(self._arrays[sample.source][sample.index], dtype=np.uint8).reshape(28, 28)
        return Image.fromarray(255 - row, "L")


def _open_bitmaps(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: format: expected a .npy array, got: {reason}") from None
    ok = (arr.ndim == 2 and arr.shape[1] == 784) or (arr.ndim == 3 and arr.shape[1:] == (1, 784))
    if not ok or arr.dtype != np.uint8:
        raise DataError(
            f"{path}: array: expected uint8 of shape (N, 784) or (N, 1, 784), got {arr.dtype} {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise DataError(f"{path}: array: expected at least one bitmap, got 0 rows")
    return arr


@register_dataset("quickdraw-npy")
def quickdraw_npy(
    root: str,
    max_per_class: int | None = None,
    classes: Iterable[str] | None = None,
    image_size: int = 64,
    stroke_width: float = 2.0,
) -> QuickDrawBitmapDataset:
    """Quick, Draw! ``<class>.npy`` 28×28 bitmaps (a folder of them or one file), read lazily."""
    _check_limit(max_per_class, root)
    files = select_classes(class_files(root, ".npy"), classes, root)
    arrays: dict[str, np.ndarray] = {}
    samples: list[Sample] = []
    for ci, path in enumerate(files):
        arr = _open_bitmaps(path)
        arrays[str(path)] = arr
        n = arr.shape[0] if max_per_class is None else min(arr.shape[0], max_per_class)
        samples.extend(
            Sample(
                key=f"{path.stem}/{i}",
                modality=Modality.SKETCH,
                class_index=ci,
                class_name=path.stem,
                source=str(path),
                index=i,
            )
            for i in range(n)
        )
    return QuickDrawBitmapDataset(
        arrays,
        classes=[f.stem for f in files],
        samples=samples,
        root=str(root),
        image_size=image_size,
        stroke_width=stroke_width,
    )
