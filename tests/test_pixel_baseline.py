"""The training-free pixel baseline: the floor a learned model must beat."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from sbirkit.models.pixel import pixel_feature, pixel_features


def _outline(box, fill=None, size=64):
    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).rectangle(box, outline="black" if fill is None else None, fill=fill, width=2)
    return img


def test_features_are_unit_norm_and_sized():
    feats = pixel_features([_outline((10, 10, 50, 50)), _outline((5, 20, 30, 60))], is_sketch=True, size=16)
    assert feats.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)


def test_a_sketch_matches_the_photo_of_its_own_shape_best():
    sketch = pixel_feature(_outline((10, 10, 50, 50)), is_sketch=True)
    same = pixel_feature(_outline((10, 10, 50, 50), fill=(200, 40, 40)), is_sketch=False)
    other = pixel_feature(_outline((30, 2, 40, 62), fill=(200, 40, 40)), is_sketch=False)
    assert float(sketch @ same) > float(sketch @ other) + 0.1
