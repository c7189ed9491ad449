"""From a run folder back to embeddings: rebuild the dataset and model, embed samples, fingerprint.

``load_run`` rebuilds the method from the run's saved ``config.yaml`` and loads its weights with
``torch.load(weights_only=True)``; ``embed_samples`` turns samples of one modality into
L2-normalised float32 embeddings in a fixed order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import SampleDataset, SBIRDataset
from ..data.records import Sample
from ..errors import UsageError
from .checkpoint import CheckpointError, load_checkpoint
from .config import read_config
from .datasets import build_dataset  # noqa: F401  (re-exported: the runner's and the tools' entry point)

WHICH = ("best", "last")


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


def _weights_path(run_dir: str | Path, which: str) -> Path:
    if which not in WHICH:
        raise UsageError(f"which: expected one of {', '.join(WHICH)}, got {which!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    return run_dir / f"{which}.pt"


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """``(method, config)`` of a finished or running run; ``method.encoder`` embeds.

    Raises :class:`CheckpointError` (missing folder or weights, corrupt file) or
    :class:`~sbirkit.engine.config.ConfigError` (missing or bad ``config.yaml``), one line each.
    """
    from ..methods import method_class

    path = _weights_path(run_dir, which)
    config = read_config(Path(run_dir) / "config.yaml")
    state = load_checkpoint(path, map_location="cpu")
    model_cfg = dict(config["model"])
    for key in ("pretrained", "photo_pretrained"):  # the checkpoint holds every weight:
        if key in model_cfg or key == "pretrained":  # build without reading any weights file
            model_cfg[key] = False
    for key in ("weights", "photo_weights"):
        if key in model_cfg or key == "weights":
            model_cfg[key] = None
    method = method_class(config["method"]["name"]).from_config({**config, "model": model_cfg})
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: model: weights do not fit the model in config.yaml: {first}") from None
    method.to(device).eval()
    return method, config


# model settings that say where the *initial* weights came from; a checkpoint holds every weight
_PROVENANCE_KEYS = ("weights", "photo_weights", "pretrained", "photo_pretrained")


def fingerprint_payload(config: Mapping[str, Any]) -> dict[str, Any]:
    """What, besides the weights, decides a run's embeddings: the method, the model architecture
    and the image preprocessing (size, stroke width). Options that change neither (progress bars,
    logging, the run folder, training schedule) are not part of it."""
    options = dict(config["data"].get("options") or {})
    model = {k: v for k, v in dict(config["model"]).items() if k not in _PROVENANCE_KEYS}
    return {"method": config["method"]["name"], "model": model,
            "preprocessing": {k: options.get(k) for k in ("image_size", "stroke_width")}}


def model_fingerprint(run_dir: str | Path, which: str = "best") -> str:
    """A short hash that identifies a run's model: its weights (every tensor of the checkpoint's
    model state, by name) and :func:`fingerprint_payload` of its ``config.yaml``. Rewriting the
    config with a harmless change (``train.progress``) or re-saving identical weights keeps it;
    indexes store it to refuse queries embedded by another model."""
    path = _weights_path(run_dir, which)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    config = read_config(Path(run_dir) / "config.yaml")
    state = load_checkpoint(path, map_location="cpu")["model"]
    h = hashlib.sha256(json.dumps(fingerprint_payload(config), sort_keys=True, default=str).encode())
    for name in sorted(state):
        tensor = state[name]
        h.update(b"\0" + name.encode() + b"\0")
        if not isinstance(tensor, torch.Tensor):
            h.update(json.dumps(tensor, sort_keys=True, default=str).encode())
            continue
        t = tensor.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
