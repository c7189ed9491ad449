"""One query path for ``sbirkit search`` and the server (``sbirkit serve``), so the two cannot drift.

1. **Reading** a query: :mod:`sbirkit.index.files` (a sketch file, its bytes or JSON strokes, a
   photo) gives a ``(size, size, 3)`` uint8 image: the same steps for a file on disk and an upload.
2. **Embedding** query images: :func:`embed_query_images` (this module); ``index build`` embeds
   gallery images through the same :func:`images_to_tensor`.
3. **Searching**: :meth:`GalleryIndex.search <sbirkit.index.gallery.GalleryIndex.search>` (rows
   filtered by class or modality, ``nprobe``).
4. **Results**: :func:`ranked_rows`: the ranked ``(rank, row, score)`` of one query, rows FAISS
   could not fill dropped; the command line and the server add their own fields to each.

What only the server needs (batching queries into one forward pass, request limits, response
schemas, timeouts) stays in :mod:`sbirkit.serve`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

MODALITIES = ("sketch", "photo")


def images_to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 images (an array or a list of ``(H, W, 3)`` ones) as the model's
    input: ``(B, 3, H, W)`` float32 in [0, 1]."""
    import torch

    batch = np.stack(images) if not isinstance(images, np.ndarray) else images
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)


def embed_query_images(encoder: Any, images: np.ndarray | Sequence[np.ndarray],
                       modality: str = "sketch") -> np.ndarray:
    """Embed query images with the ``modality`` branch of ``encoder`` (``encode_sketch`` /
    ``encode_photo``): ``(B, d)`` float32, as the encoder returns them (it L2-normalises)."""
    import torch

    if modality not in MODALITIES:
        raise ValueError(f"modality: expected one of {', '.join(MODALITIES)}, got {modality!r}")
    fn = encoder.encode_sketch if modality == "sketch" else encoder.encode_photo
    x = images_to_tensor(images)
    with torch.inference_mode():
        z = fn(x)
    return z.detach().float().cpu().numpy().astype(np.float32, copy=False)


def ranked_rows(scores: np.ndarray, rows: np.ndarray) -> list[tuple[int, int, float]]:
    """One query's results, best first, as ``(rank from 1, index row, score)``; a row of -1 (an IVF
    probe or a row filter found fewer than k) is dropped, its rank left unused."""
    return [(rank, int(row), float(score))
            for rank, (score, row) in enumerate(zip(np.asarray(scores).tolist(), np.asarray(rows).tolist()), 1)
            if row >= 0]
