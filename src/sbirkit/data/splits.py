"""Zero-shot class splits: named manifests shipped with the package, and seeded random splits.

A manifest lists the *unseen* (test) classes of a published protocol, one per line; every other
class of the dataset is seen. Names are matched after :func:`normalize_class_name`, and a name
the dataset does not have is an error, never a silent miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

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
        raise KeyError(f"unknown split manifest {name!r}; known: {', '.join(list_manifests())}")
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
