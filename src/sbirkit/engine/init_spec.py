"""What a run's ``train.init_from`` preset spec trains, and whether a run starts from another run at
all: pure functions of configs, for the runner (:mod:`sbirkit.engine.init_from`) and for a method
that behaves differently when it starts from trained weights (``adaptive_fg``'s ``feature_norm:
auto``), so neither needs the other's layer.

A spec ``{preset: NAME, overrides: [...]}`` is trained as that preset with its overrides, plus this
run's ``seed`` and ``data.root`` where they differ from the preset's, plus ``train.init_from=null``
where the preset names one and the overrides do not (a preset naming its own baseline does not
start the baseline from itself). A run whose config equals that run's (but for where it is and
its ``train.init_from``) is the spec's run itself, and starts from nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, SbirkitError
from .config import RESUME_MUTABLE, apply_overrides, changed_keys, load_preset

#: what the run a preset spec trains takes from the run that names it
INHERITED = ("seed", "data.root")


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def spec_config(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The config a spec names: its preset with its overrides (errors prefixed with ``where``).
    The one reading of a spec, for the runs it trains (:mod:`sbirkit.engine.preset_runs`) too."""
    if not isinstance(spec.get("overrides") or [], (list, tuple)):
        raise ConfigError(f"{where}.overrides: expected a list of key=value strings, got {spec.get('overrides')!r}")
    try:
        return apply_overrides(load_preset(str(spec["preset"])), [str(o) for o in (spec.get("overrides") or [])])
    except SbirkitError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def preset_spec(spec: Mapping[str, Any], config: Mapping[str, Any], where: str = "train.init_from") -> dict[str, Any]:
    """The spec as it is trained for a run of ``config`` (module docstring)."""
    overrides = [str(o) for o in (spec.get("overrides") or [])]
    theirs = spec_config(spec, where)
    named = {o.split("=", 1)[0].strip() for o in overrides}
    for key in INHERITED:
        if key not in named and _get(config, key) != _get(theirs, key):
            overrides.append(f"{key}={json.dumps(_get(config, key))}")
    if "train.init_from" not in named and theirs["train"].get("init_from") is not None:
        overrides.append("train.init_from=null")
    return {**spec, "overrides": overrides}


def is_spec_run(spec: Mapping[str, Any], config: Mapping[str, Any], where: str = "train.init_from") -> bool:
    """Whether a run of ``config`` is the run ``spec`` (as :func:`preset_spec` gives it) trains."""
    theirs = spec_config(spec, where)
    diff = changed_keys(theirs, config, ignore=(*RESUME_MUTABLE, "name"))
    return not [k for k in diff if not (k == "train.init_from" or k.startswith("train.init_from."))]


def starts_from_run(config: Mapping[str, Any]) -> bool:
    """Whether a run of ``config`` starts from another run's weights: ``train.init_from`` a run
    folder, or a preset spec whose run is not this one; or the deprecated ``method.init_from``."""
    if (config.get("method") or {}).get("init_from"):
        return True
    source = (config.get("train") or {}).get("init_from")
    if isinstance(source, Mapping):
        return not is_spec_run(preset_spec(source, config), config)
    return bool(source)
