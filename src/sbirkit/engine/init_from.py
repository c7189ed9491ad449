"""Start a run's encoder from another run's weights (``train.init_from``): e.g. a fine-grained model
whose backbone was first trained to classify sketches (the sketch-domain pretraining of
Triplet-SN, Yu et al., CVPR 2016), or meta-training that starts from a supervised baseline.

Any run of any method works as the source: every tensor of its checkpoint whose key holds
``backbone.`` (``train.init_modules: backbone``) or belongs to an encoder branch (``encoder``:
backbone, attention and head) is grouped by the branch it sits in; each branch of the new
encoder takes the source branch of the same modality (``sketch_encoder`` / ``photo_encoder``),
else the shared one, and copies every tensor whose name and shape agree. What was loaded and
skipped is recorded in ``meta.json``; a resumed run loads everything from ``last.pt`` instead.

``train.init_from`` may also be a preset spec, ``{preset: NAME, overrides: [key=value, ...]}``
(optionally ``run: FOLDER``): that preset run is trained once, into ``<parent of run_dir>/<NAME>-<8
hex digits of its overrides>`` beside the run, and reused by every later run that names the same
spec (the rule of the data-free teachers, :func:`sbirkit.engine.preset_runs.ensure_preset_run`; a
folder holding a run of another config is an error, never trained over). The spec's run gets this
run's ``seed`` and ``data.root`` (added to its overrides where they differ from the preset's, so
each seed has its own), and ``train.init_from: null`` unless its overrides say otherwise (a preset
that names its own baseline does not start the baseline from itself); a run whose config *is* the
spec's run (the baseline command itself, e.g. ``sbirkit train adaptive_fg-synthetic
method.mode=supervised "method.regularizers=[]"``) trains from scratch instead of starting from a
copy of itself (:mod:`sbirkit.engine.init_spec`). ``adaptive_fg``'s presets name their supervised
baseline this way (docs/adaptive_fg.md).

A method learns what it was started from through two hooks of
:class:`~sbirkit.methods.base.Method`: ``check_init_source`` (the source run's saved config, before
anything is copied: ``adaptive_fg`` refuses another backbone) and ``initialised_from`` (the record
below, after: ``adaptive_fg`` keeps a loaded head rather than its PCA start). ``method.init_from``
(``adaptive_fg``'s own key before this mechanism took it over) is read as ``train.init_from`` with
``train.init_modules: encoder`` and ``train.init_which: method.init_which``, with a one-line notice.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .checkpoint import load_checkpoint
from .config import read_config
from .context import PresetRunNotTrained
from .init_spec import is_spec_run, preset_spec

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


def _parts(keys, loaded) -> dict[str, str]:
    """``{part: "all" | "some" | "none"}``: how much of each part of a branch (its first key
    component: backbone, attention, head, ...) came from the source."""
    out: dict[str, list[bool]] = {}
    for k in keys:
        out.setdefault(k.split(".", 1)[0], []).append(k in loaded)
    return {p: "all" if all(v) else "some" if any(v) else "none" for p, v in sorted(out.items())}


def init_encoder_from_run(encoder: torch.nn.Module, run_dir: str | Path, which: str = "best",
                          modules: str = "backbone", branches=("sketch", "photo"), where: str = "train.init_from",
                          check=None) -> dict[str, Any]:
    """Copy ``run_dir``'s ``which`` weights into ``encoder`` (see the module docstring); only the
    ``branches`` named (``train.init_branches``) are started from it, the others keep their weights.
    ``where`` names the key in errors; ``check(source config or None, "<where>: <run_dir>")`` may
    refuse the source before anything is copied."""
    if modules not in MODULES:
        raise ConfigError(f"train.init_modules: expected 'backbone' or 'encoder', got {modules!r}")
    path = Path(run_dir) / f"{which}.pt"
    if not path.is_file():
        raise ConfigError(f"{where}: {path}: checkpoint not found (expected a run folder with {which}.pt)")
    saved = Path(run_dir) / "config.yaml"
    source_config = read_config(saved) if saved.is_file() else None
    if check is not None:
        check(source_config, f"{where}: {run_dir}")
    groups = _groups(load_checkpoint(path, map_location="cpu")["model"], modules)
    if not groups:
        raise ConfigError(f"{where}: {path}: no {modules} weights in the checkpoint")
    record: dict[str, Any] = {"run": str(run_dir), "which": which, "modules": modules, "key": where,
                              "backbone": source_config["model"].get("backbone") if source_config else None, "branches": {}}
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
            raise ConfigError(f"{where}: {path}: no tensor of its {prefix or 'model'} {modules} fits the "
                              f"{modality} branch (another backbone?)")
        with torch.no_grad():
            for k, v in loaded.items():
                mine[k].copy_(v.to(mine[k].dtype))
        wanted = [k for k in mine if modules == "encoder" or k.startswith("backbone.")]
        record["branches"][modality] = {"from": prefix, "loaded": len(loaded),
                                        "skipped": sorted(k for k in wanted if k not in loaded)[:20],
                                        "parts": _parts(mine, loaded), "source_tensors": len(source)}
    return record


# ---- where the weights come from: a run, a preset spec, or the deprecated method.init_from ---------------
def init_source(config: Mapping[str, Any], train) -> tuple[Any, str, str, str] | None:
    """``(run folder or preset spec, which, modules, key)`` this run starts from, or None:
    ``train.init_from``, or the deprecated ``method.init_from`` (read as train.init_from with
    init_modules encoder; a one-line notice)."""
    method = config.get("method") or {}
    alias = method.get("init_from")
    if alias:
        print(f"notice: method.init_from is deprecated; read as train.init_from={alias} with "
              f"train.init_modules=encoder (docs/adaptive_fg.md)", file=sys.stderr)
        return alias, str(method.get("init_which") or "best"), "encoder", "method.init_from"
    if train.init_from:
        return train.init_from, train.init_which, train.init_modules, "train.init_from"
    return None


def init_from_source(method, config: Mapping[str, Any], train, preset_run: Callable[[Mapping[str, Any], str], Path]
                     ) -> dict[str, Any] | None:
    """Start ``method``'s encoder as ``train.init_from`` (or ``method.init_from``) says: the
    checkpoint of a run folder, or of a preset spec's run (trained first if it is not there; a dry
    run trains nothing and says so). The method checks the source and learns the record through
    its hooks; returns the record (``meta.json``'s ``init_from``), or None. ``preset_run`` is the
    run's :meth:`SetupContext.preset_run <sbirkit.engine.context.SetupContext.preset_run>` (it
    trains the spec's run beside this one, and nothing in a dry run)."""
    found = init_source(config, train)
    if found is None:
        return None
    source, which, modules, where = found
    spec = None
    if isinstance(source, Mapping):
        spec = preset_spec(source, config, where)
        if is_spec_run(spec, config):
            print(f"{where}: this run is the run of {spec['preset']} + {' '.join(spec['overrides'])} itself; it "
                  "trains from scratch", file=sys.stderr)
            return None
        try:
            source = preset_run(spec, where)
        except PresetRunNotTrained as exc:  # a dry run: report what training would do first
            print(f"# {exc}", file=sys.stderr)
            return None
    record = init_encoder_from_run(method.encoder, source, which, modules, train.init_branches, where,
                                   check=method.check_init_source)
    if spec is not None:
        record["preset"] = spec
    method.initialised_from(record)
    return record
