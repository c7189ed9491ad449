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
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import SBIRDataset
from ..data.records import DataError, Sample
from ..data.samplers import PairDataset
from ..fileio import atomic_write_many
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


def branch_identity(branch: Encoder, stage: int | None = None) -> dict[str, Any]:
    """What a branch's features depend on: backbone name, input normalisation and weights; with
    ``stage`` (maps cut there) only the weights of the stages before it, so training the later
    stages does not invalidate the cache."""
    norm = branch.input_norm
    stats = None if norm is None else [norm.mean.flatten().tolist(), norm.std.flatten().tolist()]
    if stage is None:
        digest = weights_digest(branch.backbone)
    else:
        digest = weights_digest(torch.nn.ModuleList([m for i in range(stage) for m in branch.backbone.stage_modules(i)]))
    identity = {"backbone": getattr(branch.backbone, "backbone_name", type(branch.backbone).__name__),
                "input_norm": stats, "weights": digest, "dim": int(branch.head.in_dim)}
    if stage is None and branch.pool is not None:  # pooled features: how they were pooled (avg: as before)
        identity["pool"] = branch.pool.extra_repr()
    return identity


def data_identity(data: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a config's ``data`` section that decide which pixels a sample key has. The root
    is made absolute (against the working directory, as the loaders read it), so one folder named
    two ways shares a cache and one relative name used from two folders does not."""
    root = data.get("root")
    return {"name": data.get("name"), "root": None if root is None else str(Path(str(root)).expanduser().resolve()),
            "options": dict(data.get("options") or {})}


class _ViewImages(torch.utils.data.Dataset):
    """Images of ``(sample, view)`` rows: view 0 as the dataset gives it, view v > 0 augmented with
    generators seeded by (sample key, v); odd views are flipped, even ones not, when the augmentation
    flips at all (so a pair can pick views of the same parity for a shared flip)."""

    def __init__(self, dataset: SBIRDataset, rows: Sequence[tuple[Sample, int]], augment: Any | None):
        self.dataset, self.rows, self.augment = dataset, list(rows), augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        from ..data.augment import item_rng, load_augmented
        from ..data.dataset import pil_to_tensor

        sample, view = self.rows[i]
        if view == 0 or self.augment is None:
            return pil_to_tensor(self.dataset.load_image(sample))
        flip = bool(view % 2) if self.augment.flip_probability() > 0 else None
        rng = item_rng(zlib.crc32(sample.key.encode()), view, 0xCA)
        return pil_to_tensor(load_augmented(self.dataset, sample, self.augment, rng, flip=flip))


@torch.no_grad()
def extract_features(branch: Encoder, dataset: SBIRDataset, samples: Sequence[Sample], batch_size: int = 128,
                     device: str | torch.device = "cpu", progress: bool = False, stage: int | None = None,
                     views: Sequence[int] | None = None, augment: Any | None = None) -> np.ndarray:
    """``branch``'s backbone features of ``samples`` (one modality), in eval mode: ``(N, D)`` pooled
    float32, or with ``stage`` the ``(N, C, H, W)`` maps after that many backbone stages. ``views``
    (one per sample) selects augmented views (see :class:`_ViewImages`)."""
    from tqdm.auto import tqdm

    samples = list(samples)
    rows = list(zip(samples, views if views is not None else [0] * len(samples)))
    # its own generator: a DataLoader otherwise draws its base seed from the global RNG, and a run
    # would train differently depending on whether the cache was already filled
    loader = torch.utils.data.DataLoader(_ViewImages(dataset, rows, augment), batch_size=batch_size,
                                         shuffle=False, generator=torch.Generator())
    was_training = branch.training
    branch.eval()
    chunks = []
    try:
        for images in tqdm(loader, desc=f"features ({samples[0].modality.value})", unit="batch", disable=not progress):
            x = images.to(device)
            out = branch.features(x) if stage is None else branch.trunk(x, stage)
            chunks.append(out.float().cpu().numpy())
    finally:
        branch.train(was_training)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _row_key(sample: Sample, view: int) -> str:
    return sample.key if view == 0 else f"{sample.key}#view{view}"


class FeatureStore:
    """Cached features under ``root``; one entry per (data identity, image size, modality, branch,
    stage, augmentation).

    ``stage=None`` caches pooled features (the heads train); ``stage=k`` caches the maps after
    the backbone's first k stages (``train.trainable_stages``: the later stages, attention and heads
    train on them). ``augment`` (with ``views > 1`` in :meth:`features`) adds augmented views of
    every sample, extracted once: training picks one view per item per step.
    """

    def __init__(self, root: str | os.PathLike, data: Mapping[str, Any], batch_size: int = 128,
                 device: str | torch.device = "cpu", progress: bool = False, stage: int | None = None,
                 augment: Any | None = None):
        self.root = Path(root)
        self.data = data_identity(data)
        self.batch_size, self.device, self.progress = int(batch_size), torch.device(device), progress
        self.stage, self.augment = stage, augment
        self.extracted = 0  # rows run through a backbone by this store (the rest came from disk)

    def entry(self, dataset: SBIRDataset, modality: str, branch: Encoder) -> Path:
        key = {"data": self.data, "image_size": dataset.image_size, "modality": modality,
               **branch_identity(branch, self.stage)}
        if self.stage is not None:  # absent for pooled features, so caches written before stages stay valid
            key["stage"] = int(self.stage)
        if self.augment is not None:
            key["augment"] = repr(self.augment)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        return self.root / f"{modality}-{digest}"

    def features(self, branch: Encoder, dataset: SBIRDataset, samples: Sequence[Sample], views: int = 1) -> np.ndarray:
        """Rows of features for ``samples`` (one modality), in order: ``(N, ...)``, or ``(N, views, ...)``
        with ``views > 1`` (view 0 is the plain image); a view of the memory map when the entry holds
        them in that order, else a gathered copy."""
        samples = list(samples)
        if not samples:
            return np.zeros((0, branch.head.in_dim), np.float32)
        if views > 1 and self.augment is None:
            raise ValueError("views: augmented views need the store's augment")
        modality = samples[0].modality.value
        if any(s.modality.value != modality for s in samples):
            raise ValueError("samples: expected one modality (all sketches or all photos), got both")
        wanted = [(s, v) for s in samples for v in range(views)]
        folder = self.entry(dataset, modality, branch)
        keys, array = self._open(folder)
        row = {k: i for i, k in enumerate(keys)}
        missing = list({_row_key(s, v): (s, v) for s, v in wanted if _row_key(s, v) not in row}.values())
        if missing:
            new = self._extract(branch, dataset, missing)
            keys = keys + [_row_key(s, v) for s, v in missing]
            array = np.concatenate([np.asarray(array), new]) if array is not None else new
            self._write(folder, keys, array, dataset, modality, branch)
            keys, array = self._open(folder)
            row = {k: i for i, k in enumerate(keys)}
        index = np.fromiter((row[_row_key(s, v)] for s, v in wanted), dtype=np.int64, count=len(wanted))
        if len(index) == len(keys) and np.array_equal(index, np.arange(len(keys))):
            out = array
        else:
            out = np.asarray(array[index])
        return out.reshape(len(samples), views, *out.shape[1:]) if views > 1 else out

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
        if not isinstance(keys, list) or array.ndim not in (2, 4) or array.shape[0] != len(keys):
            raise DataError(f"{folder}: feature cache: expected {len(keys)} rows in features.npy, got shape "
                            f"{array.shape}; delete the folder to extract again")
        return keys, array

    def _write(self, folder: Path, keys: list[str], array: np.ndarray, dataset: SBIRDataset, modality: str,
               branch: Encoder) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        rows = np.ascontiguousarray(array, dtype=np.float32)
        atomic_write_many({folder / "features.npy": lambda f: np.save(f, rows, allow_pickle=False),
                           folder / "keys.json": json.dumps(keys).encode()})
        meta = {"data": self.data, "image_size": dataset.image_size, "modality": modality,
                **branch_identity(branch, self.stage),
                "rows": len(keys)}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")

    def _extract(self, branch: Encoder, dataset: SBIRDataset, rows: list[tuple[Sample, int]]) -> np.ndarray:
        samples, views = [s for s, _ in rows], [v for _, v in rows]
        array = extract_features(branch, dataset, samples, self.batch_size, self.device, self.progress,
                                 self.stage, views, self.augment)
        self.extracted += len(rows)
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
                chunk = 4096 if self.stage is None else 64  # maps are large: fewer at a time
                for start in range(0, len(samples), chunk):
                    x = torch.from_numpy(np.array(feats[start:start + chunk], dtype=np.float32)).to(self.device)
                    out.append(encoder.encode_features(x, samples[0].modality, self.stage).float().cpu())
            finally:
                encoder.train(was_training)
            return torch.cat(out).numpy(), labels, instances

        return embed


class FeaturePairs(PairDataset):
    """:class:`~sbirkit.data.samplers.PairDataset` whose ``"sketch"``/``"photo"`` are cached features
    (rows of ``sketch_features`` / ``photo_features``, in the order of ``sketches`` / ``photos``).

    With ``views > 1`` each feature array is ``(N, views, ...)``: an item ``(si, pi, seed)`` picks a
    view per side from ``seed`` (the same parity for both under ``pair_flip: same``, since odd views
    are the flipped ones); a 2-tuple item reads view 0.
    """

    def __init__(self, dataset: SBIRDataset, sketches: Sequence[Sample], photos: Sequence[Sample],
                 sketch_features: np.ndarray, photo_features: np.ndarray, views: int = 1,
                 shared_flip: bool = False):
        super().__init__(dataset, sketches, photos)
        self._rows = {"sketch": {s.key: i for i, s in enumerate(self.sketches)},
                      "photo": {p.key: i for i, p in enumerate(self.photos)}}
        self._features = {"sketch": sketch_features, "photo": photo_features}
        self.views, self.shared_flip = int(views), bool(shared_flip)

    def features_of(self, modality: str) -> np.ndarray:
        """The cached features of every training sketch or photo (view 0 when there are views)."""
        array = self._features[modality]
        return array[:, 0] if self.views > 1 else array

    def _row(self, sample: Sample, view: int) -> torch.Tensor:
        side = sample.modality.value
        row = self._features[side][self._rows[side][sample.key]]
        return torch.from_numpy(np.array(row[view] if self.views > 1 else row, dtype=np.float32))

    def _image(self, sample: Sample, rng=None, flip=None) -> torch.Tensor:
        return self._row(sample, 0)

    def __getitem__(self, item: tuple) -> dict[str, Any]:
        if len(item) < 3 or self.views < 2:
            return super().__getitem__(item[:2])
        from ..data.augment import item_rng

        si, pi, seed = item
        rng = item_rng(int(seed), 3)
        sketch_view = int(rng.integers(self.views))
        if self.shared_flip:  # a photo view of the same parity: flipped with the sketch, or not
            same = np.arange(sketch_view % 2, self.views, 2)
            photo_view = int(same[rng.integers(len(same))])
        else:
            photo_view = int(rng.integers(self.views))
        s, p = self.sketches[si], self.photos[pi]
        return {"sketch": self._row(s, sketch_view), "photo": self._row(p, photo_view), "label": s.class_index,
                "instance": self._instance_idx.get(p.instance_id, -1), "sketch_index": si, "photo_index": pi}


def store_for(config: Mapping[str, Any], run_dir: str | os.PathLike, device: str | torch.device = "cpu",
              progress: bool = False) -> FeatureStore:
    """The feature store of a run: ``train.feature_cache``, else ``<run_dir>/features``."""
    from ..data.augment import Augment

    train = config["train"]
    root = train.get("feature_cache") or Path(run_dir) / "features"
    stage = feature_stage(config)
    views = int(train.get("cache_views") or 1)
    augment = Augment.from_config(config["data"].get("augment")) if views > 1 else None
    return FeatureStore(root, config["data"], batch_size=int(config["eval"]["batch_size"]), device=device,
                        progress=progress, stage=stage, augment=augment)


def feature_stage(config: Mapping[str, Any]) -> int | None:
    """Where a run's feature cache cuts the backbone: None (pooled features) unless
    ``train.trainable_stages`` > 0 or ``model.attention`` (which needs the map), else the number
    of frozen stages (``num_stages - trainable_stages``). Needs the backbone's stage count, read
    without building it for the backbones that have stages."""
    train, model = config["train"], config["model"]
    trainable = int(train.get("trainable_stages") or 0)
    if not trainable and not model.get("attention"):
        return None
    from ..models import create_backbone

    stages = model.get("backbone_stages") or create_backbone(model["backbone"]).num_stages
    if not stages:
        raise ValueError(f"train.trainable_stages / model.attention with train.cached_features: backbone "
                         f"{model['backbone']!r} is not split into stages (efficientnet_lite0 and tiny_cnn are)")
    if trainable >= stages:
        raise ValueError(f"train.trainable_stages: expected 0..{stages - 1} for backbone {model['backbone']!r} "
                         f"({stages} stages), got {trainable}")
    return stages - trainable
