"""Sketchy (Sangkloy et al., SIGGRAPH 2016) and its extended photo set (Liu et al., CVPR 2017).

Layout of the release (``rendered_256x256``)::

    ROOT/photo/<tx>/<class>/<photo>.jpg          e.g. photo/tx_000000000000/airplane/n02691156_10151.jpg
    ROOT/sketch/<tx>/<class>/<photo>-<n>.png     e.g. sketch/tx_000000000000/airplane/n02691156_10151-1.png

``<tx>`` is an augmentation folder (``tx_000000000000`` = no transform); options ``photo_tx`` and
``sketch_tx`` pick one, default the first in sorted order. The same layout without the ``<tx>``
level (``ROOT/photo/<class>/*``) is accepted. Sketch ``<photo>-<n>`` pairs with photo
``<photo>`` of its class; by default every sketch must find its photo.

Extended photos (``extended_photos=PATH``, the 73,002-photo set of Liu et al. 2017)::

    PATH/<class>/*.jpg       unpaired gallery photos; key and instance id ``extended/<class>/<file>``

Their class folders must match Sketchy's classes (after :func:`normalize_class_name`).
"""

from __future__ import annotations

from pathlib import Path

from ..records import DataError, Modality
from ..registry import register_dataset
from .folder import (
    FolderCollector,
    FolderDataset,
    add_extended_photos,
    check_root,
    require_dir,
    subfolders,
)


def resolve_tx(side: Path, tx: str | None, option: str) -> Path:
    """``side/<tx>`` when ``side`` holds transform folders (``tx_*``), else ``side`` itself."""
    require_dir(
        side, f"{side.name} folder", "a folder of class folders (or tx_* transform folders)"
    )
    names = subfolders(side)
    tx_names = [n for n in names if n.startswith("tx_")]
    if tx is not None:
        if tx not in tx_names:
            raise DataError(
                f"{side}: {option}: expected one of {', '.join(tx_names) or '(no tx_* folders)'}, got {tx!r}"
            )
        return side / tx
    if tx_names and len(tx_names) == len(names):
        return side / tx_names[0]
    if tx_names:
        raise DataError(
            f"{side}: folders: expected either only tx_* transform folders or only class folders, found both"
        )
    return side


@register_dataset("sketchy")
def load_sketchy(
    root: str,
    *,
    photo_tx: str | None = None,
    sketch_tx: str | None = None,
    extended_photos: str | None = None,
    pairing: str = "required",
    image_size: int = 64,
    stroke_width: float = 2.0,
) -> FolderDataset:
    """Sketchy: ROOT/{photo,sketch}/[tx_*/]<class>/*, sketch <photo>-<n> paired with <photo>.

    ``pairing='auto'`` tolerates sketches whose photo is missing (they stay unpaired).
    """
    base = check_root(root, "Sketchy")
    col = FolderCollector(base)
    photo_dir = resolve_tx(base / "photo", photo_tx, "photo_tx")
    sketch_dir = resolve_tx(base / "sketch", sketch_tx, "sketch_tx")
    col.scan_classes(photo_dir, Modality.PHOTO)
    col.scan_classes(sketch_dir, Modality.SKETCH)
    if extended_photos is not None:
        add_extended_photos(col, extended_photos, col.class_names(), "Sketchy")
    return col.build(
        "sketchy",
        pairing=pairing,
        require_both=True,
        image_size=image_size,
        stroke_width=stroke_width,
    )
