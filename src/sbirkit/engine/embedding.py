"""Samples of one modality -> L2-normalised float32 embeddings, in a fixed order.

Part of the engine's API below the runner: the evaluator embeds through it, and so may a method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data import SampleDataset, SBIRDataset
from ..data.records import Sample


@torch.no_grad()
def embed_samples(encoder: torch.nn.Module, dataset: SBIRDataset, samples: Sequence[Sample], batch_size: int = 128,
                  device: str | torch.device | None = None,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Embed ``samples`` (all sketches or all photos) -> (N×D float32, class labels, instance ids).

    Sketches go through ``encoder.encode_sketch``, photos through ``encode_photo``; the encoder
    runs in eval mode and is put back in its previous mode afterwards.
    """
    from tqdm.auto import tqdm

    samples = list(samples)
    modalities = {s.modality for s in samples}
    if len(modalities) > 1:
        raise ValueError("samples: expected one modality (all sketches or all photos), got both")
    labels = np.array([s.class_index for s in samples], dtype=np.int64)
    instances = [s.instance_id for s in samples]
    dim = int(getattr(encoder, "embed_dim", 0))
    if not samples:
        return np.zeros((0, dim), np.float32), labels, instances
    is_sketch = samples[0].is_sketch
    encode = encoder.encode_sketch if is_sketch else encoder.encode_photo
    if device is None:
        device = next(iter(encoder.parameters()), torch.empty(0)).device
    loader = torch.utils.data.DataLoader(SampleDataset(dataset, samples), batch_size=batch_size, shuffle=False)
    was_training = encoder.training
    encoder.eval()
    chunks = []
    try:
        for batch in tqdm(loader, desc=f"embedding {'sketches' if is_sketch else 'photos'}", disable=not progress,
                          unit="batch"):
            chunks.append(encode(batch["image"].to(device)).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False), labels, instances
