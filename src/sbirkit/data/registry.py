"""The dataset-format registry, in a module that imports no loader (the shape of timm's
``_registry.py``): loaders register themselves here with ``@register_dataset``, and the package
face (``data/__init__``) imports every built-in loader, so the registry is full once
``sbirkit.data`` is imported (importing this module imports the package first)."""

from __future__ import annotations

import re

from ..errors import ConfigError
from ..registry import Registry
from .dataset import SBIRDataset

DATASETS: Registry[SBIRDataset] = Registry("dataset format")


def register_dataset(name: str, help: str | None = None):
    """Decorator: register a loader ``factory(root, **options) -> SBIRDataset`` under ``name``."""
    return DATASETS.register(name, help)


def create_dataset(name: str, root: str | None = None, **options) -> SBIRDataset:
    """Build the dataset ``name`` (see :func:`list_datasets`) from ``root`` with loader options."""
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
    return DATASETS.names()
