"""What the trainer hands a method: :class:`SetupContext` before training, :class:`StepContext` per step.

``SetupContext`` carries the run (config, typed options, device, seed, folder) and the training
data, which may be ``None`` for a method that makes its own; it builds the sources a method can
name (:meth:`SetupContext.pairs`, :meth:`~SetupContext.episodes`, :meth:`~SetupContext.generated`).

``StepContext`` is the step's handle on the optimisers. In the default, automatic mode the
trainer back-propagates ``out["loss"]`` and steps every optimiser; a method with
``manual_optimization = True`` does it itself, in any order, for alternating updates::

    ctx.zero_grad("generator"); ctx.backward(loss_g, "generator"); ctx.step("generator")
    ctx.zero_grad("student");   ctx.backward(loss_s, "student");   ctx.step("student")

Schedules advance once per trainer step whatever the method did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.samplers import EpisodicTaskSampler, PairBatchSampler
from ..errors import ConfigError
from .optim import NamedOptimizer
from .options import DataOptions, EvalOptions, TrainOptions
from .sources import EpisodeSource, GeneratedSource, PairSource, SampleSource


class PresetRunNotTrained(ConfigError):
    """A preset run (a teacher, a discriminator) that would have to be trained first, where this
    context trains nothing (a dry run, loading a finished run)."""


@dataclass
class SetupContext:
    """The run as a method sees it before the first step (see the module docstring)."""

    config: Mapping[str, Any]
    data: DataOptions
    train: TrainOptions
    eval: EvalOptions
    dataset: Any | None  # the training view (seen classes only under data.zero_shot), or None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run_dir: Path | None = None
    seed: int = 0
    resuming: bool = False
    dry_run: bool = False  # ``sbirkit train --dry-run``: build and check, but train and write nothing
    # ``(run_dir, which, device) -> (method, config)``: how the runner loads another run (the trainer
    # passes ``load_run``), so a method that needs one asks :meth:`load_run` instead of importing it
    run_loader: Any | None = None
    # ``(spec, where, base_dir, progress, train_missing) -> run folder``: how the runner finds (or
    # first trains) a preset run this one needs (:mod:`sbirkit.engine.preset_runs`); see :meth:`preset_run`
    preset_runner: Any | None = None

    @classmethod
    def for_dataset(cls, dataset: Any, train_split: str | None = "train", **overrides: Any) -> SetupContext:
        """A context with the engine defaults around ``dataset`` (for using a method outside the trainer)."""
        from .options import defaults

        config = {"method": {}, "data": {**defaults(DataOptions), "train_split": train_split},
                  "train": defaults(TrainOptions), "eval": defaults(EvalOptions)}
        return cls(config, DataOptions(**config["data"]), TrainOptions(**config["train"]),
                   EvalOptions(**config["eval"]), dataset, **overrides)

    @classmethod
    def for_run(cls, config: Mapping[str, Any], run_dir: str | Path | None, **overrides: Any) -> SetupContext:
        """A context for a saved run's resolved ``config`` without its data (loading a run, or
        using it outside the trainer)."""
        from .options import defaults, options

        try:
            data, train, ev = options(config)
        except (TypeError, KeyError, ValueError):  # a config saved by an older version: the engine defaults
            data, train, ev = DataOptions(**defaults(DataOptions)), TrainOptions(**defaults(TrainOptions)), \
                EvalOptions(**defaults(EvalOptions))
        return cls(config, data, train, ev, None, run_dir=Path(run_dir) if run_dir is not None else None,
                   **overrides)

    @property
    def augment(self):
        """``data.augment`` parsed (:class:`~sbirkit.data.augment.Augment`), or None when off."""
        from ..data.augment import Augment

        return Augment.from_config(self.data.augment)

    @property
    def train_split(self) -> str | None:
        return self.data.train_split

    def load_run(self, run_dir: str | Path, which: str = "best") -> tuple[Any, Mapping[str, Any]]:
        """``(method, config)`` of another finished run (a component, a teacher, an init), on this
        run's device, loaded by the runner that set up this context."""
        if self.run_loader is None:
            raise ConfigError(f"{run_dir}: this context cannot load other runs (no run_loader; the trainer "
                              "sets one)")
        return self.run_loader(run_dir, which, self.device)

    def preset_run(self, spec: Mapping[str, Any], where: str, train_missing: bool = True) -> Path:
        """The finished run folder of a preset this run needs (``{preset: NAME, overrides: [...],
        run: DIR}``): reused, or trained first by the runner (beside this run; nothing is trained
        in a dry run or without ``train_missing``: :class:`PresetRunNotTrained`)."""
        if self.preset_runner is None:
            raise ConfigError(f"{where}: this context cannot find or train preset runs (no preset_runner; the "
                              "trainer sets one)")
        base = Path(self.run_dir).parent if self.run_dir is not None else None
        return self.preset_runner(spec, where, base, bool(self.train.progress),
                                  bool(train_missing) and not self.dry_run)

    def require_dataset(self, what: str) -> Any:
        if self.dataset is None:
            method = self.config.get("method", {}).get("name")
            raise ConfigError(f"data.name: method {method!r} trains on {what} from a dataset; set data.name "
                              "(it is null)")
        return self.dataset

    def pairs(self, mode: str = "class", classes_per_batch: int | None = None) -> PairSource:
        """(sketch, photo) pair batches of ``train.batch_size`` from the training split."""
        sampler = PairBatchSampler(self.require_dataset("pair batches"), self.train_split, self.train.batch_size,
                                   mode, classes_per_batch, seed=self.seed)
        return PairSource(sampler, augment=self.augment, seed=self.seed)

    def episodes(self, group_by: str = "class", k_support: int = 1, k_query: int = 1,
                 tasks_per_step: int = 1) -> EpisodeSource:
        """k-shot tasks (one category or one user each) from the training split."""
        sampler = EpisodicTaskSampler(self.require_dataset("episodes"), self.train_split, group_by, k_support,
                                      k_query, seed=self.seed)
        return EpisodeSource(sampler, tasks_per_step, augment=self.augment, seed=self.seed)

    def samples(self, modality: str, batch_size: int | None = None) -> SampleSource:
        """Batches of single ``modality`` samples ("photo" or "sketch") from the training split."""
        if modality not in ("photo", "sketch"):
            raise ConfigError(f"modality: expected 'photo' or 'sketch', got {modality!r}")
        return SampleSource(self.require_dataset(f"{modality} batches"), self.train_split, modality,
                            batch_size or self.train.batch_size, self.seed, augment=self.augment)

    def generated(self, batch_size: int | None = None) -> GeneratedSource:
        """Step numbers and seeds only: for a method that generates its own training data."""
        return GeneratedSource(self.seed, batch_size or self.train.batch_size)


class StepContext:
    """One training step's view of the optimisers (see the module docstring)."""

    def __init__(self, global_step: int, device: torch.device, optimizers: Mapping[str, NamedOptimizer],
                 seed: int = 0, autocast_dtype: torch.dtype | None = None, dist: Any | None = None):
        from .distributed import SINGLE

        self.global_step = int(global_step)
        self.device = device
        self._optimizers = dict(optimizers)
        self.seed = int(seed)
        self.autocast_dtype = autocast_dtype
        self.dist = dist if dist is not None else SINGLE
        self.stepped: set[str] = set()

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The global batch of ``tensor`` under torchrun (every rank's share in rank order, with
        gradients flowing back to each); the tensor itself in one process. Losses that compare a
        sample with others (triplet mining, InfoNCE) gather their inputs first."""
        from .distributed import gather

        return gather(tensor, self.dist)

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {name: o.optimizer for name, o in self._optimizers.items()}

    def _get(self, name: str | None) -> NamedOptimizer:
        if name is None:
            if len(self._optimizers) != 1:
                raise ConfigError(f"ctx: name one of the optimisers {', '.join(self._optimizers)}")
            return next(iter(self._optimizers.values()))
        if name not in self._optimizers:
            raise ConfigError(f"ctx: unknown optimiser {name!r}; the method configured {', '.join(self._optimizers)}")
        return self._optimizers[name]

    def zero_grad(self, name: str | None = None) -> None:
        self._get(name).optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, name: str | None = None, retain_graph: bool = False) -> None:
        """Back-propagate ``loss`` (scaled by ``name``'s gradient scaler under fp16 autocast)."""
        self._get(name).scaler.scale(loss).backward(retain_graph=retain_graph)

    def step(self, name: str | None = None) -> None:
        """Clip (the spec's ``grad_clip``) and step optimiser ``name``, then update its scaler."""
        opt = self._get(name)
        if self.dist.enabled:
            from .distributed import average_gradients

            average_gradients(opt.parameters(), self.dist)
        if opt.grad_clip > 0:
            opt.scaler.unscale_(opt.optimizer)
            torch.nn.utils.clip_grad_norm_(opt.parameters(), opt.grad_clip)
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        self.stepped.add(opt.name)

    def autocast(self):
        """The trainer's mixed-precision context (a no-op on CPU)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def generator(self, stream: int = 0) -> torch.Generator:
        """A generator on the device seeded by (run seed, step, ``stream``): random numbers that a
        resumed run draws identically without any saved state."""
        import numpy as np

        seed = int(np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.global_step, int(stream), 0x57E9])
                   .generate_state(1, np.uint64)[0]) >> 1
        return torch.Generator(device=self.device).manual_seed(seed)
