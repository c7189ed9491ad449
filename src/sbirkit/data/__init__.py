"""Data layer: one record model, loaders registered by name, split manifests, samplers."""

from __future__ import annotations

from .classnames import normalize_class_name
from .dataset import SampleDataset, SBIRDataset, SkippedFile, ValidationReport
from .records import DataError, EmptySketchError, Modality, Sample
from .registry import DATASETS, create_dataset, list_datasets, register_dataset
from .strokes import Strokes, rasterize

# the built-in loaders register themselves on import (after the names above, which they use)
from . import combine, loaders, synthetic  # noqa: E402,F401  isort: skip


__all__ = [
    "DATASETS",
    "DataError",
    "EmptySketchError",
    "Modality",
    "Sample",
    "SampleDataset",
    "SBIRDataset",
    "SkippedFile",
    "Strokes",
    "ValidationReport",
    "create_dataset",
    "list_datasets",
    "normalize_class_name",
    "rasterize",
    "register_dataset",
]
