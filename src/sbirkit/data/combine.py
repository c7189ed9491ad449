"""One SBIR dataset from two sources: sketches from one, photos from another (e.g. Quick, Draw! → CIFAR-10).

Classes are matched by normalised name, or through an explicit map from a photo class to one or
more sketch classes (``{"ship": ["cruise ship", "sailboat", "speedboat"]}``). Classes with no
counterpart are dropped and listed in :class:`CombineReport` (and logged), never silently.
Reading delegates to the source of each sample, so each source keeps its own rasterising options.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .classnames import normalize_class_name
from .dataset import SBIRDataset
from .records import DataError, Sample
from .registry import create_dataset, register_dataset
from .strokes import Strokes

log = logging.getLogger(__name__)

ClassMap = Mapping[str, "str | Sequence[str]"]


@dataclass
class CombineReport:
    """How the two sources were joined: each class's sketch classes, and everything dropped."""

    matched: dict[str, list[str]] = field(default_factory=dict)  # combined (photo) class -> sketch classes
    dropped_photo_classes: list[str] = field(default_factory=list)
    dropped_sketch_classes: list[str] = field(default_factory=list)
    dropped_photos: int = 0  # samples of the dropped classes
    dropped_sketches: int = 0
    sketch_splits: dict[str, int] = field(default_factory=dict)  # sketches per assigned split
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "matched": {k: list(v) for k, v in self.matched.items()},
            "dropped_photo_classes": list(self.dropped_photo_classes),
            "dropped_sketch_classes": list(self.dropped_sketch_classes),
            "dropped_photos": self.dropped_photos,
            "dropped_sketches": self.dropped_sketches,
            "sketch_splits": dict(self.sketch_splits),
            "notes": list(self.notes),
        }

    def describe(self) -> str:
        """One line: kept classes, then what was dropped (what the log says)."""
        text = f"{len(self.matched)} classes kept"
        if self.dropped_photo_classes:
            text += (f"; photo classes without sketches dropped ({self.dropped_photos} photos): "
                     f"{', '.join(self.dropped_photo_classes)}")
        if self.dropped_sketch_classes:
            names = self.dropped_sketch_classes
            shown = ", ".join(names[:20]) + (f" ... (+{len(names) - 20})" if len(names) > 20 else "")
            text += f"; sketch classes without photos dropped ({self.dropped_sketches} sketches): {shown}"
        return text


class CombinedDataset(SBIRDataset):
    """Sketches of ``sketch_source`` and photos of ``photo_source`` under one class list.

    ``origin`` maps each combined sample key to ``(source, original sample)``; :meth:`read` and
    :meth:`load_image` ask that source. ``report`` says what was matched and dropped.
    """

    name = "combined"

    def __init__(self, origin: dict[str, tuple[SBIRDataset, Sample]], report: CombineReport, **kwargs):
        self._origin = origin
        self.report = report
        super().__init__(**kwargs)

    def source_of(self, sample: Sample) -> tuple[SBIRDataset, Sample]:
        """The source dataset and its own record of ``sample``."""
        try:
            return self._origin[sample.key]
        except KeyError:
            raise DataError(f"{sample.location()}: key: expected a sample of this combined dataset, "
                            f"got {sample.key!r}") from None

    def read(self, sample: Sample) -> Image.Image | Strokes:
        source, original = self.source_of(sample)
        return source.read(original)

    def load_image(self, sample: Sample, size: int | None = None) -> Image.Image:
        source, original = self.source_of(sample)
        return source.load_image(original, size or self.image_size)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["combine"] = self.report.as_dict()
        return out


def _names(value: str | Sequence[str], where: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(f"{where}: expected a sketch class name or a non-empty list of them, got {value!r}")
    return names


def match_classes(photo_classes: Sequence[str], sketch_classes: Sequence[str],
                  class_map: ClassMap | None = None, where: str = "combined") -> CombineReport:
    """Pair each photo class with its sketch classes: ``class_map`` first, else the same normalised name.

    Every name in ``class_map`` must exist on its side, and a sketch class may serve one photo
    class only; a violation is a :class:`DataError` naming the entry.
    """
    photo_by = {normalize_class_name(c): c for c in photo_classes}
    sketch_by = {normalize_class_name(c): c for c in sketch_classes}
    explicit: dict[str, list[str]] = {}
    for photo_name, value in (class_map or {}).items():
        key = normalize_class_name(photo_name)
        if key not in photo_by:
            raise DataError(f"{where}: class_map: expected photo class names as keys, {photo_name!r} is not one of "
                            f"the {len(photo_classes)} photo classes")
        sketches = []
        for name in _names(value, f"{where}: class_map[{photo_name!r}]"):
            if normalize_class_name(name) not in sketch_by:
                raise DataError(f"{where}: class_map[{photo_name!r}]: expected sketch class names, {name!r} is not "
                                f"one of the {len(sketch_classes)} sketch classes")
            sketches.append(sketch_by[normalize_class_name(name)])
        explicit[key] = sketches
    report = CombineReport()
    owner: dict[str, str] = {}
    for photo in photo_classes:
        key = normalize_class_name(photo)
        if key in explicit:
            sketches = explicit[key]
        elif key in sketch_by:
            sketches = [sketch_by[key]]
        else:
            report.dropped_photo_classes.append(photo)
            continue
        for s in sketches:
            if s in owner:
                raise DataError(f"{where}: class_map: expected each sketch class under one photo class, {s!r} "
                                f"serves both {owner[s]!r} and {photo!r}")
            owner[s] = photo
        report.matched[photo] = sketches
    report.dropped_sketch_classes = [c for c in sketch_classes if c not in owner]
    return report


def check_fractions(fractions: Mapping[str, float], where: str = "sketch_splits") -> dict[str, float]:
    """``{split: fraction}`` with fractions in [0, 1] that sum to 1."""
    if not isinstance(fractions, Mapping) or not fractions:
        raise DataError(f"{where}: expected a mapping split -> fraction (e.g. {{train: 0.7, test: 0.3}}), "
                        f"got {fractions!r}")
    out = {}
    for split, f in fractions.items():
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise DataError(f"{where}.{split}: expected a fraction in [0, 1], got {f!r}")
        out[str(split)] = float(f)
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise DataError(f"{where}: expected fractions that sum to 1, got {sum(out.values()):.6g}")
    return out


def split_per_class(samples: Sequence[Sample], fractions: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """Key -> split: within each class, a seeded permutation cut at the cumulative fractions.

    A class of n samples gives split k ``round(n·F_k) - round(n·F_{k-1})`` samples (F the running
    sum), so counts add up exactly. The permutation depends only on the seed, the class name and
    the class's sample keys, so adding or removing other classes changes nothing here.
    """
    fractions = check_fractions(fractions)
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.class_name].append(s)
    names = list(fractions)
    cumulative = np.cumsum([fractions[n] for n in names])
    out: dict[str, str] = {}
    for cls, members in by_class.items():
        members = sorted(members, key=lambda s: s.key)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(normalize_class_name(cls).encode())])
        order = rng.permutation(len(members))
        cuts = [0, *np.rint(len(members) * cumulative).astype(int).tolist()]
        cuts[-1] = len(members)
        for name, lo, hi in zip(names, cuts[:-1], cuts[1:]):
            for i in order[lo:hi]:
                out[members[i].key] = name
    return out


def combine_datasets(
    sketch_source: SBIRDataset,
    photo_source: SBIRDataset,
    class_map: ClassMap | None = None,
    name: str = "combined",
    *,
    sketch_splits: Mapping[str, float] | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> CombinedDataset:
    """One dataset with the sketches of ``sketch_source`` and the photos of ``photo_source``.

    Classes follow ``photo_source``'s order, named as there; ``class_map`` maps a photo class to
    one or more sketch classes (others match by normalised name). Unmatched classes are dropped
    and reported in ``dataset.report``. Splits are kept from the sources, except that
    ``sketch_splits`` (e.g. ``{"train": .6, "val": .1, "test": .3}``) re-splits the sketches per
    class with ``seed``. Keys and instance ids get a ``sketch:``/``photo:`` prefix: samples of
    different sources are never treated as drawn from one another.
    """
    where = f"{name} ({sketch_source.name} sketches + {photo_source.name} photos)"
    report = match_classes(photo_source.classes, sketch_source.classes, class_map, where)
    classes = list(report.matched)
    if not classes:
        raise DataError(f"{where}: classes: expected at least one class on both sides (by name or class_map), "
                        f"found none; photo classes: {', '.join(photo_source.classes[:10])} ...")
    index_of_photo = {c: i for i, c in enumerate(classes)}
    index_of_sketch = {s: (i, c) for c, i in index_of_photo.items() for s in report.matched[c]}

    sketches = [s for s in sketch_source.sketches() if sketch_source.classes[s.class_index] in index_of_sketch]
    photos = [p for p in photo_source.photos() if photo_source.classes[p.class_index] in index_of_photo]
    report.dropped_sketches = len(sketch_source.sketches()) - len(sketches)
    report.dropped_photos = len(photo_source.photos()) - len(photos)
    ignored = len(sketch_source.photos()) + len(photo_source.sketches())
    if ignored:
        report.notes.append(f"{len(sketch_source.photos())} photos of the sketch source and "
                            f"{len(photo_source.sketches())} sketches of the photo source are not used")

    origin: dict[str, tuple[SBIRDataset, Sample]] = {}
    samples: list[Sample] = []
    for side, source, members in (("sketch", sketch_source, sketches), ("photo", photo_source, photos)):
        for s in members:
            source_class = source.classes[s.class_index]
            if side == "sketch":
                index, cls = index_of_sketch[source_class]
            else:
                index, cls = index_of_photo[source_class], source_class
            key = f"{side}:{s.key}"
            if key in origin:
                raise DataError(f"{s.location()}: key: expected unique sample keys in {source.name}, {s.key!r} repeats")
            combined = Sample(key=key, modality=s.modality, class_index=index, class_name=cls, source=s.source,
                              index=s.index, instance_id=None if s.instance_id is None else f"{side}:{s.instance_id}",
                              user_id=s.user_id, split=s.split)
            origin[key] = (source, s)
            samples.append(combined)

    if sketch_splits is not None:
        assign = split_per_class([s for s in samples if s.is_sketch], sketch_splits, seed)
        samples = [s.with_split(assign[s.key]) if s.is_sketch else s for s in samples]
        photo_splits = {p.split for p in samples if p.is_photo}
        for split in check_fractions(sketch_splits):
            if split not in photo_splits and sketch_splits[split] > 0:
                report.notes.append(f"sketch split {split!r} has no photos of split {split!r} "
                                    "(for validation on photos of train, use data.val_fraction instead)")
    counts: dict[str, int] = defaultdict(int)
    for s in samples:
        if s.is_sketch:
            counts[str(s.split)] += 1
    report.sketch_splits = dict(sorted(counts.items()))

    log.info("%s: %s", where, report.describe())
    for note in report.notes:
        log.info("%s: %s", where, note)
    dataset = CombinedDataset(
        origin,
        report,
        classes=classes,
        samples=samples,
        root=photo_source.root,
        image_size=image_size or photo_source.image_size,
        stroke_width=sketch_source.stroke_width,
        skipped=[*sketch_source.skipped, *photo_source.skipped],
    )
    dataset.name = name
    return dataset


def _source(spec: Any, field_name: str, base: str | None) -> SBIRDataset:
    """Build one side from ``{name, root, options}``; a relative root is taken under ``base``."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise DataError(f"data.options.{field_name}: expected {{name: <dataset format>, root: PATH, options: {{...}}}}, "
                        f"got {spec!r}")
    unknown = sorted(set(spec) - {"name", "root", "options"})
    if unknown:
        raise DataError(f"data.options.{field_name}: unknown key {unknown[0]!r}; expected name, root, options")
    root = spec.get("root")
    if root is not None and base is not None and not os.path.isabs(os.path.expanduser(str(root))):
        root = str(Path(base) / str(root))
    options = spec.get("options") or {}
    if not isinstance(options, Mapping):
        raise DataError(f"data.options.{field_name}.options: expected a mapping of loader options, got {options!r}")
    return create_dataset(spec["name"], root, **dict(options))


@register_dataset("combined")
def combined(
    root: str | None = None,
    *,
    sketches: Mapping[str, Any] | None = None,
    photos: Mapping[str, Any] | None = None,
    class_map: ClassMap | None = None,
    sketch_splits: Mapping[str, float] | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> CombinedDataset:
    """Sketches of one dataset + photos of another (``sketches``/``photos``: {name, root, options}).

    ``root`` (optional) is the folder relative source roots are taken from, so one override
    (``data.root=/path/to/data``) points both sources at a user's copy.
    """
    if sketches is None or photos is None:
        raise DataError("data.options: combined: expected both 'sketches' and 'photos' sources, got "
                        f"{'sketches' if sketches is not None else 'no sketches'} and "
                        f"{'photos' if photos is not None else 'no photos'}")
    sketch_ds = _source(sketches, "sketches", root)
    photo_ds = _source(photos, "photos", root)
    return combine_datasets(sketch_ds, photo_ds, class_map, sketch_splits=sketch_splits, seed=seed,
                            image_size=image_size)


__all__ = ["CombineReport", "CombinedDataset", "check_fractions", "combine_datasets", "match_classes",
           "split_per_class"]
