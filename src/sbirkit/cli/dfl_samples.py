"""``sbirkit dfl samples``: load a data-free run and its teachers, draw its generated pairs.

The run is loaded by the runner (``load_run``); its teachers come through a context as in
training (preset runs beside the run folder, trained first if missing); the drawing and the
diagnostics are the method's (:mod:`sbirkit.methods.crossx_dfl.samples`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..engine import load_run, train
from ..engine.context import SetupContext
from ..engine.preset_runs import preset_runner
from ..errors import ConfigError, UsageError
from ..methods.crossx_dfl import CrossXDFL
from ..methods.crossx_dfl.options import VALIDATION_SEED
from ..methods.crossx_dfl.samples import check_grid_args, samples_grid


def write_samples_grid(run_dir: str | Path, out: str | Path | None = None, per_class: int = 4, n: int = 256,
                       which: str = "best", seed: int = VALIDATION_SEED, overwrite: bool = False,
                       scale: int = 2, reference: dict | None = None) -> Path:
    """A PNG of generated (photo | sketch) pairs, one row per class, from a CrossX-DFL run's
    estimators (default ``RUN/samples.png``; an existing ``out`` is refused unless ``overwrite``),
    and the synthesis diagnostics of the ``n`` pairs beside it as ``<out>.json`` (with
    ``reference``, or the run's own ``method.reference``, the generated-vs-real probes)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "samples.png"
    if out.exists() and not overwrite:
        raise UsageError(f"--out {out}: exists; pass --overwrite to replace it")
    check_grid_args(per_class, n, scale)
    method, config = load_run(run_dir, which)
    if not isinstance(method, CrossXDFL) or not method.variant.generates:
        raise ConfigError(f"{run_dir}: expected a crossx_dfl run that generates its data (variant crossx_dfl, "
                          "unimodal, gaussian_prior or deepinversion)")
    ctx = SetupContext.for_run(config, run_dir, run_loader=load_run, preset_runner=preset_runner(train))
    ctx.train = dataclasses.replace(ctx.train, progress=False)
    method.attach_teachers(ctx)
    if reference is not None:
        method.options.reference = reference
    method.eval()
    sheet, diagnostics = samples_grid(method, per_class, n, seed, scale, where=str(run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    out.with_suffix(".json").write_text(json.dumps({"run": str(run_dir), "which": which, "pairs": n,
                                                    **diagnostics}, indent=1) + "\n")
    return out


__all__ = ["write_samples_grid"]
