"""Evaluate a trained run on a split and write ``eval.json`` with the protocol beside the numbers.

The protocol records what the numbers mean: split, query and gallery sets and sizes, the
directions, the distance, each metric's convention and the tie policy, and which checkpoint
(and its fingerprint) produced the embeddings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from . import feature_cache, inference, zero_shot
from .config import merge
from .runlog import now_iso


def evaluate_run(run_dir: str | Path, split: str = "test", directions: Iterable[str] | None = None,
                 data_overrides: Mapping[str, Any] | None = None, which: str = "best",
                 device: str | torch.device | None = None, batch_size: int | None = None,
                 progress: bool = False, save: bool = True, gzsl: bool = False,
                 return_embeddings: bool = False) -> dict[str, Any]:
    """Embed ``split`` with the run's ``which`` checkpoint, evaluate, and save ``eval.json``.

    ``directions`` default to the run's ``eval.directions``; ``data_overrides`` are merged into
    the run's ``data`` section (e.g. ``{"root": "/path/to/qmul"}``). A run with ``data.zero_shot``
    is evaluated on its unseen classes (``gzsl``: against a gallery that also holds the seen-class
    items of ``split``; see :mod:`sbirkit.engine.zero_shot`). Returns the saved dict;
    ``return_embeddings`` (runs without ``data.zero_shot``) adds ``"embeddings": {"sketch": ...,
    "photo": ...}``, the split's embeddings in ``dataset.sketches(split)`` / ``photos(split)`` order,
    so a caller that needs them does not embed the split a second time (they are not saved).
    """
    from ..eval import evaluate_directions

    run_dir = Path(run_dir)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method, config = inference.load_run(run_dir, which, device=device)
    data = merge(config["data"], data_overrides or {})
    if return_embeddings and data.get("zero_shot"):
        raise ValueError(f"{run_dir}: return_embeddings: supported for runs without data.zero_shot only")
    dataset = inference.build_dataset(data)
    ev = config["eval"]
    directions = list(directions) if directions is not None else list(ev["directions"])
    bs = batch_size or ev["batch_size"]
    if config["train"].get("cached_features"):  # frozen backbones: reuse (or extend) the run's feature cache
        embed = feature_cache.store_for({**config, "data": data, "eval": {**ev, "batch_size": bs}}, run_dir, device,
                                        progress).embedder(method.encoder, dataset)
    else:
        def embed(samples):
            return inference.embed_samples(method.encoder, dataset, samples, bs, device, progress)
    ckpt = torch.load(run_dir / f"{which}.pt", map_location="cpu", weights_only=True)
    checkpoint = {"which": which, "step": ckpt.get("step"), "selection": ckpt.get("selection"),
                  "fingerprint": inference.model_fingerprint(run_dir, which)}
    if data.get("zero_shot"):
        results, protocol = zero_shot.evaluate_run_zero_shot(config, dataset, data, split, directions, gzsl, embed)
        report = {"run_dir": str(run_dir), "evaluated": now_iso(), "checkpoint": checkpoint, "protocol": protocol,
                  "results": {d: r.as_dict() for d, r in results.items()}}
        if save:
            (run_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    if gzsl:
        raise ValueError(f"{run_dir}: gzsl: expected a run trained with data.zero_shot, this one has none")
    if int(ev.get("binary_bits") or 0):
        raise ValueError(f"{run_dir}: eval.binary_bits: ITQ rows are reported for zero-shot runs (data.zero_shot) only")
    sketches, photos = dataset.sketches(split), dataset.photos(split)
    if not sketches or not photos:
        raise ValueError(f"{dataset.name}: split {split!r}: expected sketches and photos, got "
                         f"{len(sketches)} sketches and {len(photos)} photos (splits: {', '.join(dataset.splits)})")
    s_emb, s_lab, s_inst = embed(sketches)
    p_emb, p_lab, p_inst = embed(photos)
    fine = any(i is not None for i in s_inst) and any(i is not None for i in p_inst)
    results = evaluate_directions(s_emb, s_lab, p_emb, p_lab, directions=directions,
                                  sketch_instances=s_inst if fine else None,
                                  photo_instances=p_inst if fine else None, distance=ev["distance"])
    report = {
        "run_dir": str(run_dir),
        "evaluated": now_iso(),
        "checkpoint": checkpoint,
        "protocol": {
            "dataset": data["name"],
            "root": data.get("root"),
            "split": split,
            "queries": {"sketch": len(sketches), "photo": len(photos)},
            "gallery": f"every {split!r} sample of the target modality (photos: {len(photos)}, "
                       f"sketches: {len(sketches)}); same-modality directions exclude the query itself",
            "directions": directions,
            "distance": ev["distance"],
            "instance_level": fine,
        },
        "results": {d: r.as_dict() for d, r in results.items()},
    }
    if save:
        (run_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    if return_embeddings:
        report["embeddings"] = {"sketch": s_emb, "photo": p_emb}
    return report
