"""QMUL Shoe-V2 / Chair-V2 (Yu et al., "Sketch Me That Shoe", CVPR 2016; V2 from Song et al. 2018).

Fine-grained: each sketch is drawn from one photo. Two layouts, one class (``category``, default
the name of ROOT)::

    ROOT/trainA/<photoID>_<n>.svg|png   sketches       ROOT/trainB/<photoID>.png|jpg   photos
    ROOT/testA/...                                      ROOT/testB/...
    (split 'train' / 'test' from the folder; sketch <photoID>_<n> pairs with photo <photoID>)

    ROOT/<id>/photo_gt.png + ROOT/<id>/sketch_gt.svg and/or sketch_gt.png
    (one pair per folder, instance id '<category>/<id>')

When a sketch exists as both SVG and PNG, ``sketch_format`` picks one (default ``svg``); the
other copy is an alternate encoding of the same sketch, not a separate sample.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..records import DataError, Modality
from ..registry import register_dataset
from .folder import FolderCollector, FolderDataset, check_root, file_kind, subfolders

SPLIT_FOLDERS = {
    "trainA": ("train", Modality.SKETCH),
    "testA": ("test", Modality.SKETCH),
    "trainB": ("train", Modality.PHOTO),
    "testB": ("test", Modality.PHOTO),
}
SKETCH_FORMATS = ("svg", "png")


def _format_of(path: Path) -> str:
    return "svg" if file_kind(path) == "svg" else "png"


def drop_alternate_formats(col: FolderCollector, start: int, prefer: str) -> None:
    """Among sketches added since ``start``, keep one file per stem: the ``prefer`` format if present."""
    best: dict[str, int] = {}
    for i in range(start, len(col.files)):
        f = col.files[i]
        stem = str(f.path.with_suffix(""))
        if stem not in best or (
            _format_of(f.path) == prefer and _format_of(col.files[best[stem]].path) != prefer
        ):
            best[stem] = i
    keep = set(best.values())
    col.files[start:] = [f for i, f in enumerate(col.files[start:], start) if i in keep]


def _load_split_layout(col: FolderCollector, base: Path, category: str, prefer: str) -> None:
    found = [name for name in SPLIT_FOLDERS if (base / name).is_dir()]
    for side in ("A", "B"):
        if not any(n.endswith(side) for n in found):
            what = "sketch" if side == "A" else "photo"
            raise DataError(
                f"{base}: trainA/testA/trainB/testB: expected a train{side} or test{side} {what} folder, found none"
            )
    for name in found:
        split, modality = SPLIT_FOLDERS[name]
        start = len(col.files)
        col.scan_class_dir(base / name, modality, category, split=split)
        if modality is Modality.SKETCH:
            drop_alternate_formats(col, start, prefer)


def _load_pair_folders(col: FolderCollector, base: Path, category: str, prefer: str) -> None:
    ids = subfolders(base)
    if not ids:
        raise DataError(
            f"{base}: layout: expected trainA/testA/trainB/testB folders or <id>/photo_gt.* pair folders, found neither"
        )
    with os.scandir(base) as it:
        for e in sorted(it, key=lambda e: e.name):
            if not e.is_dir() and not e.name.startswith("."):
                col.skip(
                    base / e.name, f"file outside a pair folder: expected {base}/<id>/photo_gt.*"
                )
    for pid in ids:
        folder = base / pid
        photos, sketches = [], []
        for name in sorted(os.listdir(folder)):
            path = folder / name
            stem, kind = path.stem, file_kind(path)
            if stem == "photo_gt" and kind == "image" and path.is_file():
                photos.append(path)
            elif stem == "sketch_gt" and kind in ("image", "svg") and path.is_file():
                sketches.append(path)
            else:
                col.skip(
                    path, "not part of a pair: expected photo_gt.<image> and sketch_gt.svg|png"
                )
        if len(photos) != 1:
            raise DataError(
                f"{folder}: photo_gt: expected exactly one photo_gt.<png|jpg>, found {len(photos)}"
            )
        if not sketches:
            raise DataError(
                f"{folder}: sketch_gt: expected sketch_gt.svg or sketch_gt.png, found none"
            )
        sketches.sort(key=lambda p: _format_of(p) != prefer)
        instance = f"{category}/{pid}"
        col.add(photos[0], Modality.PHOTO, category, instance=instance)
        col.add(sketches[0], Modality.SKETCH, category, instance=instance)


@register_dataset("qmul-v2")
def load_qmul_v2(
    root: str,
    *,
    category: str | None = None,
    sketch_format: str = "svg",
    pairing: str = "required",
    image_size: int = 64,
    stroke_width: float = 2.0,
) -> FolderDataset:
    """QMUL Shoe-V2/Chair-V2: ROOT/{trainA,testA,trainB,testB}/* or ROOT/<id>/{photo_gt,sketch_gt}.*."""
    if sketch_format not in SKETCH_FORMATS:
        raise ValueError(f"sketch_format: expected 'svg' or 'png', got {sketch_format!r}")
    base = check_root(root, "QMUL-V2")
    category = category or base.name
    col = FolderCollector(base)
    if any((base / name).is_dir() for name in SPLIT_FOLDERS):
        _load_split_layout(col, base, category, sketch_format)
    else:
        _load_pair_folders(col, base, category, sketch_format)
    return col.build(
        "qmul-v2",
        pairing=pairing,
        require_both=True,
        image_size=image_size,
        stroke_width=stroke_width,
    )
