"""A dataset from a config's ``data`` section: part of the engine's API for methods (a method that
builds a second dataset, e.g. CrossX-DFL's substitute data or a diagnosis-only reference, imports it
from here, not from the runner's ``engine/inference.py``, which re-exports it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..data import SBIRDataset, create_dataset
from ..errors import ConfigError
from .config import merge


def build_dataset(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> SBIRDataset:
    """The dataset a config's ``data`` section names (``overrides`` merged on top, e.g. a new root).

    With ``zero_shot`` set, unseen-class samples are all put in ``test_split`` and unsplit seen ones
    in ``train_split`` (:func:`sbirkit.data.splits.assign_zero_shot_splits`).
    With ``val_fraction > 0`` (for datasets published without a validation split, e.g. QMUL-V1)
    that fraction of the training instances becomes split ``val_split``, chosen by a hash of the
    instance id, so the same instances are held out in every run (:func:`sbirkit.data.splits.hold_out_fraction`).
    """
    from ..data.splits import assign_zero_shot_splits, class_split, hold_out_fraction

    section = merge(data, overrides or {})
    if not section.get("name"):
        raise ConfigError("data.name: expected a registered dataset format, got null (this run has no dataset; "
                          "name one with --data name=... or eval.data)")
    dataset = create_dataset(section["name"], section.get("root"), **dict(section.get("options") or {}))
    if section.get("zero_shot"):  # every unseen-class sample becomes a test item
        split = class_split(dataset, section["zero_shot"])
        dataset = assign_zero_shot_splits(dataset, split, section.get("train_split", "train"),
                                          section.get("test_split", "test"))
    fraction = float(section.get("val_fraction") or 0.0)
    if fraction > 0:
        dataset = hold_out_fraction(dataset, fraction, section.get("train_split", "train"), section.get("val_split"))
    return dataset
