"""From a run folder back to embeddings: rebuild the dataset and model, embed samples, fingerprint.

``load_run`` rebuilds the method from the run's saved ``config.yaml`` and loads its weights with
``torch.load(weights_only=True)``; ``embed_samples`` turns samples of one modality into
L2-normalised float32 embeddings in a fixed order.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import SampleDataset, SBIRDataset, create_dataset
from ..data.records import Sample
from .checkpoint import CheckpointError, load_checkpoint
from .config import merge, read_config

WHICH = ("best", "last")


def build_dataset(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> SBIRDataset:
    """The dataset a config's ``data`` section names (``overrides`` merged on top, e.g. a new root).

    With ``zero_shot`` set, unseen-class samples are all put in ``test_split`` and unsplit seen ones
    in ``train_split`` (:func:`sbirkit.engine.zero_shot.assign_splits`).
    With ``val_fraction > 0`` (for datasets published without a validation split, e.g. QMUL-V1)
    that fraction of the training instances becomes split ``val_split``, chosen by a hash of the
    instance id, so the same instances are held out in every run; other splits are untouched.
    """
    section = merge(data, overrides or {})
    dataset = create_dataset(section["name"], section.get("root"), **dict(section.get("options") or {}))
    if section.get("zero_shot"):  # every unseen-class sample becomes a test item (engine/zero_shot.py)
        from . import zero_shot

        split = zero_shot.class_split(dataset, section["zero_shot"])
        dataset = zero_shot.assign_splits(dataset, split, section.get("train_split", "train"),
                                          section.get("test_split", "test"))
    fraction = float(section.get("val_fraction") or 0.0)
    if fraction > 0:
        train, val = section.get("train_split", "train"), section.get("val_split") or "val"
        if not fraction < 1:
            raise ValueError(f"data.val_fraction: expected a fraction in [0, 1), got {fraction}")
        if dataset.select(split=val):
            raise ValueError(f"data.val_fraction: {dataset.name} already has a {val!r} split; set it to 0")

        def assign(sample: Sample) -> str | None:
            if sample.split != train:
                return sample.split
            key = (sample.instance_id or sample.key).encode()
            return val if zlib.crc32(key) / 2**32 < fraction else train

        dataset = dataset.with_split(assign)
    return dataset


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
        raise ValueError(f"which: expected one of {WHICH}, got {which!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    return run_dir / f"{which}.pt"


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """``(method, config)`` of a finished or running run; ``method.encoder`` embeds.

    Raises :class:`CheckpointError` (missing folder or weights, corrupt file) or
    :class:`~sbirkit.engine.config.ConfigError` (missing or bad ``config.yaml``), one line each.
    """
    from ..methods import create_method

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
    method = create_method(config["method"]["name"], {**config, "model": model_cfg})
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: model: weights do not fit the model in config.yaml: {first}") from None
    method.to(device).eval()
    return method, config


def model_fingerprint(run_dir: str | Path, which: str = "best") -> str:
    """A short hash of a run's ``config.yaml`` and weights file (identifies a model in index metadata)."""
    path = _weights_path(run_dir, which)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    h = hashlib.sha256()
    config = Path(run_dir) / "config.yaml"
    h.update(config.read_bytes() if config.is_file() else b"")
    h.update(b"\0")
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
