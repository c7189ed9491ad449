"""``ClassVectors``: one semantic vector per class name, with the names that have none.

Rows follow the caller's class list, so row ``i`` belongs to class index ``i``. A class with
no vector is never given a zero row: it is listed in ``missing`` and its row is NaN (or the
class is dropped, see :func:`apply_missing_policy`), so using it by accident fails loudly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from ..data import DataError, normalize_class_name

MISSING_POLICIES = ("error", "warn", "drop")


@dataclass(frozen=True)
class ClassVectors:
    """Vectors ``(C, dim)`` float32 for ``names`` (in the caller's order) from one ``source``.

    ``missing``: names with no vector (their rows are NaN); ``partial``: multi-word names built
    from only some of their words; ``origin``: the file or model the vectors came from;
    ``normalized``: rows are L2-normalised (the default of :func:`sbirkit.semantics.class_vectors`).
    """

    names: list[str]
    vectors: np.ndarray
    source: str
    missing: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    origin: str = ""
    normalized: bool = False

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.names):
            raise ValueError(
                f"ClassVectors({self.source}): vectors: expected shape ({len(self.names)}, d), "
                f"got {tuple(self.vectors.shape)}"
            )

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def present(self) -> np.ndarray:
        """Boolean mask over rows: True where the class has a vector."""
        gone = {normalize_class_name(n) for n in self.missing}
        return np.array([normalize_class_name(n) not in gone for n in self.names], dtype=bool)

    def vector(self, name: str) -> np.ndarray:
        """The row of ``name`` (compared in normalised form, so ``teddy-bear`` finds ``teddy_bear``)."""
        key = normalize_class_name(name)
        for i, n in enumerate(self.names):
            if normalize_class_name(n) == key:
                return self.vectors[i]
        raise KeyError(f"class {name!r} is not among the {len(self.names)} classes of this {self.source} table")

    def as_tensor(self):
        """The vectors as a float32 ``torch.Tensor`` (shares memory with ``vectors``)."""
        import torch

        return torch.from_numpy(self.vectors)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; NaN rows stay NaN, an all-zero row stays zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    safe = np.where(norms > 0, norms, 1.0)
    return (vectors / safe).astype(np.float32)


def apply_missing_policy(table: ClassVectors, on_missing: str) -> ClassVectors:
    """Act on ``table.missing``: ``error`` raises a one-line ``DataError`` naming the origin and
    the names; ``warn`` keeps their NaN rows (flagged in ``missing``); ``drop`` removes their rows
    (still listed in ``missing``). Partially covered names are always reported by a warning."""
    if on_missing not in MISSING_POLICIES:
        raise ValueError(f"on_missing: expected one of {', '.join(MISSING_POLICIES)}, got {on_missing!r}")
    where = table.origin or table.source
    if table.partial:
        warnings.warn(
            f"{where}: {len(table.partial)} class names only partly covered (vector = mean of the words found): "
            f"{', '.join(table.partial)}",
            stacklevel=3,
        )
    if not table.missing:
        return table
    listed = ", ".join(repr(n) for n in table.missing)
    if on_missing == "error":
        raise DataError(
            f"{where}: no vector for {len(table.missing)} of {len(table.names)} class names: {listed} "
            f"(pass on_missing='warn' to keep them as NaN rows or 'drop' to leave them out)"
        )
    if on_missing == "warn":
        warnings.warn(f"{where}: no vector for {listed}; their rows are NaN (see .missing)", stacklevel=3)
        return table
    keep = table.present
    warnings.warn(f"{where}: no vector for {listed}; these classes are left out (see .missing)", stacklevel=3)
    return replace(table, names=[n for n, k in zip(table.names, keep) if k], vectors=table.vectors[keep])
