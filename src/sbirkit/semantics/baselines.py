"""Ablation baselines for semantic side information: one-hot and seeded random class vectors.

They carry no semantics, so a zero-shot model (ZSCMR, Chaudhuri et al., CVPRW 2020) fed them
should not transfer to unseen classes; comparing against them measures what the text adds.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..data import normalize_class_name
from .vectors import ClassVectors


def onehot_vectors(class_names: list[str]) -> ClassVectors:
    """Row ``i`` is the ``i``-th standard basis vector of R^C (mutually orthogonal, unit norm)."""
    return ClassVectors(
        names=list(class_names), vectors=np.eye(len(class_names), dtype=np.float32), source="onehot", origin="onehot"
    )


def random_vectors(class_names: list[str], *, dim: int = 300, seed: int = 0) -> ClassVectors:
    """Gaussian N(0, I_dim) vectors, one per class, seeded by (``seed``, normalised class name).

    A class gets the same vector whatever else is in the list or in which order.
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"random: dim: expected a positive integer, got {dim!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"random: seed: expected a non-negative integer, got {seed!r}")
    rows = []
    for name in class_names:
        digest = hashlib.sha256(normalize_class_name(name).encode("utf-8")).digest()
        rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])
        rows.append(rng.standard_normal(dim))
    vectors = np.asarray(rows, dtype=np.float32).reshape(len(class_names), dim)
    return ClassVectors(names=list(class_names), vectors=vectors, source="random", origin=f"random(seed={seed})")
