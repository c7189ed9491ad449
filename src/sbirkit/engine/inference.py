"""From a run folder back to a model: ``load_run``, ``model_fingerprint``.

``load_run`` rebuilds the method from the run's saved ``config.yaml`` and loads its weights with
``torch.load(weights_only=True)``. ``build_dataset`` (:mod:`sbirkit.engine.datasets`) and
``embed_samples`` (:mod:`sbirkit.engine.embedding`) live below the runner and are re-exported here
for existing callers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from .checkpoint import CheckpointError, load_checkpoint
from .config import read_config
from .context import SetupContext
from .datasets import build_dataset  # noqa: F401  (re-exported: the runner's and the tools' entry point)
from .embedding import embed_samples  # noqa: F401  (re-exported, as build_dataset)
from .preset_runs import preset_runner

WHICH = ("best", "last")


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
    # a method whose modules come from other runs (data-free teachers) builds them now, through a
    # context that loads runs but trains none
    method.prepare_load(SetupContext.for_run(config, config.get("run_dir"), run_loader=load_run,
                                             preset_runner=preset_runner(None)))
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
