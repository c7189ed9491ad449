"""Evaluate a trained run on a split and write its record with the protocol beside the numbers.

The protocol records what the numbers mean: split, query and gallery sets and sizes, the
directions, the distance, each metric's convention and the tie policy, and which checkpoint
(and its fingerprint) produced the embeddings. Each (split, checkpoint, setting) has a file of
its own, ``eval-<split>-<which>[-gzsl].json``, so evaluating ``--which last`` never overwrites
the ``best`` record; ``eval.json`` is a copy of the most recent one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, UsageError
from ..eval.presets import get_preset
from ..eval.ties import check_ties
from . import feature_cache, inference
from .config import merge
from .evaluator import Evaluator
from .options import DIRECTIONS, EvalOptions
from .protocols import create_protocol
from .runlog import now_iso


def eval_record_name(split: str, which: str, gzsl: bool = False) -> str:
    """``eval-<split>-<which>[-gzsl].json`` (the split name made file-safe)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(split))
    return f"eval-{safe}-{which}{'-gzsl' if gzsl else ''}.json"


def evaluate_run(run_dir: str | Path, split: str = "test", directions: Iterable[str] | None = None,
                 data_overrides: Mapping[str, Any] | None = None, which: str = "best",
                 device: str | torch.device | None = None, batch_size: int | None = None,
                 progress: bool = False, save: bool = True, gzsl: bool = False,
                 return_embeddings: bool = False, per_query: bool = False,
                 protocol: Any | None = None, ties: str | None = None, preset: str | None = None) -> dict[str, Any]:
    """Embed ``split`` with the run's ``which`` checkpoint, evaluate under the run's protocol, and
    save the record (see the module docstring).

    ``directions`` default to the run's ``eval.directions``; ``data_overrides`` are merged into
    the run's ``data`` section (e.g. ``{"root": "/path/to/qmul"}``; a data-free run names its
    evaluation data this way). A run with ``data.zero_shot`` is evaluated on its unseen classes
    (``gzsl``: against a gallery that also holds the seen-class items of ``split``; see
    :mod:`sbirkit.engine.zero_shot`). Returns the saved dict; ``return_embeddings`` adds
    ``"embeddings": {"sketch": ..., "photo": ...}``, the embeddings that were scored (runs without
    ``data.zero_shot``: in ``dataset.sketches(split)`` / ``photos(split)`` order), and
    ``per_query`` adds ``"per_query"`` (per direction, per metric, one value per query); neither is
    saved. ``protocol`` replaces the run's own (standard or zero-shot) protocol, e.g. an adaptation
    protocol that adapts on k support pairs of each task before scoring it; the record is then
    ``eval-<split>-<which>-<protocol.name>.json``. ``ties`` replaces the run's ``eval.ties``
    (the record then ends in ``-ties-<policy>`` unless it is the run's own); ``preset`` scores with
    the metrics and no-relevant rule of a published paper's code (:data:`sbirkit.eval.PRESETS`;
    the record ends in ``-as-<preset>``).
    """
    from . import distributed

    run_dir = Path(run_dir)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dist = distributed.from_environment(device.type)  # torchrun: each rank embeds a share; rank 0 saves
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    method, config = inference.load_run(run_dir, which, device=device)
    data = merge(config["data"], data_overrides or {})
    if return_embeddings and data.get("zero_shot"):
        raise ConfigError(f"{run_dir}: return_embeddings: supported for runs without data.zero_shot only")
    dataset = inference.build_dataset(data)
    ev = EvalOptions(**{**config["eval"], **({"batch_size": int(batch_size)} if batch_size else {})})
    suffix = ""
    if ties is not None and ties != ev.ties:
        check_ties(ties)
        ev, suffix = dataclasses.replace(ev, ties=ties), f"-ties-{ties}"
    if preset is not None:
        chosen = get_preset(preset)
        ev = dataclasses.replace(ev, metrics=list(chosen.metrics), no_relevant=chosen.no_relevant)
        suffix = f"-as-{preset}" + suffix
    directions = list(directions) if directions is not None else list(ev.directions)
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or not directions:
        raise UsageError(f"directions (--direction): expected names from {', '.join(DIRECTIONS)}, "
                         f"got {', '.join(map(repr, unknown)) or 'none'}")
    store = None
    if config["train"].get("cached_features"):  # frozen backbones: reuse (or extend) the run's feature cache
        store = feature_cache.store_for({**config, "data": data, "eval": {**config["eval"], "batch_size": ev.batch_size}},
                                        run_dir, device, progress)
    evaluator = Evaluator(method.encoder, dataset, batch_size=ev.batch_size, device=device, features=store,
                          progress=progress, dist=dist)
    custom = protocol is not None
    if not custom:
        protocol = create_protocol(data, int(config.get("seed") or 0))
    outcome = protocol.evaluate(evaluator, split, directions, ev, gzsl=gzsl, per_query=per_query)
    ckpt = torch.load(run_dir / f"{which}.pt", map_location="cpu", weights_only=True)
    checkpoint = {"which": which, "step": ckpt.get("step"), "selection": ckpt.get("selection"),
                  "fingerprint": inference.model_fingerprint(run_dir, which)}
    report = {"run_dir": str(run_dir), "evaluated": now_iso(), "checkpoint": checkpoint,
              "protocol": outcome.protocol, "results": {d: r.as_dict() for d, r in outcome.results.items()}}
    if preset is not None:
        report["preset"] = preset
    if save and dist.is_main:
        text = json.dumps(report, indent=2) + "\n"
        name = eval_record_name(split, which, gzsl)
        if custom:
            name = name[:-len(".json")] + f"-{protocol.name}.json"
        name = name[:-len(".json")] + suffix + ".json"
        (run_dir / name).write_text(text)
        (run_dir / "eval.json").write_text(text)
    if return_embeddings:
        report["embeddings"] = outcome.embeddings
    if per_query:
        report["per_query"] = {d: {m: v.cpu().numpy() for m, v in r.per_query.items()}
                               for d, r in outcome.results.items()}
    return report
