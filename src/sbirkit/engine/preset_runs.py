"""Preset runs another run needs (a data-free run's teachers and discriminator): trained once, reused.

A method asks for one through its context (:meth:`~sbirkit.engine.context.SetupContext.preset_run`
with a spec ``{preset: NAME, overrides: [key=value, ...], run: DIR}``); the runner that set up the
context answers with :func:`ensure_preset_run`. The run folder is ``run:`` if given, else beside
the asking run: ``<parent of run_dir>/<NAME>`` (``<NAME>-<8 hex digits of the overrides>`` with
overrides). A folder that holds a finished run of the same config is reused; a run with another
config, or a folder that is not a finished run, is an error, never trained over.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .checkpoint import rng_state, set_rng_state
from .config import changed_keys, read_config
from .context import PresetRunNotTrained
from .init_spec import spec_config


def preset_run_dir(spec: Mapping[str, Any], base_dir: Path | None) -> Path:
    """Where a preset's run lives (see the module docstring)."""
    if spec.get("run"):
        return Path(spec["run"])
    name = str(spec["preset"])
    overrides = [str(o) for o in (spec.get("overrides") or [])]
    if overrides:
        name += "-" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
    return (base_dir if base_dir is not None else Path("runs")) / name


def ensure_preset_run(spec: Mapping[str, Any], where: str, base_dir: Path | None, progress: bool = True,
                      train_missing: bool = True, fit: Callable[[dict, Path], Any] | None = None) -> Path:
    """The finished run of a preset: reused when it is there with the same config, else trained
    with ``fit(config, run_dir)`` (resumed if it was interrupted; without ``fit`` or with
    ``train_missing`` false, :class:`PresetRunNotTrained`). Torch's, NumPy's and Python's global
    RNG states are restored afterwards, so a run that trains its teachers continues exactly like
    one that reuses them."""
    config = spec_config(spec, where)
    run_dir = preset_run_dir(spec, base_dir)
    config["run_dir"] = str(run_dir)
    meta = run_dir / "meta.json"
    if (run_dir / "best.pt").is_file() and meta.is_file() and "finished" in json.loads(meta.read_text()):
        diff = changed_keys(read_config(run_dir / "config.yaml"), config)
        if diff:
            raise ConfigError(f"{where}: {run_dir} holds a teacher trained with another config ({', '.join(diff[:5])}); "
                              "remove it, or set run: to another folder")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / "last.pt").is_file():
        raise ConfigError(f"{where}: {run_dir} exists and is not a finished or resumable run; remove it, or set "
                          "run: to another folder")
    if not train_missing or fit is None:
        raise PresetRunNotTrained(f"{where}: {spec['preset']} would be trained into {run_dir} first")
    print(f"{where}: training {spec['preset']} into {run_dir} (once; later runs reuse it)", file=sys.stderr)
    state = rng_state()
    try:
        config["train"]["progress"] = bool(progress) and bool(config["train"].get("progress", True))
        fit(config, run_dir)
    finally:
        set_rng_state(state)
    return run_dir


def preset_runner(fit: Callable[[dict, Path], Any] | None = None) -> Callable[..., Path]:
    """What a runner hands its :class:`~sbirkit.engine.context.SetupContext` as ``preset_runner``:
    :func:`ensure_preset_run` training with ``fit`` (None: never trains, e.g. when loading a run)."""
    return functools.partial(ensure_preset_run, fit=fit)
