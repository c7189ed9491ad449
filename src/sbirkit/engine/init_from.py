"""Start a run's encoder from another run's weights (``train.init_from``): e.g. a fine-grained model
whose backbone was first trained to classify sketches (the sketch-domain pretraining of
Triplet-SN, Yu et al., CVPR 2016), or meta-training that starts from a supervised baseline.

Any run of any method works as the source: every tensor of its checkpoint whose key holds
``backbone.`` (``train.init_modules: backbone``) or belongs to an encoder branch (``encoder``:
backbone, attention and head) is grouped by the branch it sits in; each branch of the new
encoder takes the source branch of the same modality (``sketch_encoder`` / ``photo_encoder``),
else the shared one, and copies every tensor whose name and shape agree. What was loaded and
skipped is recorded in ``meta.json``; a resumed run loads everything from ``last.pt`` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .checkpoint import load_checkpoint

MODULES = ("backbone", "encoder")
_BRANCH_PARTS = ("backbone.", "attention.", "head.", "pool.")


def _groups(state: dict[str, torch.Tensor], modules: str) -> dict[str, dict[str, torch.Tensor]]:
    """``{branch prefix: {key inside the branch: tensor}}`` for the tensors that transfer."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    parts = ("backbone.",) if modules == "backbone" else _BRANCH_PARTS
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for part in parts:
            at = key.find(part)
            if at == 0 or (at > 0 and key[at - 1] == "."):
                out.setdefault(key[:at], {})[key[at:]] = value
                break
    return out


def _pick(groups: dict[str, dict[str, torch.Tensor]], modality: str) -> str | None:
    for prefix in groups:
        if f"{modality}_encoder" in prefix:
            return prefix
    for prefix in groups:
        if prefix.endswith("encoder.encoder.") or prefix in ("encoder.", ""):
            return prefix
    return next(iter(groups), None)


def init_encoder_from_run(encoder: torch.nn.Module, run_dir: str | Path, which: str = "best",
                          modules: str = "backbone", branches=("sketch", "photo")) -> dict[str, Any]:
    """Copy ``run_dir``'s ``which`` weights into ``encoder`` (see the module docstring); only the
    ``branches`` named (``train.init_branches``) are started from it, the others keep their weights."""
    if modules not in MODULES:
        raise ConfigError(f"train.init_modules: expected 'backbone' or 'encoder', got {modules!r}")
    path = Path(run_dir) / f"{which}.pt"
    if not path.is_file():
        raise ConfigError(f"train.init_from: {path}: checkpoint not found (expected a run folder with {which}.pt)")
    groups = _groups(load_checkpoint(path, map_location="cpu")["model"], modules)
    if not groups:
        raise ConfigError(f"train.init_from: {path}: no {modules} weights in the checkpoint")
    record: dict[str, Any] = {"run": str(run_dir), "which": which, "modules": modules, "branches": {}}
    seen = set()
    if not branches or any(b not in ("sketch", "photo") for b in branches):
        raise ConfigError(f"train.init_branches: expected some of sketch, photo, got {list(branches)!r}")
    for modality in [m for m in ("sketch", "photo") if m in branches]:
        branch = encoder.branch(modality)
        if id(branch) in seen:
            continue
        seen.add(id(branch))
        prefix = _pick(groups, modality)
        source = groups[prefix]
        mine = branch.state_dict()
        loaded = {k: v for k, v in source.items() if k in mine and tuple(mine[k].shape) == tuple(v.shape)}
        if not loaded:
            raise ConfigError(f"train.init_from: {path}: no tensor of its {prefix or 'model'} {modules} fits the "
                              f"{modality} branch (another backbone?)")
        with torch.no_grad():
            for k, v in loaded.items():
                mine[k].copy_(v.to(mine[k].dtype))
        wanted = [k for k in mine if modules == "encoder" or k.startswith("backbone.")]
        record["branches"][modality] = {"from": prefix, "loaded": len(loaded),
                                        "skipped": sorted(k for k in wanted if k not in loaded)[:20]}
    return record
