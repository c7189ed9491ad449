"""Data layer: one record model, loaders registered by name, split manifests, samplers."""

from __future__ import annotations

from ..registry import Registry
from .classnames import normalize_class_name
from .dataset import SampleDataset, SBIRDataset, SkippedFile, ValidationReport
from .records import DataError, EmptySketchError, Modality, Sample
from .strokes import Strokes, rasterize, rasterize_sketch

DATASETS: Registry[SBIRDataset] = Registry("dataset format")


def register_dataset(name: str, help: str | None = None):
    """Decorator: register a loader ``factory(root, **options) -> SBIRDataset`` under ``name``."""
    return DATASETS.register(name, help)


def create_dataset(name: str, root: str | None = None, **options) -> SBIRDataset:
    """Build the dataset ``name`` (see :func:`list_datasets`) from ``root`` with loader options."""
    import re

    from ..errors import ConfigError

    _load_builtin_loaders()
    factory = DATASETS.get(name)
    try:
        return factory(root, **options) if root is not None else factory(**options)
    except TypeError as exc:  # a loader option it does not take: name it, as for a config key
        bad = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        if bad is None:
            raise
        raise ConfigError(f"data.options.{bad.group(1)}: not an option of dataset format {name!r} "
                          f"(see the loader's docstring: sbirkit data info --help)") from None


def list_datasets() -> list[str]:
    _load_builtin_loaders()
    return DATASETS.names()


def _load_builtin_loaders() -> None:
    from . import (
        combine,  # noqa: F401
        loaders,  # noqa: F401  (registers on import)
        synthetic,  # noqa: F401
    )


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
    "rasterize_sketch",
    "register_dataset",
]
