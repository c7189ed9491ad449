"""Named optimisers: what a method asks for (:class:`OptimizerSpec`) and how the engine builds them.

A method returns ``{name: OptimizerSpec}`` from ``configure_optimizers`` (default: one optimiser,
``"main"``, over every trainable parameter, with the backbones in a group of their own when
``train.backbone_lr`` is set). Each spec gets its own optimiser, LR schedule and gradient scaler;
all three are checkpointed by name. Optimisers are registered by name (``OPTIMIZERS``), so
``train.optimizer`` and a spec's ``optimizer`` accept any registered one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from ..registry import Registry
from .options import TrainOptions
from .schedule import WarmupCosine

OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("adamw", "AdamW (decoupled weight decay)")
def _adamw(params, lr, weight_decay, momentum, betas):
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **({"betas": betas} if betas else {}))


@OPTIMIZERS.register("adam", "Adam (weight decay added to the gradient)")
def _adam(params, lr, weight_decay, momentum, betas):
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **({"betas": betas} if betas else {}))


@OPTIMIZERS.register("sgd", "SGD with momentum")
def _sgd(params, lr, weight_decay, momentum, betas):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@dataclass
class OptimizerSpec:
    """One optimiser a method wants: its parameters (a list, or param-group dicts) and any setting
    that differs from the ``train`` section (``None`` = the ``train`` value)."""

    params: Any
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    betas: tuple[float, float] | None = None
    schedule: str | None = None
    warmup_steps: int | None = None
    min_lr_ratio: float | None = None
    grad_clip: float | None = None
    steps: int | None = None  # the schedule's length; None = train.steps

    def resolved(self, train: TrainOptions) -> OptimizerSpec:
        def pick(value, default):
            return default if value is None else value

        return OptimizerSpec(self.params, pick(self.optimizer, train.optimizer), float(pick(self.lr, train.lr)),
                             float(pick(self.weight_decay, train.weight_decay)),
                             float(pick(self.momentum, train.momentum)), self.betas,
                             pick(self.schedule, train.schedule), int(pick(self.warmup_steps, train.warmup_steps)),
                             float(pick(self.min_lr_ratio, train.min_lr_ratio)),
                             float(pick(self.grad_clip, train.grad_clip)), int(pick(self.steps, train.steps)))


def check_optimizer_name(name: str, where: str = "train.optimizer") -> None:
    if name not in OPTIMIZERS:
        raise ConfigError(f"{where}: expected one of {', '.join(OPTIMIZERS.names())}, got {name!r}")


def default_param_groups(module: torch.nn.Module, train: TrainOptions,
                         backbone_params: Iterable[torch.nn.Parameter] = ()) -> list[dict[str, Any]]:
    """Every trainable parameter of ``module`` in one group; with ``train.backbone_lr`` set, the
    ``backbone_params`` among them in a group of their own at that rate (the schedule scales both)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    if train.backbone_lr is None:
        return [{"params": trainable}]
    in_backbone = {id(p) for p in backbone_params}
    groups = [{"params": [p for p in trainable if id(p) not in in_backbone]}]
    backbone = [p for p in trainable if id(p) in in_backbone]
    if backbone:  # none with cached features: the backbones are frozen
        groups.append({"params": backbone, "lr": float(train.backbone_lr)})
    return groups


@dataclass
class NamedOptimizer:
    """An optimiser with its schedule, gradient scaler and clipping, as the trainer holds them."""

    name: str
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    grad_clip: float

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def state_dicts(self) -> tuple[dict, dict, dict]:
        return self.optimizer.state_dict(), self.scheduler.state_dict(), self.scaler.state_dict()


def build_optimizer(name: str, spec: OptimizerSpec, train: TrainOptions, device: torch.device,
                    fp16: bool) -> NamedOptimizer:
    """The optimiser, schedule and scaler of one spec (values not in the spec come from ``train``)."""
    spec = spec.resolved(train)
    check_optimizer_name(spec.optimizer, f"optimizer {name!r}: optimizer" if name != "main" else "train.optimizer")
    if spec.schedule not in ("cosine", "constant"):
        raise ConfigError(f"optimizer {name!r}: schedule: expected 'cosine' or 'constant', got {spec.schedule!r}")
    params = list(spec.params)
    if not params or all(isinstance(g, dict) and not g.get("params") for g in params):
        raise ConfigError(f"optimizer {name!r}: expected trainable parameters, got none")
    optimizer = OPTIMIZERS.get(spec.optimizer)(params, spec.lr, spec.weight_decay, spec.momentum, spec.betas)
    schedule = WarmupCosine(spec.steps, spec.warmup_steps, spec.min_lr_ratio, cosine=spec.schedule == "cosine")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    return NamedOptimizer(name, optimizer, scheduler, scaler, spec.grad_clip)
