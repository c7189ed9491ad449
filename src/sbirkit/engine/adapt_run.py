"""The runner's side of the adaptation protocol (:mod:`sbirkit.engine.adaptation`): the protocol
around a run folder's own ``adapt`` (``sbirkit eval RUN --adapt K``), and an adapted run folder
written from a support folder (``sbirkit adapt``). Below the runner, the protocol itself loads no
run and writes none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from .adaptation import AdaptationProtocol, choose_support, read_support, require_adaptive, support_batch
from .checkpoint import atomic_save, load_checkpoint
from .config import save_config
from .inference import load_run, model_fingerprint


def protocol_for_run(run_dir: str | Path, which: str = "best", *, k: int, group_by: str | None = None,
                     groups: Sequence[str] | None = None, draws: int = 5, strategy: str | None = None,
                     steps: int | None = None, lr: float | None = None, optimizer: str | None = None,
                     negatives: int | None = None, max_queries: int | None = None, seed: int = 0,
                     device: str | torch.device | None = None) -> AdaptationProtocol:
    """:meth:`AdaptationProtocol.for_method` of the run in ``run_dir`` (its ``which`` checkpoint,
    on ``device``: CUDA when there is one unless given)."""
    if int(k) < 1:  # before the run is loaded
        raise UsageError(f"k (--adapt): expected a positive integer, got {k}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    method, config = load_run(run_dir, which, device=device)
    return AdaptationProtocol.for_method(method, config, k=k, group_by=group_by, groups=groups, draws=draws,
                                         strategy=strategy, steps=steps, lr=lr, optimizer=optimizer,
                                         negatives=negatives, max_queries=max_queries, seed=seed, where=run_dir)


def adapt_run(run_dir: str | Path, support: str | Path, k: int, out: str | Path, *,
              support_format: str = "folder", which: str = "best", seed: int = 0, split: str | None = None,
              strategy: str | None = None, support_options: Mapping[str, Any] | None = None,
              device: str | torch.device = "cpu") -> dict[str, Any]:
    """Adapt a trained run to the k pairs of a support folder and write a normal run folder at ``out``
    (``config.yaml``, ``best.pt`` with the adapted weights, ``meta.json`` with the adaptation: source
    run and fingerprint, support pairs, predicted margin) that ``sbirkit eval``, ``index build`` and
    ``search`` accept. The source run folder is only read. Returns the ``adapted`` record."""
    run_dir, out, support = Path(run_dir), Path(out), Path(support)
    if int(k) < 1:
        raise UsageError(f"-k: expected a positive integer, got {k}")
    if out.resolve() == run_dir.resolve():
        raise UsageError(f"--out: {out}: expected a folder other than the run being adapted")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out: {out}: expected a new or empty folder (it exists and is not empty)")
    if not support.is_dir():
        raise UsageError(f"--support: {support}: expected a folder of sketch-photo pairs, not found")
    method, config = load_run(run_dir, which, device=device)
    require_adaptive(method, config, run_dir)
    options = dict(config["data"].get("options") or {})
    dataset = read_support(support, support_format, image_size=int(options.get("image_size", 64)),
                           stroke_width=options.get("stroke_width"), options=support_options)
    pairs, negatives = choose_support(dataset, k, seed=seed, split=split, where=support)
    batch = support_batch(dataset, pairs, negatives)
    adapted = method.adapt(batch, strategy=strategy)
    state = adapted.state_for(method)
    source = load_checkpoint(run_dir / f"{which}.pt", map_location="cpu")
    record = {
        **adapted.record,
        "from_run": str(run_dir.resolve()), "which": which, "fingerprint": model_fingerprint(run_dir, which),
        "support": str(support.resolve()), "support_format": support_format, "split": split, "k": int(k),
        "seed": int(seed), "pairs": [[s.location(), p.location()] for s, p in pairs],
        "negative_photos": [p.location() for p in negatives],
    }
    out.mkdir(parents=True, exist_ok=True)
    saved = dict(config)
    saved["run_dir"] = str(out)
    save_config(saved, out / "config.yaml")
    atomic_save({"model": state, "step": source.get("step"), "metric": None, "value": None,
                 "selection": f"adapted from {run_dir} ({which}) on k={k} pairs of {support}",
                 "method": config["method"]["name"]}, out / "best.pt")
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta["adapted"] = record
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return record
