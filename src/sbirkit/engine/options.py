"""Typed options of the engine's config sections (``data``, ``train``, ``eval``), checked once.

Each section is a dataclass whose fields are the section's keys, with their defaults and a
check: :func:`check_config` (called by :func:`sbirkit.engine.config.resolve`) checks every value
of a resolved config, so ``train.lr=-1`` or ``train.steps=0`` is a one-line
:class:`~sbirkit.errors.ConfigError` naming the key when the config is read, not a traceback in
the middle of a run. Names that need a registry (``data.name``, ``model.backbone``,
``method.name``, ``train.optimizer``) are checked by the trainer before anything is built
(:meth:`sbirkit.engine.trainer.Trainer.check`). The ``model`` section holds keyword arguments of
:func:`sbirkit.models.create_encoder` (only the common ones are checked here) and ``method`` the
method's own options (checked by the method's ``Options`` dataclass).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

Check = Callable[[Any], "str | None"]  # returns what was expected, or None when the value is fine


def _describe(value: Any) -> str:
    return repr(value)


def integer(low: int | None = None) -> Check:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
            return "an integer" + (f" >= {low}" if low is not None else "")
        return None
    return check


def number(low: float | None = None, *, strict: bool = False, high: float | None = None,
           high_strict: bool = False) -> Check:
    def check(v):
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
        bad = bad or (low is not None and (v <= low if strict else v < low))
        bad = bad or (high is not None and (v >= high if high_strict else v > high))
        if bad:
            parts = []
            if low is not None:
                parts.append(f"{'>' if strict else '>='} {low:g}")
            if high is not None:
                parts.append(f"{'<' if high_strict else '<='} {high:g}")
            return "a number" + (" " + " and ".join(parts) if parts else "")
        return None
    return check


def choice(*values: Any) -> Check:
    def check(v):
        if v in values:
            return None
        shown = [repr(x) for x in values]
        return " or ".join(shown) if len(shown) == 2 else "one of " + ", ".join(shown)
    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def mapping(v: Any) -> str | None:
    return None if isinstance(v, Mapping) else "a mapping"


def run_or_preset(v: Any) -> str | None:
    """A run folder, or a preset spec ``{preset: NAME, overrides: [key=value, ...], run: FOLDER}``."""
    if isinstance(v, str) and v.strip():
        return None
    if isinstance(v, Mapping) and isinstance(v.get("preset"), str) and v["preset"].strip() \
            and set(v) <= {"preset", "overrides", "run"} \
            and isinstance(v.get("overrides") or [], (list, tuple)) and isinstance(v.get("run") or "", str):
        return None
    return "a run folder or {preset: NAME, overrides: [key=value, ...], run: FOLDER (optional)}"


def optional(check: Check) -> Check:
    def inner(v):
        if v is None:
            return None
        expected = check(v)
        return None if expected is None else f"null or {expected}"
    return inner


def text_list(allowed: tuple[str, ...] | None = None) -> Check:
    def check(v):
        if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) for x in v):
            return "a non-empty list of names" + (f" from {', '.join(allowed)}" if allowed else "")
        if allowed is not None and any(x not in allowed for x in v):
            return f"a list of names from {', '.join(allowed)}"
        return None
    return check


def _metric_names(v: Any) -> str | None:
    expected = "a non-empty list of metric names (map, map:voc, map@200:sake, p@100, p@100:zse, acc@1, ...)"
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) for x in v):
        return expected
    from ..eval.metric_names import parse_metric

    try:
        for name in v:
            parse_metric(name)
    except ValueError as err:
        return f"{expected}; {err}"
    return None


def opt(default: Any, check: Check, doc: str = "") -> Any:
    """A dataclass field with its check (and a one-line description, for ``docs``)."""
    factory = (lambda: dict(default)) if isinstance(default, dict) else (lambda: list(default)) \
        if isinstance(default, list) else None
    meta = {"check": check, "doc": doc}
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


DIRECTIONS = ("sketch2photo", "photo2sketch", "sketch2sketch", "photo2photo")
SMALL_BATCH = 64  # train.backbone_bn: null freezes a pretrained backbone's BatchNorm at or below this batch


def _backbone_bn(v: Any) -> str | None:
    if v is None or v in ("train", "frozen"):
        return None
    return f"'train' or 'frozen' (or null: frozen for a pretrained backbone and batches of {SMALL_BATCH} or fewer)"


def resolve_backbone_bn(train: Mapping[str, Any], model: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(train.backbone_bn as used, the notice saying why)``: an explicit value is kept; null becomes
    ``frozen`` when the backbone starts from pretrained weights (``model.pretrained``/``weights``) and
    batches hold at most ``SMALL_BATCH`` items, since re-estimating ImageNet statistics from small
    batches of sketches or tiny images cost every such preset most of its score (BENCHMARKS.md),
    else ``train``."""
    value = train.get("backbone_bn")
    if value is not None:
        return value, None
    pretrained = bool(model.get("pretrained") or model.get("weights") or model.get("photo_pretrained")
                      or model.get("photo_weights"))
    if pretrained and int(train["batch_size"]) <= SMALL_BATCH:
        return "frozen", (f"train.backbone_bn=null -> frozen: a pretrained backbone and batches of "
                          f"{train['batch_size']} (<= {SMALL_BATCH}) keep its BatchNorm statistics")
    return "train", None


@dataclass(frozen=True)
class DataOptions:
    """The ``data`` section: which dataset, its splits and the protocol's class split."""

    name: str | None = opt("synthetic", optional(text), "a registered dataset format; null = no dataset "
                                                          "(a method that makes its own data)")
    root: str | None = opt(None, optional(text), "dataset root folder")
    options: dict = opt({}, mapping, "keyword options of the loader")
    train_split: str | None = opt("train", optional(text), "the split training draws from")
    val_split: str | None = opt("val", optional(text), "model selection uses this split only; null = none")
    val_fraction: float = opt(0.0, number(0.0, high=1.0, high_strict=True),
                              "> 0: hold out this fraction of train instances as val_split")
    test_split: str | None = opt("test", optional(text), "the split `sbirkit eval` scores by default")
    cache_images: bool = opt(False, boolean, "keep decoded images in memory (small or procedural datasets)")
    augment: dict | None = opt(None, optional(mapping), "training-time augmentation (sbirkit.data.augment); "
                                                        "null = off; never applied at evaluation")
    zero_shot: str | None = opt(None, optional(text), "zero-shot class split: a manifest name or random:N:SEED")
    zero_shot_val_classes: int = opt(0, integer(0), "> 0: model selection on this many held-out seen classes")


@dataclass(frozen=True)
class TrainOptions:
    """The ``train`` section: the loop, optimisation, devices, logging and checkpoints."""

    steps: int = opt(1000, integer(1))
    batch_size: int = opt(32, integer(1))
    optimizer: str = opt("adamw", text, "a registered optimiser (sbirkit.engine.optim): adamw, adam, sgd")
    lr: float = opt(1.0e-3, number(0.0), "0 keeps the weights where initialisation put them")
    backbone_lr: float | None = opt(None, optional(number(0.0)), "null = lr; else the backbones' own rate")
    backbone_bn: str | None = opt(None, _backbone_bn, "train | frozen: keep the backbones' BatchNorm statistics; "
                                                      "null = frozen for a pretrained backbone with batches of "
                                                      f"{SMALL_BATCH} or fewer, else train")
    weight_decay: float = opt(1.0e-4, number(0.0))
    momentum: float = opt(0.9, number(0.0, high=1.0), "sgd only")
    schedule: str = opt("cosine", choice("cosine", "constant"))
    warmup_steps: int = opt(0, integer(0))
    min_lr_ratio: float = opt(0.0, number(0.0, high=1.0))
    grad_clip: float = opt(0.0, number(0.0), "max gradient norm; 0 = off")
    amp: str = opt("auto", choice("auto", "bf16", "fp16", "none"), "autocast is used on CUDA only")
    device: str = opt("auto", text, "auto | cpu | cuda | cuda:N")
    num_workers: int = opt(0, integer(0), "DataLoader worker processes building the batches")
    channels_last: bool = opt(False, boolean, "channels-last memory format for the model and image batches "
                                              "(faster convolutions on recent GPUs)")
    compile: bool = opt(False, boolean, "torch.compile the encoder branches (in place: checkpoints keep their keys)")
    deterministic: bool = opt(False, boolean, "torch.use_deterministic_algorithms")
    log_every: int = opt(10, integer(1))
    eval_every: int = opt(0, integer(0), "0 = only at the end")
    validate_at_start: bool = opt(False, boolean, "also validate before the first step, so best.pt can be the "
                                                  "starting point (a run that starts from another, init_from)")
    checkpoint_every: int = opt(100, integer(1))
    progress: bool = opt(True, boolean)
    tensorboard: bool = opt(False, boolean)
    cached_features: bool = opt(False, boolean, "train the heads on frozen backbone features cached on disk")
    feature_cache: str | None = opt(None, optional(text), "folder of the feature cache; null = <run_dir>/features")
    head_init: str = opt("default", choice("default", "pca"), "pca: start linear heads at a PCA of the features")
    init_from: str | dict | None = opt(None, optional(run_or_preset), "a run folder whose weights start this run's "
                                       "encoder, or a preset spec trained once beside the run (engine/init_from.py)")
    init_which: str = opt("best", choice("best", "last"), "the checkpoint of init_from")
    init_modules: str = opt("backbone", choice("backbone", "encoder"), "what init_from copies: the backbones, or "
                                                                       "whole branches (attention, heads)")
    init_branches: list = opt(["sketch", "photo"], text_list(("sketch", "photo")),
                              "which branches init_from starts (e.g. [sketch]: the photo branch keeps its own weights)")
    trainable_stages: int = opt(0, integer(0), "with cached_features: cache the maps before the backbone's last N "
                                               "stages and train those N (and attention, head) on them")
    cache_views: int = opt(1, integer(1), "with cached_features and data.augment: augmented views per sample "
                                          "cached once (view 0 plain); training picks one per item per step")


@dataclass(frozen=True)
class EvalOptions:
    """The ``eval`` section: validation during training and the defaults of ``sbirkit eval``."""

    directions: list = opt(["sketch2photo"], text_list(DIRECTIONS))
    distance: str = opt("cosine", choice("cosine", "euclidean", "squared_euclidean"))
    select: str = opt("sketch2photo/map", text, "the validation metric best.pt maximises: <direction>/<metric>")
    batch_size: int = opt(128, integer(1))
    binary_bits: int = opt(0, integer(0), "> 0: also report ITQ binary codes of this many bits (zero-shot), ranked "
                                          "by exact Hamming distance")
    ties: str = opt("expected", choice("pessimistic", "expected", "optimistic"),
                    "order inside tied distances: relevant last, the exact expectation over random orders, or "
                    "relevant first (docs/metrics.md)")
    no_relevant: str = opt("exclude", choice("exclude", "zero"), "a query with no relevant item: left out of "
                                                                 "AP means (counted), or scored 0")
    metrics: list | None = opt(None, optional(_metric_names), "the metrics 'sbirkit eval' reports (e.g. [map:voc, "
                                                             "p@100]); null = the protocol's own. Validation "
                                                             "during training keeps the defaults")
    data: dict | None = opt(None, optional(mapping), "model-selection data of its own: a data section "
                                                     "(name, root, options, val_split, ...); null = data.val_split")


SECTIONS: dict[str, type] = {"data": DataOptions, "train": TrainOptions, "eval": EvalOptions}


def defaults(cls: type) -> dict[str, Any]:
    """The section's default values as a plain dict (what ``DEFAULTS`` holds)."""
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls)}


def check_section(name: str, values: Mapping[str, Any], where: str = "config") -> Any:
    """The typed options of section ``name`` from ``values``; a bad value is a one-line ConfigError."""
    cls = SECTIONS[name]
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        f = known.get(key)
        if f is None:
            raise ConfigError(f"{where}: unknown key '{name}.{key}'; expected one of: {', '.join(sorted(known))}")
        expected = f.metadata["check"](value)
        if expected is not None:
            raise ConfigError(f"{where}: {name}.{key}: expected {expected}, got {_describe(value)}")
    return cls(**{k: v for k, v in values.items() if k in known})


_MODEL_CHECKS: dict[str, Check] = {
    "backbone": text, "embed_dim": integer(1), "shared": boolean, "attention": boolean, "pretrained": boolean,
    "weights": optional(text), "hidden": optional(integer(1)), "dropout": number(0.0, high=1.0, high_strict=True),
    "normalize": boolean, "pool": choice("avg", "max", "gem", "grid"), "pool_grid": integer(1),
    "backbone_stages": optional(integer(1)),
}


def check_config(config: Mapping[str, Any], where: str = "config") -> None:
    """Check every value of a resolved config (see the module docstring)."""
    if isinstance(config.get("seed"), bool) or not isinstance(config.get("seed"), int):
        raise ConfigError(f"{where}: seed: expected an integer, got {config.get('seed')!r}")
    for key in ("name", "run_dir"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise ConfigError(f"{where}: {key}: expected null or a string, got {config[key]!r}")
    for name in SECTIONS:
        check_section(name, config[name], where)
    model = config.get("model") or {}
    for key, check in _MODEL_CHECKS.items():
        if key in model:
            expected = check(model[key])
            if expected is not None:
                raise ConfigError(f"{where}: model.{key}: expected {expected}, got {model[key]!r}")
    data_for_eval = config["eval"].get("data")
    if data_for_eval is not None:
        check_section("data", data_for_eval, f"{where}: eval.data")
    select = config["eval"]["select"]
    group, _, metric = select.partition("/")
    if not group or not metric:  # which names exist is checked by the trainer, which knows its validation data
        raise ConfigError(f"{where}: eval.select: expected <direction>/<metric> (e.g. sketch2photo/map) or a "
                          f"method's own <group>/<metric>, got {select!r}")


def options(config: Mapping[str, Any]) -> tuple[DataOptions, TrainOptions, EvalOptions]:
    """The typed ``(data, train, eval)`` options of a resolved config."""
    return tuple(SECTIONS[n](**config[n]) for n in ("data", "train", "eval"))  # type: ignore[return-value]
