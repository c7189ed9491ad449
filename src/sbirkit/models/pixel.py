"""A training-free pixel baseline: blurred low-resolution ink maps compared by cosine similarity.

It is the floor every learned model must clear. A sketch becomes its ink map (1 - grey); a
photo becomes either its ink map too (``photo_mode="ink"``, right for edge-map galleries such
as QMUL-V1) or its Sobel edge magnitude (``"edges"``, default, so a filled photo and an outline
sketch are compared as outlines). The maps are resized to ``size``×``size``, Gaussian-blurred
(``sigma`` in output pixels), centred and L2-normalised.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from PIL import Image
from scipy import ndimage


def pixel_feature(img: Image.Image, is_sketch: bool, size: int = 32, sigma: float = 1.0,
                  photo_mode: str = "edges") -> np.ndarray:
    """The baseline's feature vector (length ``size*size``) for one image."""
    grey = np.asarray(img.convert("L").resize((size * 2, size * 2), Image.Resampling.BILINEAR), np.float32) / 255.0
    if is_sketch or photo_mode == "ink":
        ink = 1.0 - grey
    elif photo_mode == "edges":
        gx, gy = ndimage.sobel(grey, axis=1), ndimage.sobel(grey, axis=0)
        ink = np.hypot(gx, gy)
    else:
        raise ValueError(f"photo_mode: expected 'edges' or 'ink', got {photo_mode!r}")
    small = ink.reshape(size, 2, size, 2).mean(axis=(1, 3))
    if sigma > 0:
        small = ndimage.gaussian_filter(small, sigma)
    vec = small.ravel() - small.mean()
    norm = np.linalg.norm(vec)
    return (vec / norm if norm > 0 else vec).astype(np.float32)


def pixel_features(images: Iterable[Image.Image], is_sketch: bool, **kw) -> np.ndarray:
    """Stack :func:`pixel_feature` over images into an (N, size*size) float32 array."""
    rows = [pixel_feature(im, is_sketch, **kw) for im in images]
    return np.stack(rows) if rows else np.zeros((0, kw.get("size", 32) ** 2), np.float32)
