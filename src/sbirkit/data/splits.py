"""Zero-shot class splits: named manifests shipped with the package, and seeded random splits.

A manifest lists the *unseen* (test) classes of a published protocol, one per line; every other
class of the dataset is seen. Names are matched after :func:`normalize_class_name`, and a name
the dataset does not have is an error, never a silent miss.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..errors import UnknownNameError
from .classnames import normalize_class_name
from .dataset import SBIRDataset
from .records import DataError


@dataclass(frozen=True)
class ClassSplit:
    """Seen and unseen class names of one zero-shot protocol (names as the dataset spells them)."""

    name: str
    seen: tuple[str, ...]
    unseen: tuple[str, ...]

    def seen_indices(self, dataset: SBIRDataset) -> list[int]:
        return [dataset.class_index(c) for c in self.seen]

    def unseen_indices(self, dataset: SBIRDataset) -> list[int]:
        return [dataset.class_index(c) for c in self.unseen]


def list_manifests() -> list[str]:
    folder = resources.files("sbirkit.data") / "manifests"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def read_manifest(name: str) -> list[str]:
    """The unseen class names listed in the manifest ``name`` (e.g. ``sketchy_25``)."""
    if name not in list_manifests():
        raise UnknownNameError(f"unknown split manifest {name!r}; known: {', '.join(list_manifests())}")
    text = (resources.files("sbirkit.data") / "manifests" / f"{name}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def split_from_names(classes: list[str], unseen: list[str], name: str = "custom") -> ClassSplit:
    """Split ``classes`` into seen/unseen; every unseen name must be one of ``classes``."""
    lookup = {normalize_class_name(c): c for c in classes}
    missing = [u for u in unseen if normalize_class_name(u) not in lookup]
    if missing:
        raise DataError(
            f"split {name}: unseen classes: expected names of the dataset's {len(classes)} classes, "
            f"not found: {', '.join(repr(m) for m in missing)}"
        )
    unseen_canon = {normalize_class_name(u) for u in unseen}
    unseen_names = tuple(lookup[normalize_class_name(u)] for u in unseen)
    seen_names = tuple(c for c in classes if normalize_class_name(c) not in unseen_canon)
    return ClassSplit(name, seen_names, unseen_names)


def manifest_split(dataset: SBIRDataset | list[str], name: str) -> ClassSplit:
    """The named published split applied to a dataset (or a class list)."""
    classes = dataset.classes if isinstance(dataset, SBIRDataset) else list(dataset)
    return split_from_names(classes, read_manifest(name), name)


def random_split(dataset: SBIRDataset | list[str], n_unseen: int, seed: int = 0) -> ClassSplit:
    """Hold out ``n_unseen`` classes chosen by a seeded permutation (same seed, same split)."""
    classes = dataset.classes if isinstance(dataset, SBIRDataset) else list(dataset)
    if not 0 < n_unseen < len(classes):
        raise ValueError(f"n_unseen: expected 1..{len(classes) - 1}, got {n_unseen}")
    order = np.random.default_rng(seed).permutation(len(classes))
    unseen = [classes[i] for i in sorted(order[:n_unseen])]
    return split_from_names(classes, unseen, f"random{n_unseen}_seed{seed}")


def resolve_split(dataset: SBIRDataset, spec: str) -> ClassSplit:
    """``spec`` is a manifest name, or ``random:N[:SEED]``."""
    if spec.startswith("random:"):
        parts = spec.split(":")
        return random_split(dataset, int(parts[1]), int(parts[2]) if len(parts) > 2 else 0)
    return manifest_split(dataset, spec)


# ---- applying splits to a dataset: the zero-shot protocol and held-out validation -------------
def class_split(dataset: SBIRDataset, spec: str) -> ClassSplit:
    """The seen/unseen classes ``spec`` names for ``dataset`` (``data.zero_shot``: a manifest or
    ``random:N[:SEED]``); a bad spec is a one-line :class:`DataError`."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data.zero_shot: expected a split manifest name or random:N:SEED, got {spec!r}")
    try:
        return resolve_split(dataset, spec.strip())
    except (KeyError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        message = exc.args[0] if exc.args else str(exc)
        raise DataError(f"data.zero_shot: {message}") from None


def assign_zero_shot_splits(dataset: SBIRDataset, split: ClassSplit, train_split: str | None,
                            test_split: str | None) -> SBIRDataset:
    """A view where every unseen-class sample is in ``test_split`` and unsplit seen samples in ``train_split``.

    Unseen classes are never trained on, so all their samples are test items (the usual zero-shot
    SBIR protocol); seen-class samples keep their split (their test items form the GZSL gallery).
    """
    if test_split is None:
        raise DataError("data.test_split: expected a split name for the unseen classes under data.zero_shot, got null")
    unseen = set(split.unseen_indices(dataset))

    def assign(sample):
        if sample.class_index in unseen:
            return test_split
        return sample.split if sample.split is not None else train_split

    return dataset.with_split(assign)


def seen_view(dataset: SBIRDataset, split: ClassSplit) -> SBIRDataset:
    """The samples of seen classes only: all that training, model selection and fitting may read."""
    seen = set(split.seen_indices(dataset))
    return dataset.subset(s for s in dataset.samples if s.class_index in seen)


def validation_classes(split: ClassSplit, count: int, seed: int = 0) -> tuple[str, ...]:
    """``count`` seen classes held out for model selection, chosen by a seeded permutation."""
    if not 0 < count < len(split.seen) - 1:
        raise DataError(f"data.zero_shot_val_classes: expected 0 (off) or 1..{len(split.seen) - 2} "
                        f"(of the {len(split.seen)} seen classes), got {count}")
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A11]).permutation(len(split.seen))
    return tuple(split.seen[i] for i in sorted(order[:count]))


def hold_out_validation_classes(dataset: SBIRDataset, names, train_split: str | None,
                                val_split: str | None) -> SBIRDataset:
    """Zero-shot model selection: the non-test samples of classes ``names`` become ``val_split``
    (ranked among themselves, as unseen classes will be); the val samples of the other classes
    join ``train_split``. The held-out classes are then absent from training."""
    if val_split is None:
        raise DataError("data.val_split: expected a split name for data.zero_shot_val_classes, got null")
    held = {dataset.class_index(n) for n in names}

    def assign(sample):
        if sample.split not in (train_split, val_split):
            return sample.split
        return val_split if sample.class_index in held else train_split

    return dataset.with_split(assign)


def hold_out_fraction(dataset: SBIRDataset, fraction: float, train_split: str | None,
                      val_split: str | None) -> SBIRDataset:
    """``data.val_fraction``: that fraction of the training *instances* becomes ``val_split``, for
    datasets published without a validation split (QMUL-V1). Chosen by a hash of the instance id
    (a sketch goes with its photo), so the same instances are held out in every run. Samples
    without a split count as training samples (and become ``train_split`` or ``val_split``)."""
    fraction = float(fraction)
    val = val_split or "val"
    if not 0 <= fraction < 1:
        raise DataError(f"data.val_fraction: expected a fraction in [0, 1), got {fraction}")
    if dataset.select(split=val):
        raise DataError(f"data.val_fraction: {dataset.name} already has a {val!r} split; set it to 0")

    def assign(sample):
        # samples without a split (a dataset published unsplit) count as training samples
        if sample.split != train_split and not (sample.split is None and train_split is not None):
            return sample.split
        key = (sample.instance_id or sample.key).encode()
        return val if zlib.crc32(key) / 2**32 < fraction else train_split

    return dataset.with_split(assign)
