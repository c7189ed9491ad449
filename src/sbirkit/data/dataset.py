"""``SBIRDataset``: classes, photos, sketches and their pairing, with lazy loading.

Every loader (folder layouts, Sketchy, QMUL, Quick, Draw!, the synthetic generator) builds one
of these from a list of :class:`Sample` records and implements :meth:`SBIRDataset.read`.
Everything downstream (samplers, training, evaluation, indexing) sees only this interface.

Raster images are shrunk by :func:`resize_image` (line drawings keep their thin lines dark) in
time linear in their pixels; an image over :data:`MAX_IMAGE_PIXELS` is refused with a one-line
:class:`DataError` naming its file, before any filtering.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from .classnames import class_lookup, normalize_class_name
from .records import DataError, EmptySketchError, Modality, Sample
from .strokes import Strokes, rasterize

#: Largest raster image (width × height) that sbirkit will shrink: 50 megapixels, which admits
#: 48-MP phone photos (8000×6000) and stays below Pillow's decompression-bomb limit (about
#: 89 MP). Shrinking is linear in the pixels: a 48-MP query takes under 1 s on one core (BENCHMARKS.md).
MAX_IMAGE_PIXELS = 50_000_000


@dataclass
class SkippedFile:
    """A file (or a row of one) that could not be read, and why."""

    path: str
    reason: str


@dataclass
class ValidationReport:
    """What :meth:`SBIRDataset.validate` found: how many samples decoded, and every failure."""

    checked: int = 0
    failures: list[SkippedFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image as a float ``(C, H, W)`` tensor in [0, 1] (grey images get one channel), the
    form every dataset, sampler, source and cache hands to a model."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


_pil_to_tensor = pil_to_tensor  # the old private name, until the branches that import it have merged


class SBIRDataset:
    """A sketch/photo dataset: ``classes``, ``samples`` and how to read each sample.

    Class indices are global to the dataset: a subset (one split, the unseen classes of a
    zero-shot split) keeps the same ``classes`` list and indices, so labels never get renumbered.

    ``image_size`` and ``stroke_width`` set how vector sketches are rasterised and the size
    images are returned at by :meth:`load_image`.
    """

    name: str = "dataset"

    def __init__(
        self,
        classes: Sequence[str],
        samples: Sequence[Sample],
        *,
        root: str | None = None,
        image_size: int = 64,
        stroke_width: float = 2.0,
        skipped: Sequence[SkippedFile] = (),
    ):
        self.classes = list(classes)
        self.samples = list(samples)
        self.root = root
        self.image_size = int(image_size)
        self.stroke_width = float(stroke_width)
        self.skipped = list(skipped)
        self._class_lookup = class_lookup(self.classes)
        for s in self.samples:
            if not 0 <= s.class_index < len(self.classes):
                raise DataError(f"{s.location()}: class_index: expected 0..{len(self.classes) - 1}, got {s.class_index}")

    # ---- reading -------------------------------------------------------------------------
    def read(self, sample: Sample) -> Image.Image | Strokes:
        """Return the raw sample: a PIL image, or :class:`Strokes` for vector sketches."""
        raise NotImplementedError(f"{type(self).__name__} does not implement read()")

    def load_strokes(self, sample: Sample) -> Strokes | None:
        """The stroke sequence of a vector sketch, or None for raster samples."""
        raw = self._read_checked(sample)
        return raw if isinstance(raw, Strokes) else None

    def load_image(self, sample: Sample, size: int | None = None) -> Image.Image:
        """An RGB image of the sample at ``size`` (default ``image_size``) pixels square.

        Sketches are black ink on white; vector sketches are rasterised with ``stroke_width``.
        A blank sketch raises :class:`EmptySketchError` naming its file.
        """
        size = int(size or self.image_size)
        raw = self._read_checked(sample)
        if isinstance(raw, Strokes):
            if raw.is_empty():
                raise EmptySketchError(f"{sample.location()}: strokes: expected at least one stroke, got an empty sketch")
            return rasterize(raw, size, stroke_width=self.stroke_width * size / 64.0).convert("RGB")
        img = raw.convert("RGB")
        if sample.is_sketch:
            empty_sketch_check(img, sample.location())
        if img.size != (size, size):
            img = resize_image(img, size, thicken=sample.is_sketch or _is_line_art(img), where=sample.location())
        return img

    def _read_checked(self, sample: Sample) -> Image.Image | Strokes:
        try:
            return self.read(sample)
        except DataError:
            raise
        except Exception as exc:  # decoding failures from PIL, scipy, json ... name the file
            raise DataError(f"{sample.location()}: could not decode {sample.modality.value}: {exc}") from exc

    # ---- selection -----------------------------------------------------------------------
    def class_index(self, name: str) -> int:
        """Index of a class by any spelling that normalises to it (``teddy_bear`` == ``teddy-bear``)."""
        key = normalize_class_name(name)
        if key not in self._class_lookup:
            raise KeyError(f"{self.name}: class {name!r} not found (normalised {key!r}); {len(self.classes)} classes")
        return self._class_lookup[key]

    def select(
        self,
        modality: str | Modality | None = None,
        split: str | Iterable[str] | None = None,
        classes: Iterable[str | int] | None = None,
        users: Iterable[str] | None = None,
    ) -> list[Sample]:
        """Samples matching every filter given (None means any)."""
        mod = Modality.parse(modality) if modality is not None else None
        splits = {split} if isinstance(split, str) else (set(split) if split is not None else None)
        cls = None
        if classes is not None:
            cls = {c if isinstance(c, int) else self.class_index(c) for c in classes}
        usr = set(users) if users is not None else None
        return [
            s
            for s in self.samples
            if (mod is None or s.modality is mod)
            and (splits is None or s.split in splits)
            and (cls is None or s.class_index in cls)
            and (usr is None or s.user_id in usr)
        ]

    def photos(self, split=None, classes=None) -> list[Sample]:
        return self.select(Modality.PHOTO, split, classes)

    def sketches(self, split=None, classes=None, users=None) -> list[Sample]:
        return self.select(Modality.SKETCH, split, classes, users)

    def pairs(self, split: str | None = None) -> list[tuple[Sample, Sample]]:
        """(sketch, photo) pairs that share an ``instance_id`` (fine-grained datasets)."""
        by_instance: dict[str, Sample] = {}
        for p in self.photos(split):
            if p.instance_id is not None:
                by_instance[p.instance_id] = p
        return [(s, by_instance[s.instance_id]) for s in self.sketches(split) if s.instance_id in by_instance]

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples if s.split is not None})

    @property
    def users(self) -> list[str]:
        return sorted({s.user_id for s in self.samples if s.user_id is not None})

    def subset(self, samples: Iterable[Sample]) -> "SBIRDataset":
        """A view over some of the samples: same classes, indices and reader."""
        view = copy.copy(self)
        view.samples = list(samples)
        return view

    def with_split(self, assign: Callable[[Sample], str | None]) -> "SBIRDataset":
        """A view whose samples get the split ``assign(sample)`` returns."""
        return self.subset(s.with_split(assign(s)) for s in self.samples)

    # ---- torch -----------------------------------------------------------------------------
    def torch_dataset(
        self,
        modality: str | Modality,
        split: str | Iterable[str] | None = None,
        classes: Iterable[str | int] | None = None,
        users: Iterable[str] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        size: int | None = None,
    ) -> "SampleDataset":
        return SampleDataset(self, self.select(modality, split, classes, users), transform, size)

    # ---- reporting -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts per modality, split, class and user (what ``sbirkit data info`` prints)."""
        out: dict[str, Any] = {
            "name": self.name,
            "root": self.root,
            "classes": len(self.classes),
            "samples": len(self.samples),
            "by_modality": dict(Counter(s.modality.value for s in self.samples)),
            "by_split": {},
            "by_class": {},
            "by_user": dict(Counter(s.user_id for s in self.samples if s.user_id is not None)),
            "pairs": {},
            "skipped": len(self.skipped),
        }
        by_split: dict[str, Counter] = defaultdict(Counter)
        by_class: dict[str, Counter] = defaultdict(Counter)
        for s in self.samples:
            by_split[s.split if s.split is not None else "(none)"][s.modality.value] += 1
            by_class[self.classes[s.class_index]][s.modality.value] += 1
        out["by_split"] = {k: dict(v) for k, v in sorted(by_split.items())}
        out["by_class"] = {c: dict(by_class.get(c, {})) for c in self.classes}
        for split in self.splits or [None]:
            n = len(self.pairs(split))
            if n:
                out["pairs"][split if split is not None else "(none)"] = n
        return out

    def validate(self, progress: bool = False) -> ValidationReport:
        """Decode every sample once; count what fails (with the reason) instead of stopping."""
        from tqdm.auto import tqdm

        report = ValidationReport(failures=list(self.skipped))
        for s in tqdm(self.samples, desc=f"validating {self.name}", disable=not progress, unit="sample"):
            try:
                self.load_image(s, size=min(self.image_size, 64))
                report.checked += 1
            except DataError as exc:
                report.failures.append(SkippedFile(s.location(), str(exc)))
        return report

    def __repr__(self) -> str:
        counts = Counter(s.modality.value for s in self.samples)
        return (
            f"{type(self).__name__}(name={self.name!r}, classes={len(self.classes)}, "
            f"photos={counts.get('photo', 0)}, sketches={counts.get('sketch', 0)})"
        )


class SampleDataset(torch.utils.data.Dataset):
    """A torch ``Dataset`` over some samples of one ``SBIRDataset``.

    Items are dicts: ``image`` (the transform's output; default a float tensor C×H×W in [0, 1]),
    ``label`` (class index), ``instance`` (index into ``instances``, -1 if none), ``user``
    (index into ``users``, -1 if none) and ``index`` (position in ``samples``).
    """

    def __init__(self, dataset: SBIRDataset, samples: Sequence[Sample], transform=None, size: int | None = None):
        self.dataset = dataset
        self.samples = list(samples)
        self.transform = transform
        self.size = size
        self.instances = sorted({s.instance_id for s in self.samples if s.instance_id is not None})
        self.users = sorted({s.user_id for s in self.samples if s.user_id is not None})
        self._instance_idx = {k: i for i, k in enumerate(self.instances)}
        self._user_idx = {k: i for i, k in enumerate(self.users)}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.class_index for s in self.samples], dtype=np.int64)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        img = self.dataset.load_image(s, self.size)
        image = self.transform(img) if self.transform is not None else pil_to_tensor(img)
        return {
            "image": image,
            "label": s.class_index,
            "instance": self._instance_idx.get(s.instance_id, -1),
            "user": self._user_idx.get(s.user_id, -1),
            "index": i,
        }


def _is_line_art(img: Image.Image) -> bool:
    """Mostly white with dark lines (an edge-map photo, as in QMUL-V1)."""
    grey = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.NEAREST))
    return float(np.median(grey)) >= 240


def check_image_pixels(width: int, height: int, where: str) -> None:
    """Raise :class:`DataError` naming ``where`` when ``width * height`` exceeds :data:`MAX_IMAGE_PIXELS`."""
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{where}: pixels: expected at most {MAX_IMAGE_PIXELS:,} pixels ({MAX_IMAGE_PIXELS / 1e6:g} MP), "
            f"got {width}x{height} = {width * height:,}; shrink the image first"
        )


def resize_image(img: Image.Image, size: int | tuple[int, int], thicken: bool, where: str = "<image>") -> Image.Image:
    """Resize to ``size`` (an int for size×size, or (width, height)).

    Shrinking a line drawing by 3× or more first widens its dark lines (a min filter about half
    the shrink factor wide), so thin ink does not fade to grey. The min filter is a separable
    running minimum (``scipy.ndimage.minimum_filter``: a constant number of comparisons per
    pixel whatever its width), so the cost is linear in the input pixels; the result is the same
    as Pillow's ``MinFilter`` of that width. An image over :data:`MAX_IMAGE_PIXELS` raises
    :class:`DataError` naming ``where``.
    """
    out_w, out_h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    check_image_pixels(img.width, img.height, where)
    factor = min(img.width / out_w, img.height / out_h)
    if thicken and factor >= 3:
        from scipy import ndimage

        if img.mode not in ("L", "RGB", "RGBA", "I", "F"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB" if len(img.getbands()) > 1 else "L")
        arr = np.asarray(img)
        k = max(3, int(factor // 2) * 2 - 1)
        img = Image.fromarray(ndimage.minimum_filter(arr, size=(k, k) + (1,) * (arr.ndim - 2), mode="nearest"))
    return img.resize((out_w, out_h), Image.Resampling.BOX if factor >= 2 else Image.Resampling.BILINEAR)


def empty_sketch_check(img: Image.Image, where: str) -> None:
    """Raise :class:`EmptySketchError` when a raster sketch has no ink (every pixel near white)."""
    if np.asarray(img.convert("L")).min() >= 250:
        raise EmptySketchError(f"{where}: pixels: expected ink on the sketch, got a blank image")
