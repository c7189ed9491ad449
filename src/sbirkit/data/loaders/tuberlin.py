"""TU-Berlin sketches (Eitz et al., SIGGRAPH 2012) with the extended photos of Zhang et al. 2016.

Layouts::

    ROOT/png/<class>/*.png  and/or  ROOT/svg/<class>/*.svg     (the two official archives)
    ROOT/<class>/*.png|svg                                     (either, flattened)
    photos=PATH:  PATH/<class>/*.jpg                           (Zhang et al. 2016, class-level only)

When both ``png/`` and ``svg/`` exist, ``sketch_format`` picks one (default ``svg``: strokes
rasterise cleanly at any size). TU-Berlin is category-level: there is no instance pairing.
"""

from __future__ import annotations

from ..records import DataError, Modality
from ..registry import register_dataset
from .folder import FolderCollector, FolderDataset, add_extended_photos, check_root

SKETCH_FORMATS = ("svg", "png")


@register_dataset("tuberlin")
def load_tuberlin(
    root: str,
    *,
    photos: str | None = None,
    sketch_format: str | None = None,
    image_size: int = 64,
    stroke_width: float = 2.0,
) -> FolderDataset:
    """TU-Berlin: ROOT/{png,svg}/<class>/* or ROOT/<class>/* sketches; photos=PATH/<class>/*."""
    if sketch_format is not None and sketch_format not in SKETCH_FORMATS:
        raise ValueError(f"sketch_format: expected 'svg' or 'png', got {sketch_format!r}")
    base = check_root(root, "TU-Berlin")
    present = [f for f in SKETCH_FORMATS if (base / f).is_dir()]
    if sketch_format is not None and sketch_format not in present:
        raise DataError(
            f"{base / sketch_format}: sketch_format: expected a {sketch_format}/ folder, not found (found {', '.join(present)}/)"
        )
    fmt = sketch_format if sketch_format in present else (present[0] if present else None)
    col = FolderCollector(base)
    col.scan_classes(base / fmt if fmt else base, Modality.SKETCH)
    if photos is not None:
        add_extended_photos(col, photos, col.class_names(), "TU-Berlin")
    return col.build("tuberlin", pairing="none", image_size=image_size, stroke_width=stroke_width)
