"""Run configs: YAML presets (``sbirkit/configs/``, shipped in the package; ``extends:`` chains them),
typed dotted overrides, saving.

A resolved config is a plain nested dict: the defaults below, overlaid by a preset (and the
presets it extends), overlaid by ``key=value`` overrides. Every key must be one the defaults
(or the preset) define, except inside the open sections ``data.options`` (loader options,
checked by the loader) and ``method`` (options checked by the method); ``model`` also takes any
keyword of ``sbirkit.models.create_encoder``. A typo is an error naming the key, never a
silently ignored setting.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .options import DataOptions, EvalOptions, TrainOptions, check_config, defaults


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 exponent floats: PyYAML (YAML 1.1) reads ``1e-5`` as the
    *string* "1e-5" because it has no dot; here it is the float 1e-05, in presets and overrides."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`YamlLoader` (safe; ``1e-5`` is a float)."""
    return yaml.load(text, Loader=YamlLoader)  # a SafeLoader subclass: safe


DEFAULTS: dict[str, Any] = {
    "name": None,  # the preset's name; the default run_dir is runs/<name>
    "run_dir": None,
    "seed": 0,
    # the typed sections (engine/options.py: each key's type, check and meaning)
    "data": defaults(DataOptions),
    "model": {  # keyword arguments of sbirkit.models.create_encoder (any of them may be set)
        "backbone": "tiny_cnn",
        "embed_dim": 128,
        "shared": True,
        "attention": False,
        "pretrained": False,
        "weights": None,
        "input_norm": "auto",
    },
    "method": {"name": "triplet"},
    "train": defaults(TrainOptions),
    "eval": defaults(EvalOptions),
}

OPEN_SECTIONS = ("data.options", "data.augment", "method", "eval.data")
# keys whose value is a scalar or a mapping (train.init_from: a run folder or a preset spec): an
# override replaces the value whole (train.init_from=runs/base over a preset's spec, or null)
VALUE_MAPPINGS = ("train.init_from",)


def _encoder_options() -> set[str]:
    """Every keyword ``create_encoder`` takes: the keys the ``model`` section may hold."""
    import inspect

    from ..models import create_encoder

    return set(inspect.signature(create_encoder).parameters)


EXTENSIBLE = {"model": _encoder_options}  # sections whose extra keys a function lists
# keys that may differ when a run is resumed (they do not change the trained weights)
RESUME_MUTABLE = ("run_dir", "train.progress", "train.num_workers", "train.log_every", "train.tensorboard",
                  "train.channels_last", "train.compile",
                  "train.feature_cache", "eval.batch_size", "eval.binary_bits")


PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def configs_dirs() -> list[Path]:
    """Where presets are looked up, in order: ``$SBIRKIT_CONFIGS`` (if set), then the package's own
    ``sbirkit/configs/`` (package data, so a wheel install has them too). A preset in the first
    folder shadows a shipped one of the same name and may ``extends:`` shipped presets."""
    env = os.environ.get("SBIRKIT_CONFIGS")
    return ([Path(env)] if env else []) + [PACKAGED_CONFIGS]


def list_presets() -> list[str]:
    return sorted({p.stem for folder in configs_dirs() if folder.is_dir() for p in folder.glob("*.yaml")})


def _is_path(text: str) -> bool:
    """Whether a preset argument names a file by its form: it has a path separator or ends in
    ``.yaml`` / ``.yml``. Anything else is a bare name."""
    return "/" in text or os.sep in text or (os.altsep is not None and os.altsep in text) \
        or text.endswith((".yaml", ".yml"))


def _preset_path(name_or_path: str | os.PathLike) -> Path:
    """The YAML file a preset argument names. The rule (``sbirkit train --help``, docs/configs.md):

    * a **path** (a separator, or ``.yaml`` / ``.yml`` at the end) is that file;
    * a **bare name** is a preset (``$SBIRKIT_CONFIGS``, then the shipped ones); a folder of that
      name in the working directory never shadows it (a folder is never a config). A bare name
      that is no preset but an existing file is read as that file.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    if _is_path(text):
        if not path.is_file():
            found = "a folder" if path.is_dir() else "nothing"
            raise ConfigError(f"{path}: expected a preset YAML file, found {found}")
        return path
    for folder in configs_dirs():
        candidate = folder / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    if path.is_file():
        return path
    folder_note = (f" ({text} in the working directory is a folder, not a config file; a path to a YAML file "
                   f"needs its .yaml)") if path.is_dir() else ""
    raise ConfigError(f"preset {text!r}: not found in {', '.join(map(str, configs_dirs()))}; "
                      f"known: {', '.join(list_presets()) or '(none)'}{folder_note}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``over`` replaces."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: extends: cycle through {' -> '.join(p.stem for p in (*seen, path))}")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = path.parent / parent if str(parent).endswith((".yaml", ".yml")) else _preset_path(parent)
    base = _load_chain(Path(parent_path), (*seen, path))
    return merge(_forget_renamed(base, data), data)


def _forget_renamed(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Drop what belongs to a replaced method or dataset: when ``over`` names another
    ``method.name``, the base's method options go; another ``data.name``, its root and options."""
    base = copy.deepcopy(base)
    new_method = (over.get("method") or {}).get("name") if isinstance(over.get("method"), Mapping) else None
    if new_method is not None and isinstance(base.get("method"), Mapping) and base["method"].get("name") != new_method:
        base["method"] = {"name": new_method}
    new_data = (over.get("data") or {}).get("name") if isinstance(over.get("data"), Mapping) else None
    if new_data is not None and isinstance(base.get("data"), Mapping) and base["data"].get("name") != new_data:
        base["data"].pop("options", None)
        base["data"].pop("root", None)
    return base


def _check_keys(tree: Mapping[str, Any], schema: Mapping[str, Any], where: str, prefix: str = "") -> None:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if dotted in OPEN_SECTIONS:
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {dotted}: expected a mapping, got {value!r}")
            continue
        if key not in schema:
            known = set(schema) | (EXTENSIBLE[prefix[:-1]]() if prefix[:-1] in EXTENSIBLE else set())
            if key not in known:
                raise ConfigError(f"{where}: unknown key {dotted!r}; expected one of: {', '.join(sorted(known))}")
            continue
        if isinstance(schema[key], Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {dotted}: expected a mapping, got {value!r}")
            _check_keys(value, schema[key], where, dotted + ".")


def resolve(config: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """Defaults overlaid by ``config``, after checking that every key is known."""
    _check_keys(config, DEFAULTS, where)
    out = merge(DEFAULTS, config)
    if not isinstance(out["method"].get("name"), str) or not out["method"]["name"].strip():
        raise ConfigError(f"{where}: method.name: expected a registered method name, got {out['method'].get('name')!r}")
    check_config(out, where)
    return out


def load_preset(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The resolved config of a preset: a name in :func:`list_presets` or a YAML file path."""
    path = _preset_path(name_or_path)
    config = resolve(_load_chain(path), str(path))
    if config.get("name") is None:
        config["name"] = path.stem
    return config


def _coerce(key: str, value: Any, current: Any) -> Any:
    """Make ``value`` (YAML-parsed) fit the type of ``current``: ints widen to floats, '1e-3' is a float."""
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(current, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(current, type(value)):
        return value
    kind = type(current).__name__
    raise ConfigError(f"override {key}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind} like {current!r}, "
                      f"got {value!r}")


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.steps=200"`` -> ``("train.steps", 200)`` with the value typed by YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. train.steps=200)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: expected a dotted key before '='")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with dotted overrides applied (strings ``key=value`` or a dict).

    Keys must exist in ``config`` unless they fall inside an open section; values are coerced
    to the type already there (``train.lr=1e-3`` is a float). ``method.name`` and ``data.name``
    are applied first; naming another method drops the old method's options, another dataset
    resets ``data.root`` and ``data.options``.
    """
    out = copy.deepcopy(dict(config))
    items = list(overrides.items()) if isinstance(overrides, Mapping) else [parse_override(o) for o in overrides]
    items.sort(key=lambda kv: kv[0] not in ("method.name", "data.name"))  # stable: names first
    for key, value in items:
        if key in ("method.name", "data.name"):
            section = key.split(".")[0]
            out = merge(_forget_renamed(out, {section: {"name": value}}), {section: {"name": value}})
            if section == "data":
                out["data"].setdefault("options", {})
                out["data"].setdefault("root", None)
            continue
        parts = key.split(".")
        node: Any = out
        open_section = False
        for i, part in enumerate(parts[:-1]):
            prefix = ".".join(parts[: i + 1])
            open_section = open_section or prefix in OPEN_SECTIONS
            if not isinstance(node, dict) or (part not in node and not open_section):
                raise ConfigError(f"override {key}: unknown key {prefix!r}")
            if node.get(part) is None and prefix in OPEN_SECTIONS:  # an open section left null (eval.data)
                node[part] = {}
            node = node.setdefault(part, {})
        last = parts[-1]
        open_section = open_section or ".".join(parts[:-1]) in OPEN_SECTIONS
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[:-1])!r} is not a section")
        section = ".".join(parts[:-1])
        if last not in node and not open_section:
            known = set(node) | (EXTENSIBLE[section]() if section in EXTENSIBLE else set())
            if last not in known:
                raise ConfigError(f"override {key}: unknown key {key!r}; expected one of: {', '.join(sorted(known))}")
        if key in VALUE_MAPPINGS:
            node[last] = value
            continue
        if isinstance(node.get(last), dict) and not isinstance(value, Mapping):
            raise ConfigError(f"override {key}: {key!r} is a section; set one of its keys ({', '.join(sorted(node[last]))})")
        node[last] = _coerce(key, value, node.get(last))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_config(config: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a config as YAML (tuples become lists), keeping the key order."""
    Path(path).write_text(yaml.safe_dump(_plain(config), sort_keys=False))


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A saved run config (``config.yaml``), resolved against today's defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    return resolve(_read_yaml(path), str(path))


def config_hash(config: Mapping[str, Any]) -> str:
    """A stable short hash of a config (for fingerprints)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = RESUME_MUTABLE) -> list[str]:
    """Dotted keys whose values differ between two configs (ignoring ``ignore``)."""
    a, b = flatten(old), flatten(new)
    skip = set(ignore)
    return sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k))
