"""A tiny, fast, learnable sketch/photo dataset for engine tests, registered as ``tiny_pairs``.

Class ``c`` is a shape at a class-specific place; an instance shifts and resizes it a little.
Photos are a filled, coloured shape on a noisy background; sketches are its black outline on
white. Instances are split train/val/test per class; sketches carry two user ids.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageDraw

from sbirkit.data import DATASETS, Modality, Sample, SBIRDataset


class TinyPairs(SBIRDataset):
    name = "tiny_pairs"

    def __init__(self, num_classes: int = 4, photos_per_class: int = 8, splits=(5, 1, 2),
                 sketches_per_photo: int = 1, image_size: int = 32, seed: int = 0):
        self.seed = seed
        samples = []
        names = ["train", "val", "test"]
        bounds = np.cumsum(splits)
        for c in range(num_classes):
            for k in range(photos_per_class):
                split = names[int(np.searchsorted(bounds, k, side="right"))] if k < bounds[-1] else "test"
                inst = f"c{c}_i{k}"
                samples.append(Sample(f"photo/{inst}", Modality.PHOTO, c, f"class{c}", instance_id=inst, split=split))
                for j in range(sketches_per_photo):
                    samples.append(Sample(f"sketch/{inst}_s{j}", Modality.SKETCH, c, f"class{c}", instance_id=inst,
                                          user_id=f"u{(k + j) % 2}", split=split))
        super().__init__([f"class{c}" for c in range(num_classes)], samples, image_size=image_size)

    def read(self, sample: Sample) -> Image.Image:
        size = 64
        c = sample.class_index
        inst = int(sample.instance_id.split("_i")[1])
        rng = np.random.default_rng(zlib.crc32(f"{self.seed}/{sample.key}".encode()))
        cx, cy = 16 + (c % 3) * 16, 16 + (c // 3 % 3) * 16
        cx, cy = cx + (inst % 3 - 1) * 3, cy + (inst // 3 % 3 - 1) * 3
        r = 9 + inst % 4
        box = [cx - r, cy - r, cx + r, cy + r]
        if sample.is_photo:
            bg = rng.integers(90, 170, (size, size, 3), dtype=np.uint8)
            img = Image.fromarray(bg, "RGB")
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw = ImageDraw.Draw(img)
            (draw.ellipse if c % 2 else draw.rectangle)(box, fill=colour)
        else:
            img = Image.new("RGB", (size, size), "white")
            jitter = rng.integers(-1, 2, 4)
            draw = ImageDraw.Draw(img)
            (draw.ellipse if c % 2 else draw.rectangle)(list(np.add(box, jitter)), outline="black", width=2)
        return img


if "tiny_pairs" not in DATASETS:
    DATASETS.register("tiny_pairs")(TinyPairs)
