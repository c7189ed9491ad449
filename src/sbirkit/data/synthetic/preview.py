"""A contact sheet of the synthetic dataset: per class, photos beside sketches by chosen users
(for looking at what the generator draws, e.g. ``sbirkit data preview``)."""

from __future__ import annotations

from typing import Sequence

from PIL import Image

from .dataset import SyntheticSBIR


def contact_sheet(
    dataset: SyntheticSBIR,
    users: Sequence[str | int] | None = None,
    instances: Sequence[int] = (0,),
    size: int | None = None,
    gap: int = 4,
) -> Image.Image:
    """One row per class; for each instance, its photo then its sketch by each user."""
    size = int(size or dataset.image_size)
    users = list(users) if users is not None else [s.name for s in dataset.styles]
    cols = len(instances) * (1 + len(users))
    rows = len(dataset.classes)
    sheet = Image.new("RGB", (cols * (size + gap) + gap, rows * (size + gap) + gap), (128, 128, 128))
    for r, cname in enumerate(dataset.classes):
        c = 0
        for inst in instances:
            tiles = [dataset.render_photo(cname, inst, size)]
            tiles += [
                dataset.sketch_image(dataset.render_sketch(cname, inst, u), u, size).convert("RGB") for u in users
            ]
            for tile in tiles:
                sheet.paste(tile, (gap + c * (size + gap), gap + r * (size + gap)))
                c += 1
    return sheet
