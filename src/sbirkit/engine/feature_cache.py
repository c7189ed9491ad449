"""Frozen-backbone features, extracted once and kept on disk as memory-mapped ``.npy`` arrays.

With ``train.cached_features: true`` the backbones are frozen (they keep their pretrained weights)
and only what follows them (embedding heads, and a method's own modules) is trained: every image
goes through its backbone once, then training steps read rows of a memory-mapped array, so a run
takes seconds to minutes on a CPU. Any method can train this way: the training source wraps its
items so batches hold features where they would hold images (``batch["inputs"] == "features"``,
:meth:`sbirkit.engine.sources.TrainSource.with_features`), and the method embeds them with
``encoder.encode_features``.

A cache entry is keyed by what determines the features: the dataset section (format, root,
loader options), the image size, the modality, and the backbone's name, input normalisation and
a hash of its weights. It stores rows for the sample keys extracted so far; asking for new
samples extracts only those and rewrites the entry. Extraction is a deterministic function of
the pixels (eval mode), so it may cover any sample: caching is not fitting. Nothing fitted
(normalisation, ITQ) is computed here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import SampleDataset, SBIRDataset
from ..data.records import DataError, Sample
from ..data.samplers import PairDataset
from ..models.encoders import Encoder


def weights_digest(module: nn.Module) -> str:
    """A short hash of a module's parameters and buffers (names, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(str((tuple(tensor.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def branch_identity(branch: Encoder) -> dict[str, Any]:
    """What a branch's features depend on: backbone name, input normalisation and weights."""
    norm = branch.input_norm
    stats = None if norm is None else [norm.mean.flatten().tolist(), norm.std.flatten().tolist()]
    return {"backbone": getattr(branch.backbone, "backbone_name", type(branch.backbone).__name__),
            "input_norm": stats, "weights": weights_digest(branch.backbone), "dim": int(branch.head.in_dim)}


def data_identity(data: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a config's ``data`` section that decide which pixels a sample key has."""
    return {"name": data.get("name"), "root": None if data.get("root") is None else str(data.get("root")),
            "options": dict(data.get("options") or {})}


@torch.no_grad()
def extract_features(branch: Encoder, dataset: SBIRDataset, samples: Sequence[Sample], batch_size: int = 128,
                     device: str | torch.device = "cpu", progress: bool = False) -> np.ndarray:
    """``branch``'s backbone features of ``samples`` (one modality), in eval mode, ``(N, D)`` float32."""
    from tqdm.auto import tqdm

    samples = list(samples)
    # its own generator: a DataLoader otherwise draws its base seed from the global RNG, and a run
    # would train differently depending on whether the cache was already filled
    loader = torch.utils.data.DataLoader(SampleDataset(dataset, samples), batch_size=batch_size,
                                         shuffle=False, generator=torch.Generator())
    was_training = branch.training
    branch.eval()
    chunks = []
    try:
        for batch in tqdm(loader, desc=f"features ({samples[0].modality.value})", unit="batch", disable=not progress):
            chunks.append(branch.features(batch["image"].to(device)).float().cpu().numpy())
    finally:
        branch.train(was_training)
    return np.concatenate(chunks).astype(np.float32, copy=False)


class FeatureStore:
    """Cached features under ``root``; one entry per (data identity, image size, modality, branch)."""

    def __init__(self, root: str | os.PathLike, data: Mapping[str, Any], batch_size: int = 128,
                 device: str | torch.device = "cpu", progress: bool = False):
        self.root = Path(root)
        self.data = data_identity(data)
        self.batch_size, self.device, self.progress = int(batch_size), torch.device(device), progress
        self.extracted = 0  # samples run through a backbone by this store (the rest came from disk)

    def entry(self, dataset: SBIRDataset, modality: str, branch: Encoder) -> Path:
        key = {"data": self.data, "image_size": dataset.image_size, "modality": modality, **branch_identity(branch)}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        return self.root / f"{modality}-{digest}"

    def features(self, branch: Encoder, dataset: SBIRDataset, samples: Sequence[Sample]) -> np.ndarray:
        """Rows of features for ``samples`` (one modality), in order: a view of the memory map when
        the entry holds them in that order, else a gathered copy."""
        samples = list(samples)
        if not samples:
            return np.zeros((0, branch.head.in_dim), np.float32)
        modality = samples[0].modality.value
        if any(s.modality.value != modality for s in samples):
            raise ValueError("samples: expected one modality (all sketches or all photos), got both")
        folder = self.entry(dataset, modality, branch)
        keys, array = self._open(folder)
        row = {k: i for i, k in enumerate(keys)}
        missing = list({s.key: s for s in samples if s.key not in row}.values())
        if missing:
            new = self._extract(branch, dataset, missing)
            keys = keys + [s.key for s in missing]
            array = np.concatenate([np.asarray(array), new]) if array is not None else new
            self._write(folder, keys, array, dataset, modality, branch)
            keys, array = self._open(folder)
            row = {k: i for i, k in enumerate(keys)}
        index = np.fromiter((row[s.key] for s in samples), dtype=np.int64, count=len(samples))
        if len(index) == len(keys) and np.array_equal(index, np.arange(len(keys))):
            return array
        return np.asarray(array[index])

    def _open(self, folder: Path) -> tuple[list[str], np.ndarray | None]:
        keys_path, array_path = folder / "keys.json", folder / "features.npy"
        if not keys_path.is_file() or not array_path.is_file():
            return [], None
        try:
            keys = json.loads(keys_path.read_text())
            array = np.load(array_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{folder}: feature cache: expected keys.json and features.npy that load, got {exc}; "
                            "delete the folder to extract again") from None
        if not isinstance(keys, list) or array.ndim != 2 or array.shape[0] != len(keys):
            raise DataError(f"{folder}: feature cache: expected {len(keys)} rows in features.npy, got shape "
                            f"{array.shape}; delete the folder to extract again")
        return keys, array

    def _write(self, folder: Path, keys: list[str], array: np.ndarray, dataset: SBIRDataset, modality: str,
               branch: Encoder) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".features.{os.getpid()}.npy"
        np.save(tmp, np.ascontiguousarray(array, dtype=np.float32))
        (folder / ".keys.tmp").write_text(json.dumps(keys))
        os.replace(tmp, folder / "features.npy")
        os.replace(folder / ".keys.tmp", folder / "keys.json")
        meta = {"data": self.data, "image_size": dataset.image_size, "modality": modality, **branch_identity(branch),
                "rows": len(keys)}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")

    def _extract(self, branch: Encoder, dataset: SBIRDataset, samples: list[Sample]) -> np.ndarray:
        array = extract_features(branch, dataset, samples, self.batch_size, self.device, self.progress)
        self.extracted += len(samples)
        return array

    def embedder(self, encoder: nn.Module, dataset: SBIRDataset):
        """``embed(samples) -> (embeddings, labels, instances)`` through the heads, from cached features."""

        @torch.no_grad()
        def embed(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
            samples = list(samples)
            labels = np.array([s.class_index for s in samples], dtype=np.int64)
            instances = [s.instance_id for s in samples]
            if not samples:
                return np.zeros((0, int(encoder.embed_dim)), np.float32), labels, instances
            branch = encoder.branch(samples[0].modality)
            feats = self.features(branch, dataset, samples)
            was_training = encoder.training
            encoder.eval()
            out = []
            try:
                for start in range(0, len(samples), 4096):
                    x = torch.from_numpy(np.array(feats[start:start + 4096], dtype=np.float32)).to(self.device)
                    out.append(encoder.encode_features(x, samples[0].modality).float().cpu())
            finally:
                encoder.train(was_training)
            return torch.cat(out).numpy(), labels, instances

        return embed


class FeaturePairs(PairDataset):
    """:class:`~sbirkit.data.samplers.PairDataset` whose ``"sketch"``/``"photo"`` are cached features
    (rows of ``sketch_features`` / ``photo_features``, in the order of ``sketches`` / ``photos``)."""

    def __init__(self, dataset: SBIRDataset, sketches: Sequence[Sample], photos: Sequence[Sample],
                 sketch_features: np.ndarray, photo_features: np.ndarray):
        super().__init__(dataset, sketches, photos)
        self._rows = {"sketch": {s.key: i for i, s in enumerate(self.sketches)},
                      "photo": {p.key: i for i, p in enumerate(self.photos)}}
        self._features = {"sketch": sketch_features, "photo": photo_features}

    def features_of(self, modality: str) -> np.ndarray:
        """The cached features of every training sketch or photo (``"sketch"`` / ``"photo"``)."""
        return self._features[modality]

    def _image(self, sample: Sample, rng=None, flip=None) -> torch.Tensor:
        side = sample.modality.value
        return torch.from_numpy(np.array(self._features[side][self._rows[side][sample.key]], dtype=np.float32))


def store_for(config: Mapping[str, Any], run_dir: str | os.PathLike, device: str | torch.device = "cpu",
              progress: bool = False) -> FeatureStore:
    """The feature store of a run: ``train.feature_cache``, else ``<run_dir>/features``."""
    root = config["train"].get("feature_cache") or Path(run_dir) / "features"
    return FeatureStore(root, config["data"], batch_size=int(config["eval"]["batch_size"]), device=device,
                        progress=progress)
