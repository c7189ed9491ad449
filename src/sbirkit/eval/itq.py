"""Iterative quantization (ITQ): compact binary codes for real-valued embeddings.

Gong & Lazebnik, "Iterative Quantization: A Procrustean Approach to Learning Binary Codes",
CVPR 2011: centre, project on the top ``bits`` principal components (PCA), then alternate
B = sign(V R) and the orthogonal Procrustes solution R for B (Sec. 2.3), lowering the
quantization loss ||B - V R||_F^2 at every step. Unsupervised: it is fitted without labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ITQ:
    """A fitted ITQ: ``codes = sign((x - mean) @ pca @ rotation)`` in {-1, +1}."""

    mean: np.ndarray  # (D,)
    pca: np.ndarray  # (D, bits), orthonormal columns
    rotation: np.ndarray  # (bits, bits), orthogonal
    losses: tuple[float, ...]  # quantization loss ||B - V R||^2 / n after each iteration

    @property
    def bits(self) -> int:
        return int(self.rotation.shape[0])

    def encode(self, x: np.ndarray) -> np.ndarray:
        """±1 codes as float32 ``(N, bits)`` (0 maps to +1); Hamming = (bits - a·b) / 2."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"ITQ.encode: x: expected shape (N, {self.mean.shape[0]}), got {x.shape}")
        return np.where((x - self.mean) @ self.pca @ self.rotation >= 0, 1.0, -1.0).astype(np.float32)


def hamming_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between ±1 code rows."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a.shape[1] - a @ b.T) / 2


def fit_itq(x: np.ndarray, bits: int = 64, iterations: int = 50, seed: int = 0) -> ITQ:
    """Fit ITQ on the rows of ``x`` (N×D, N >= bits, bits <= D); the initial rotation is seeded."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"fit_itq: x: expected an (N, D) matrix, got shape {x.shape}")
    n, dim = x.shape
    if not 0 < bits <= dim:
        raise ValueError(f"fit_itq: bits: expected 1..{dim} (the embedding size), got {bits}")
    if n < bits:
        raise ValueError(f"fit_itq: x: expected at least bits={bits} rows to fit, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("fit_itq: x: expected finite values")
    mean = x.mean(axis=0)
    centred = x - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # principal directions, by variance
    pca = vt[:bits].T
    v = centred @ pca
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    losses = []
    for _ in range(int(iterations)):
        b = np.where(v @ rotation >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ b)  # Procrustes: R = argmin ||B - V R|| over orthogonal R
        rotation = u @ wt
        losses.append(float(np.sum((b - v @ rotation) ** 2) / n))
    return ITQ(mean.astype(np.float64), pca, rotation, tuple(losses))
