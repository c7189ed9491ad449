"""adaptive_fg's options (``method.*``), their allowed values and their checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

MODES = ("meta", "supervised")
INNER = ("head", "all")
MARGINS = ("learned", "fixed")
ALPHAS = ("none", "scalar", "per_parameter")
REGULARIZERS = ("d", "c", "s", "ud")
STRATEGIES = ("meta", "none", "finetune_head", "finetune_all")
CLASSIFIERS = ("cosine", "linear")
GROUP_BY = ("class", "user")


def names(value: Any, option: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"method.{option}: expected a list of names, got {value!r}")
    return list(value)




@dataclass
class AdaptiveFGOptions:
    """``method.*`` of adaptive_fg (docs/adaptive_fg.md has each option's meaning and the presets' values)."""

    # tasks (the engine's episode source over the meta-train groups)
    group_by: str = "class"  # class: a task is one category; user: one user's sketches
    within_class: bool = False  # user tasks: one user's sketches of one category (negatives share it)
    k_support: int = 5
    k_query: int = 5
    tasks_per_step: int = 4
    val_groups: Sequence[str] | None = None  # held out for model selection; null: validation tasks
    # come from the meta-train groups' data.val_split (held-out instances)
    test_groups: Sequence[str] | None = None  # the new categories / users: never trained on
    train_on_test_groups: bool = False  # the upper bound: train on the test groups' training split too
    # meta-learning
    mode: str = "meta"  # meta | supervised (the baseline: same network and tasks, no inner loop)
    inner: str = "head"  # head: only M adapts (ANIL-like, ours) | all: MAML over every parameter
    inner_steps: int = 1
    alpha: float = 0.5  # inner step size (initial value when learned)
    learn_alpha: str = "scalar"  # none | scalar | per_parameter (Meta-SGD)
    first_order: bool = False  # drop the second-order term of the meta-gradient
    margin: str = "learned"  # learned (MarginNet) | fixed (inner_margin)
    inner_margin: float = 0.2  # the fixed inner margin, and the margin net's starting value
    outer_margin: float = 0.2  # the query loss's fixed margin (and the supervised baseline's)
    tau: float = 10.0  # sharpness of the smooth hinge of the inner loss
    margin_hidden: int = 64
    # regularisers on F's features (the poster's L_D, L_C, L_S, L_ud)
    regularizers: Sequence[str] = REGULARIZERS
    w_d: float = 0.1
    w_c: float = 0.1
    w_s: float = 0.1
    w_ud: float = 0.1
    ud_margin: float = 0.2  # mu' of L_ud
    c_mode: str = "cosine"  # L_C: cosine (scale * cos(F, w_c), learned scale) | linear (on raw features)
    c_scale: float = 10.0  # the cosine classifier's starting scale
    reg_ramp_steps: int = 0  # the regularisers' weights rise linearly from 0 to w_* over this many steps
    reg_gate: float | None = None  # a task's regularisers count only while its outer loss exceeds this
    reg_hidden: int = 128
    semantic: str = "minilm"  # a sbirkit.semantics source (onehot, random work offline)
    semantic_options: dict = field(default_factory=dict)
    # the feature extractor
    # deprecated: read by the runner as train.init_from=RUN with train.init_modules=encoder and
    # train.init_which=init_which (engine/init_from.py), with a notice; kept so saved configs load
    init_from: str | None = None
    init_which: str = "best"
    # model selection and test-time adaptation
    val_k: int | None = None  # k of the validation tasks (null: k_support)
    val_draws: int = 5
    val_max_queries: int | None = 50
    monitor_tasks: int = 8  # collapse monitors at each validation on this many fixed training tasks; 0 = off
    strategy: str | None = None  # how adapt() adapts by default: null = meta (mode meta) or none (supervised)
    finetune_steps: int = 10  # the fine-tuning baselines (strategy finetune_head / finetune_all)
    finetune_lr: float = 1.0e-3
    finetune_optimizer: str = "adam"  # adam | sgd
    feature_norm: str = "auto"  # BatchNorm in training: running (statistics updated each step, used as at
    # test time) | batch (ordinary) | auto: running when the run starts from another (init_from), else batch


def check_options(o: AdaptiveFGOptions) -> tuple[str, ...]:
    """Each option against its allowed values and bounds (a one-line ConfigError naming it); returns
    the regularisers switched on, in the order of REGULARIZERS."""
    for option, value, allowed in (("group_by", o.group_by, GROUP_BY), ("mode", o.mode, MODES),
                                   ("inner", o.inner, INNER), ("margin", o.margin, MARGINS),
                                   ("learn_alpha", o.learn_alpha, ALPHAS),
                                   ("finetune_optimizer", o.finetune_optimizer, ("adam", "sgd")),
                                   ("feature_norm", o.feature_norm, ("auto", "running", "batch")),
                                   ("c_mode", o.c_mode, CLASSIFIERS)):
        if value not in allowed:
            raise ConfigError(f"method.{option}: expected one of {', '.join(allowed)}, got {value!r}")
    if o.strategy is not None and o.strategy not in STRATEGIES:
        raise ConfigError(f"method.strategy: expected null or one of {', '.join(STRATEGIES)}, got {o.strategy!r}")
    regs = names(o.regularizers, "regularizers") or []
    unknown = [r for r in regs if r not in REGULARIZERS]
    if unknown:
        raise ConfigError(f"method.regularizers: expected names from {', '.join(REGULARIZERS)}, got {unknown[0]!r}")
    if int(o.reg_ramp_steps) < 0:
        raise ConfigError(f"method.reg_ramp_steps: expected 0 (no ramp) or more, got {o.reg_ramp_steps!r}")
    if float(o.c_scale) <= 0:
        raise ConfigError(f"method.c_scale: expected a positive scale, got {o.c_scale!r}")
    if int(o.monitor_tasks) < 0:
        raise ConfigError(f"method.monitor_tasks: expected 0 (off) or more, got {o.monitor_tasks!r}")
    for option in ("k_support", "k_query", "tasks_per_step", "val_draws", "finetune_steps"):
        if int(getattr(o, option)) < 1:
            raise ConfigError(f"method.{option}: expected a positive integer, got {getattr(o, option)!r}")
    if int(o.inner_steps) < 0:
        raise ConfigError(f"method.inner_steps: expected 0 or more, got {o.inner_steps!r}")
    if not 0.0 < float(o.inner_margin) < 1.0:
        raise ConfigError(f"method.inner_margin: expected a value in (0, 1), got {o.inner_margin!r}")
    return tuple(r for r in REGULARIZERS if r in regs)
