"""QuickDraw-Extended (Dey et al., "Doodle to Search", CVPR 2019): category-level ZS-SBIR.

Layout::

    ROOT/sketch/<class>/*.png           Quick, Draw! sketches (also ``sketches/``)
    ROOT/images/<class>/*.jpg           photos (also ``photo/``, ``photos/``)

The published zero-shot split is the ``quickdraw_30`` manifest. There is no instance pairing.
"""

from __future__ import annotations

from ..records import DataError, Modality
from ..registry import register_dataset
from .folder import FolderCollector, FolderDataset, check_root, first_existing

SKETCH_FOLDERS = ("sketch", "sketches")
PHOTO_FOLDERS = ("images", "photo", "photos")


@register_dataset("quickdraw-extended")
def load_quickdraw_extended(
    root: str, *, image_size: int = 64, stroke_width: float = 2.0
) -> FolderDataset:
    """QuickDraw-Extended (Doodle2Search): ROOT/sketch/<class>/*, ROOT/images/<class>/*; no pairing."""
    base = check_root(root, "QuickDraw-Extended")
    sketch_dir = first_existing(base, SKETCH_FOLDERS)
    photo_dir = first_existing(base, PHOTO_FOLDERS)
    for found, names in ((sketch_dir, SKETCH_FOLDERS), (photo_dir, PHOTO_FOLDERS)):
        if found is None:
            raise DataError(
                f"{base / names[0]}: folder: expected one of {', '.join(n + '/' for n in names)} in {base}, found none"
            )
    col = FolderCollector(base)
    col.scan_classes(photo_dir, Modality.PHOTO)
    col.scan_classes(sketch_dir, Modality.SKETCH)
    return col.build(
        "quickdraw-extended",
        pairing="none",
        require_both=True,
        image_size=image_size,
        stroke_width=stroke_width,
    )
