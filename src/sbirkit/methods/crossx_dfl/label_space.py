"""The shared label space of a pair of teachers: class maps (shipped, YAML or inline) and the
targets both teachers know.

A class map (``method.photo_teacher.class_map``) is ``{target class: [teacher classes]}``: a
shipped map name such as ``imagenet-cifar10`` (``data/class_maps/``), a YAML file, or an inline
mapping. Without one a teacher's targets are its own classes. Names match after
:func:`~sbirkit.data.classnames.normalize_class_name`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from ...data.classnames import normalize_class_name
from ...errors import ConfigError, DataError

if TYPE_CHECKING:
    from .teachers import Teacher

CLASS_MAPS_DIR = Path(__file__).resolve().parents[2] / "data" / "class_maps"


def shipped_class_maps() -> list[str]:
    return sorted(p.stem for p in CLASS_MAPS_DIR.glob("*.yaml"))


def load_class_map(spec: Any, where: str) -> dict[str, list[str]] | None:
    """``{target class: [teacher classes]}`` from a shipped map name, a YAML file or a mapping."""
    if spec is None:
        return None
    source = where
    if isinstance(spec, str):
        path = CLASS_MAPS_DIR / f"{spec}.yaml" if (CLASS_MAPS_DIR / f"{spec}.yaml").is_file() else Path(spec)
        if not path.is_file():
            raise ConfigError(f"{where}: {spec!r}: expected a shipped class map ({', '.join(shipped_class_maps())}) "
                              "or a YAML file")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
        source = str(path)
        if isinstance(spec, Mapping) and "map" in spec:
            spec = spec["map"]
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"{source}: expected a non-empty mapping of target class -> teacher class(es)")
    out: dict[str, list[str]] = {}
    for target, natives in spec.items():
        names = [natives] if isinstance(natives, str) else natives
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{source}: map.{target}: expected a class name or a list of class names, got {natives!r}")
        out[str(target)] = list(names)
    out["__source__"] = [source]  # where the map came from, for error messages
    return out


@dataclass
class TeacherLabels:
    """How one teacher's outputs map onto the shared target label space."""

    natives: torch.Tensor  # (N,) long: the teacher outputs that belong to a target class
    member: torch.Tensor  # (N, T) float 0/1: native n counts towards target t
    covered: torch.Tensor  # (T,) bool: targets this teacher knows


@dataclass
class LabelSpace:
    """The target label space of a pair of teachers: the union of their (mapped) classes, and the
    classes both know (``shared``), over which class alignment and classifier-only retrieval run."""

    targets: list[str]
    shared: list[int]
    teachers: dict[str, TeacherLabels]

    @property
    def num_targets(self) -> int:
        return len(self.targets)


def _teacher_targets(teacher: Teacher, class_map: dict[str, list[str]] | None,
                     where: str) -> tuple[list[str], list[list[int]]]:
    lookup: dict[str, int] = {}
    for i, name in enumerate(teacher.class_names):
        lookup.setdefault(normalize_class_name(name), i)
    if class_map is None:
        return list(teacher.class_names), [[i] for i in range(teacher.num_classes)]
    source = class_map.get("__source__", [where])[0]
    targets, members, seen = [], [], {}
    for target, natives in class_map.items():
        if target == "__source__":
            continue
        idx = []
        for native in natives:
            key = normalize_class_name(native)
            if key not in lookup:
                raise DataError(f"{source}: map.{target}: {native!r} is not a class of the {teacher.modality} teacher "
                                f"{teacher.source} ({teacher.num_classes} classes)")
            if lookup[key] in seen:
                raise DataError(f"{source}: map.{target}: {native!r} is already mapped to {seen[lookup[key]]!r}")
            seen[lookup[key]] = target
            idx.append(lookup[key])
        targets.append(target)
        members.append(idx)
    return targets, members


def build_label_space(photo: Teacher, sketch: Teacher, photo_map: dict | None = None, sketch_map: dict | None = None,
                      where: str = "method") -> LabelSpace:
    """The union of the two teachers' target classes (photo teacher's first), matched by
    normalised name, and the shared ones. No shared class at all is an error."""
    per = {"photo": _teacher_targets(photo, photo_map, f"{where}.photo_teacher.class_map"),
           "sketch": _teacher_targets(sketch, sketch_map, f"{where}.sketch_teacher.class_map")}
    targets: list[str] = []
    index: dict[str, int] = {}
    for names, _ in per.values():
        for name in names:
            key = normalize_class_name(name)
            if key not in index:
                index[key] = len(targets)
                targets.append(name)
    labels = {}
    for m, (names, members) in per.items():
        natives, rows = [], []
        covered = torch.zeros(len(targets), dtype=torch.bool)
        for name, idx in zip(names, members):
            t = index[normalize_class_name(name)]
            covered[t] = True
            for n in idx:
                natives.append(n)
                rows.append(t)
        member = torch.zeros(len(natives), len(targets))
        member[torch.arange(len(natives)), torch.tensor(rows, dtype=torch.long)] = 1.0
        labels[m] = TeacherLabels(torch.tensor(natives, dtype=torch.long), member, covered)
    shared = [t for t in range(len(targets)) if labels["photo"].covered[t] and labels["sketch"].covered[t]]
    if not shared:
        raise ConfigError(f"{where}: the photo teacher ({photo.num_classes} classes: {', '.join(photo.class_names[:4])}"
                          f"...) and the sketch teacher ({sketch.num_classes} classes: "
                          f"{', '.join(sketch.class_names[:4])}...) share no class; give a class_map")
    return LabelSpace(targets, shared, labels)
