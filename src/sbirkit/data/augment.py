"""Training-time augmentation (``data.augment``): image ops on photos and raster sketches, stroke ops
on vector sketches, seeded per item so a resumed run sees the same augmented batches.

Configured in a preset (off by default, never applied at evaluation)::

    data:
      augment:
        photo:   {crop: [0.8, 1.0], flip: 0.5, rotate: 8, translate: 0.05, color: 0.2}
        sketch:  {crop: [0.8, 1.0], flip: 0.5, rotate: 8, translate: 0.05}
        strokes: {drop: 0.1, jitter: 0.01, width: [0.75, 1.5]}
        pair_flip: same        # same: a sketch and its photo are flipped together; independent

* image ops (``photo`` on photos, ``sketch`` on raster sketches and on rasterised vector ones):
  ``crop`` a random resized crop keeping a fraction of the area in that range (aspect 3:4-4:3)
  and resized back, ``flip`` the probability of a horizontal flip, ``rotate`` a rotation of up to
  that many degrees either way, ``translate`` a shift of up to that fraction of the side,
  ``color`` (photos only) brightness, contrast and saturation factors within 1 ± that value. The
  ops are torchvision's (``transforms.v2.functional``); only their parameters are drawn here,
  from a NumPy generator seeded per item, so nothing touches torch's global RNG.
* stroke ops (``strokes``, vector sketches only, applied before rasterising, which no raster
  pipeline can do): ``drop`` drops each stroke with that probability (one stroke is always kept:
  when every stroke would be dropped, the longest stays), ``jitter`` moves every point by
  Gaussian noise of that fraction of the sketch's larger side, ``width`` scales the stroke width
  by a factor drawn in that range.

Geometry uncovered by an op is filled with white (sketches, edge maps and most product photos
have white backgrounds).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError, EmptySketchError
from .strokes import Strokes

PAIR_FLIP = ("same", "independent")


def _range(value: Any, key: str, low: float, high: float) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not low <= value[0] <= value[1] <= high):
        raise ConfigError(f"data.augment.{key}: expected [a, b] with {low:g} <= a <= b <= {high:g}, got {value!r}")
    return float(value[0]), float(value[1])


def _number(value: Any, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"data.augment.{key}: expected a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ImageOps:
    """Image-space augmentation of one modality (see the module docstring)."""

    crop: tuple[float, float] | None = None
    flip: float = 0.0
    rotate: float = 0.0
    translate: float = 0.0
    color: float = 0.0

    @classmethod
    def parse(cls, values: Mapping[str, Any], where: str) -> ImageOps:
        _check_keys(values, cls, where)
        return cls(crop=_range(values.get("crop"), f"{where}.crop", 0.05, 1.0),
                   flip=_number(values.get("flip", 0.0), f"{where}.flip", 0.0, 1.0),
                   rotate=_number(values.get("rotate", 0.0), f"{where}.rotate", 0.0, 180.0),
                   translate=_number(values.get("translate", 0.0), f"{where}.translate", 0.0, 0.5),
                   color=_number(values.get("color", 0.0), f"{where}.color", 0.0, 1.0))


@dataclass(frozen=True)
class StrokeOps:
    """Stroke-level augmentation of vector sketches (see the module docstring)."""

    drop: float = 0.0
    jitter: float = 0.0
    width: tuple[float, float] | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any], where: str) -> StrokeOps:
        _check_keys(values, cls, where)
        return cls(drop=_number(values.get("drop", 0.0), f"{where}.drop", 0.0, 1.0),
                   jitter=_number(values.get("jitter", 0.0), f"{where}.jitter", 0.0, 0.2),
                   width=_range(values.get("width"), f"{where}.width", 0.1, 10.0))


def _check_keys(values: Any, cls: type, where: str) -> None:
    if not isinstance(values, Mapping):
        raise ConfigError(f"data.augment.{where}: expected a mapping of ops, got {values!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"data.augment.{where}.{unknown[0]}: unknown op; expected one of: {', '.join(known)}")


@dataclass(frozen=True)
class Augment:
    """The ``data.augment`` section, parsed and checked."""

    photo: ImageOps | None = None
    sketch: ImageOps | None = None
    strokes: StrokeOps | None = None
    pair_flip: str = "same"

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> Augment | None:
        """None when off (``data.augment: null`` or an empty mapping)."""
        if not section:
            return None
        if not isinstance(section, Mapping):
            raise ConfigError(f"data.augment: expected a mapping (photo, sketch, strokes, pair_flip), got {section!r}")
        unknown = sorted(set(section) - {"photo", "sketch", "strokes", "pair_flip"})
        if unknown:
            raise ConfigError(f"data.augment.{unknown[0]}: unknown key; expected photo, sketch, strokes or pair_flip")
        pair_flip = section.get("pair_flip", "same")
        if pair_flip not in PAIR_FLIP:
            raise ConfigError(f"data.augment.pair_flip: expected 'same' or 'independent', got {pair_flip!r}")
        return cls(photo=ImageOps.parse(section["photo"], "photo") if section.get("photo") else None,
                   sketch=ImageOps.parse(section["sketch"], "sketch") if section.get("sketch") else None,
                   strokes=StrokeOps.parse(section["strokes"], "strokes") if section.get("strokes") else None,
                   pair_flip=pair_flip)

    def ops(self, modality: str) -> ImageOps | None:
        return self.photo if modality == "photo" else self.sketch

    def flip_probability(self) -> float:
        """The flip probability a shared pair flip uses (the photo's, else the sketch's)."""
        for ops in (self.photo, self.sketch):
            if ops is not None and ops.flip:
                return ops.flip
        return 0.0


def item_rng(*seed: int) -> np.random.Generator:
    """A generator for one item of one step: ``item_rng(run_seed, step, position, modality)``."""
    return np.random.default_rng([int(s) & 0xFFFFFFFF for s in seed])


def augment_image(img: Image.Image, ops: ImageOps, rng: np.random.Generator, *, photo: bool,
                  flip: bool | None = None) -> Image.Image:
    """``img`` with ``ops`` applied (same size); ``flip`` overrides the flip draw (a shared pair flip)."""
    import torchvision.transforms.v2.functional as TF

    width, height = img.size
    do_flip = bool(rng.random() < ops.flip) if flip is None else bool(flip)
    if ops.crop is not None:
        area = rng.uniform(*ops.crop) * width * height
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = min(width, max(1, int(round(math.sqrt(area * ratio)))))
        h = min(height, max(1, int(round(math.sqrt(area / ratio)))))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        img = TF.resized_crop(img, top, left, h, w, [height, width], antialias=True)
    if do_flip:
        img = TF.horizontal_flip(img)
    if ops.rotate or ops.translate:
        angle = float(rng.uniform(-ops.rotate, ops.rotate))
        shift = [int(round(rng.uniform(-ops.translate, ops.translate) * side)) for side in (width, height)]
        img = TF.affine(img, angle=angle, translate=shift, scale=1.0, shear=[0.0, 0.0],
                        interpolation=TF.InterpolationMode.BILINEAR, fill=255)
    if ops.color and photo and img.mode == "RGB":
        for adjust in (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation):
            img = adjust(img, float(rng.uniform(1 - ops.color, 1 + ops.color)))
    return img


def augment_strokes(strokes: Strokes, ops: StrokeOps, rng: np.random.Generator) -> tuple[Strokes, float]:
    """``(augmented strokes, stroke-width factor)``; one stroke always survives ``drop``."""
    if strokes.is_empty():
        raise EmptySketchError(f"{strokes.source}: strokes: expected at least one stroke to augment, got none")
    kept = list(strokes.strokes)
    if ops.drop:
        keep = rng.random(len(kept)) >= ops.drop
        if not keep.any():  # documented fallback: the longest stroke stays, never an empty sketch
            lengths = [float(np.linalg.norm(np.diff(s, axis=0), axis=1).sum()) if len(s) > 1 else 0.0 for s in kept]
            keep[int(np.argmax(lengths))] = True
        kept = [s for s, k in zip(kept, keep) if k]
    if ops.jitter:
        x0, y0, x1, y1 = strokes.bounds()
        sigma = ops.jitter * max(x1 - x0, y1 - y0, 1e-6)
        kept = [s + rng.normal(0.0, sigma, s.shape).astype(np.float32) for s in kept]
    factor = float(rng.uniform(*ops.width)) if ops.width is not None else 1.0
    return Strokes(kept, canvas=strokes.canvas, source=strokes.source), factor


def load_augmented(dataset: Any, sample: Any, augment: Augment, rng: np.random.Generator,
                   size: int | None = None, flip: bool | None = None) -> Image.Image:
    """``sample`` as an augmented RGB image of ``size`` (default the dataset's): stroke ops first
    for a vector sketch, then the modality's image ops."""
    from .strokes import rasterize_sketch

    size = int(size or dataset.image_size)
    img = None
    if sample.is_sketch and augment.strokes is not None:
        strokes = dataset.load_strokes(sample)
        if strokes is not None:
            strokes, factor = augment_strokes(strokes, augment.strokes, rng)
            img = rasterize_sketch(strokes, size, dataset.stroke_width, width_factor=factor).convert("RGB")
    if img is None:
        img = dataset.load_image(sample, size)
    ops = augment.ops(sample.modality.value)
    if ops is not None:
        img = augment_image(img, ops, rng, photo=sample.is_photo, flip=flip)
    return img


def item_seed(run_seed: int, step: int, position: int) -> int:
    """The seed of item ``position`` of step ``step``: a fixed function of the three (resume-exact)."""
    return int(np.random.SeedSequence([int(run_seed) & 0xFFFFFFFF, int(step), int(position), 0xA06])
               .generate_state(1)[0])
