"""``SyntheticSBIR``: the procedural sketch/photo dataset, rendered on the fly, needing no files.

Every sample renders from (seed, class, instance[, user, sketch number]) through its own
``numpy.random.Generator``, so a sample looks the same every time, in any access order and in
any subset (the first N classes of a bigger dataset render identically).
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ..dataset import SBIRDataset
from ..records import DataError, Modality, Sample
from ..registry import register_dataset
from ..strokes import Strokes, rasterize
from .photo import render_photo
from .primitives import Shape
from .shapes import CLASS_NAMES, make_shape
from .sketch import draw_sketch
from .styles import UserStyle, make_users

DEFAULT_SPLITS: dict[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}
_GEOMETRY, _PHOTO, _SKETCH, _SPLIT = 0, 1, 2, 3


def _tag(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def sample_rng(seed: int, *ids: int) -> np.random.Generator:
    """A generator seeded from the dataset seed and a sample's ids (no global state)."""
    return np.random.default_rng([int(seed) % (1 << 64), *ids])


@lru_cache(maxsize=4096)
def instance_shape(seed: int, class_name: str, instance: int) -> Shape:
    """The geometry of instance ``instance`` of ``class_name``; shared by its photo and sketches."""
    return make_shape(class_name, sample_rng(seed, _GEOMETRY, _tag(class_name), instance))


def assign_splits(n: int, fractions: Mapping[str, float], rng: np.random.Generator) -> list[str]:
    """Split ``n`` items by ``fractions`` (largest-remainder rounding), in a seeded random order."""
    names = list(fractions)
    raw = np.array([fractions[k] for k in names], dtype=float) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    labels = np.empty(n, dtype=object)
    perm, pos = rng.permutation(n), 0
    for name, c in zip(names, counts):
        labels[perm[pos : pos + c]] = name
        pos += c
    return list(labels)


class SyntheticSBIR(SBIRDataset):
    """Procedural SBIR data: ``num_classes`` shape classes (the first N of :data:`CLASS_NAMES`, or
    the ``classes`` named), ``photos_per_class`` instances each, and ``sketches_per_photo``
    sketches of every photo, each drawn by one of ``users`` styles chosen by rotation.

    Photos have ``instance_id`` = their own id (``"house/0003"``); sketches share their photo's
    and carry a ``user_id`` (the style name). ``splits`` maps split names to fractions of each
    class's instances (a sketch takes its photo's split); ``None`` leaves samples unsplit.
    A sketch is rasterised with its user's line width (``UserStyle.width``, px at 64 px).
    """

    name = "synthetic"

    def __init__(
        self,
        num_classes: int | None = None,
        photos_per_class: int = 30,
        sketches_per_photo: int = 1,
        users: int | Sequence[UserStyle] = 4,
        image_size: int = 64,
        seed: int = 0,
        splits: Mapping[str, float] | None = DEFAULT_SPLITS,
        classes: Sequence[str] | None = None,
    ):
        names = self._class_names(num_classes, classes)
        if photos_per_class < 1:
            raise ValueError(f"photos_per_class: expected at least 1, got {photos_per_class}")
        if sketches_per_photo < 0:
            raise ValueError(f"sketches_per_photo: expected 0 or more, got {sketches_per_photo}")
        if int(image_size) < 8:
            raise ValueError(f"image_size: expected at least 8 pixels, got {image_size}")
        if splits is not None:
            fr = dict(splits)
            if not fr or any(v < 0 for v in fr.values()) or abs(sum(fr.values()) - 1.0) > 1e-6:
                raise ValueError(f"splits: expected non-negative fractions summing to 1, got {fr}")
        self.seed = int(seed)
        self.styles = make_users(users, self.seed)
        self._user_index = {s.name: i for i, s in enumerate(self.styles)}
        self._specs: dict[str, tuple[str, int, int, int]] = {}  # key -> (class, instance, user, n)
        photos, sketches = [], []
        for ci, cname in enumerate(names):
            if splits is None:
                split_of = [None] * photos_per_class
            else:
                split_of = assign_splits(photos_per_class, splits, sample_rng(self.seed, _SPLIT, _tag(cname)))
            for i in range(photos_per_class):
                iid = f"{cname}/{i:04d}"
                key = f"photo/{iid}"
                photos.append(Sample(key, Modality.PHOTO, ci, cname, instance_id=iid, split=split_of[i]))
                self._specs[key] = (cname, i, -1, 0)
                for n in range(sketches_per_photo):
                    u = (ci + i + n) % len(self.styles)
                    key = f"sketch/{iid}-{n + 1}"
                    sketches.append(
                        Sample(
                            key,
                            Modality.SKETCH,
                            ci,
                            cname,
                            instance_id=iid,
                            user_id=self.styles[u].name,
                            split=split_of[i],
                        )
                    )
                    self._specs[key] = (cname, i, u, n)
        super().__init__(names, photos + sketches, image_size=int(image_size), stroke_width=2.0)

    @staticmethod
    def _class_names(num_classes: int | None, classes: Sequence[str] | None) -> list[str]:
        if classes is not None:
            unknown = [c for c in classes if c not in CLASS_NAMES]
            if unknown or not classes:
                raise ValueError(f"classes: expected names from {', '.join(CLASS_NAMES)}; unknown: {unknown}")
            return list(classes)
        n = len(CLASS_NAMES) if num_classes is None else int(num_classes)
        if not 1 <= n <= len(CLASS_NAMES):
            raise ValueError(f"num_classes: expected 1..{len(CLASS_NAMES)}, got {num_classes}")
        return list(CLASS_NAMES[:n])

    # ---- rendering ---------------------------------------------------------------------
    def _spec(self, sample: Sample) -> tuple[str, int, int, int]:
        try:
            return self._specs[sample.key]
        except KeyError:
            raise DataError(
                f"{sample.location()}: key: expected a sample of this synthetic dataset, got {sample.key!r}"
            ) from None

    def user_index(self, user: str | int) -> int:
        if isinstance(user, (int, np.integer)):
            if not 0 <= user < len(self.styles):
                raise ValueError(f"user: expected 0..{len(self.styles) - 1}, got {user}")
            return int(user)
        if user not in self._user_index:
            raise ValueError(f"user: expected one of {list(self._user_index)}, got {user!r}")
        return self._user_index[user]

    def shape(self, sample: Sample) -> Shape:
        """The geometry a sample was rendered from (its instance's shape)."""
        cname, i, _, _ = self._spec(sample)
        return instance_shape(self.seed, cname, i)

    def render_photo(self, class_name: str, instance: int, size: int | None = None) -> Image.Image:
        size = int(size or self.image_size)
        rng = sample_rng(self.seed, _PHOTO, _tag(class_name), instance)
        return render_photo(instance_shape(self.seed, class_name, instance), size, rng)

    def render_sketch(self, class_name: str, instance: int, user: str | int, number: int = 0) -> Strokes:
        """Sketch ``number`` of an instance as drawn by ``user`` (any user, not only the assigned one)."""
        style = self.styles[self.user_index(user)]
        rng = sample_rng(self.seed, _SKETCH, _tag(class_name), instance, _tag(style.name), number)
        where = f"<synthetic sketch/{class_name}/{instance:04d}-{number + 1} by {style.name}>"
        return draw_sketch(instance_shape(self.seed, class_name, instance), style, rng, where)

    def sketch_image(self, strokes: Strokes, user: str | int, size: int | None = None) -> Image.Image:
        """Rasterise ``strokes`` with ``user``'s line width (scaled with ``size``); grey ``L``."""
        size = int(size or self.image_size)
        width = self.styles[self.user_index(user)].width * size / 64.0
        return rasterize(strokes, size, stroke_width=width, supersample=2)

    def read(self, sample: Sample) -> Image.Image | Strokes:
        """A photo (PIL RGB at ``image_size``) or a sketch (:class:`Strokes` on the unit canvas)."""
        cname, i, u, n = self._spec(sample)
        if u < 0:
            return self.render_photo(cname, i)
        return self.render_sketch(cname, i, u, n)

    def load_image(self, sample: Sample, size: int | None = None) -> Image.Image:
        """RGB image at ``size``: photos are rendered at that size, sketches drawn with their
        user's line width."""
        cname, i, u, n = self._spec(sample)
        if u < 0:
            return self.render_photo(cname, i, size)
        return self.sketch_image(self.render_sketch(cname, i, u, n), u, size).convert("RGB")


@register_dataset("synthetic")
def synthetic(root: str | None = None, **options) -> SyntheticSBIR:
    """Procedural sketch/photo dataset: 24 shape classes, 4 drawing styles; needs no files."""
    return SyntheticSBIR(**options)
