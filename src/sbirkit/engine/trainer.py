"""The one training loop every method plugs into.

``Trainer`` owns what a method does not: devices and mixed precision (CUDA only), the step loop
over the method's training source (pairs, episodes or generated; :mod:`sbirkit.engine.sources`),
named optimisers with their schedules and gradient scalers (:mod:`sbirkit.engine.optim`),
gradient clipping, validation-only model selection (``best.pt``) through the one evaluator,
logging (``metrics.jsonl``, a tqdm bar, optional TensorBoard), atomic checkpoints (``last.pt``)
and a lock on the run folder. A run folder with a ``last.pt`` is resumed where it stopped, with
the same batches, optimiser states and RNG state, so it ends with the weights of an
uninterrupted run. Everything that can be checked is checked before the first step
(:meth:`Trainer.check`, ``sbirkit train --dry-run``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from . import distributed, inference
from .checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from .config import changed_keys, merge, read_config, resolve, save_config
from .context import SetupContext, StepContext
from .evaluator import Evaluator
from .optim import NamedOptimizer, build_optimizer, check_optimizer_name
from .options import DataOptions, defaults, options, resolve_backbone_bn
from .preset_runs import preset_runner
from .protocols import StandardProtocol, create_protocol
from .run_lock import run_lock
from .runlog import MetricsLog, now_iso, run_metadata
from .runtime import autocast_dtype, deterministic, resolve_device, seed_everything
from .sources import step_loader, to_device


def default_run_dir(config: Mapping[str, Any]) -> Path:
    return Path(config.get("run_dir") or Path("runs") / (config.get("name") or "run"))


class Trainer:
    """Trains ``config["method"]`` into ``run_dir`` (see the module docstring).

    Construction checks the config: every value (:mod:`sbirkit.engine.options`), the method, its
    options, the dataset format, the backbone and optimiser names and the device, each a one-line
    :class:`~sbirkit.errors.ConfigError`. :meth:`check` builds everything else without training.
    """

    def __init__(self, config: Mapping[str, Any], run_dir: str | os.PathLike | None = None):
        config = resolve(config)
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
        config["run_dir"] = str(self.run_dir)
        self.config = config
        self.t = config["train"]
        self.data_opts, self.train_opts, self.eval_opts = options(config)
        backbone_bn, self.backbone_bn_notice = resolve_backbone_bn(config["train"], config["model"])
        self.train_opts = dataclasses.replace(self.train_opts, backbone_bn=backbone_bn)
        self.device = resolve_device(self.train_opts.device)
        self.dist = distributed.from_environment(self.device.type)  # torchrun: this process's rank
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp_dtype = autocast_dtype(self.device, self.train_opts.amp)
        self.resuming = False
        self.summary: dict[str, Any] = {}
        self._check_names()

    @property
    def class_split(self):
        """The zero-shot class split training used (None without ``data.zero_shot``)."""
        return getattr(self.protocol, "class_split", None)

    @property
    def val_classes(self) -> tuple[str, ...]:
        """The seen classes held out for model selection (``data.zero_shot_val_classes``)."""
        return tuple(getattr(self.protocol, "val_classes", ()))

    # the single-optimiser, pair-batch view older code and tests read
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first (for most methods the only) optimiser."""
        return next(iter(self.optimizers.values())).optimizer

    @property
    def sampler(self):
        """The training source's sampler (pair and episode sources)."""
        return self.source.sampler

    @property
    def pairs(self):
        """The training source's items (images, or cached features) of pair and episode sources."""
        return self.source.items

    def _check_names(self) -> None:
        """Registry names and method options, before anything is built."""
        from ..data import list_datasets
        from ..methods import method_class
        from ..models.backbones import check_backbone_name

        cfg = self.config
        cls = method_class(cfg["method"]["name"])
        try:
            cls.parse_options(cfg["method"])
        except TypeError as exc:
            raise ConfigError(f"method: options of {cfg['method']['name']!r}: {exc}") from None
        name = self.data_opts.name
        if name is not None and name not in list_datasets():
            raise ConfigError(f"data.name: unknown dataset format {name!r}; known: {', '.join(list_datasets())}")
        for key in ("backbone", "photo_backbone"):
            value = cfg["model"].get(key)
            if value is not None:
                try:
                    check_backbone_name(value)
                except KeyError as exc:
                    raise ConfigError(f"model.{key}: {exc}") from None
        check_optimizer_name(self.train_opts.optimizer)
        from ..data.augment import Augment

        Augment.from_config(self.data_opts.augment)  # a bad op is a one-line error now, not at the first batch

    # ---- building (no file is written except the feature cache) ---------------------------------
    def _build(self, dry_run: bool = False) -> None:
        from ..data.image_cache import cached_images
        from ..methods import method_class

        cfg, t = self.config, self.train_opts
        self.protocol = create_protocol(cfg["data"], cfg["seed"])
        dataset, self.protocol_record = None, None
        if self.data_opts.name is not None:
            dataset = inference.build_dataset(cfg["data"])
            # under data.zero_shot: seen classes only (engine/zero_shot.py)
            dataset, self.protocol_record = self.protocol.training_view(dataset, cfg["seed"])
            if self.data_opts.cache_images:
                dataset = cached_images(dataset)
        self.dataset = dataset
        try:
            self.method = method_class(cfg["method"]["name"]).from_config(cfg)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"method {cfg['method']['name']!r}: {' '.join(str(exc).split())}") from None
        self.ctx = SetupContext(cfg, self.data_opts, t, self.eval_opts, dataset, self.device, self.run_dir,
                                int(cfg["seed"]), self.resuming, dry_run, run_loader=inference.load_run,
                                preset_runner=preset_runner(train))
        self.method.setup(self.ctx)
        self.init_record = None
        if not self.resuming:  # a resumed run has every weight in last.pt
            from .init_from import init_from_source

            self.init_record = init_from_source(self.method, cfg, t, self.ctx.preset_run)
        self.method.to(self.device)
        if self.dist.enabled:  # BatchNorm statistics of the global batch, as one process would have
            distributed.synchronise_batchnorm(self.method, self.device.type)
        if t.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if t.compile and not dry_run:
            for branch in self.method.encoder.branches():
                branch.compile()  # in place: the state dict keeps its keys, checkpoints stay loadable
        self.source = self.method.train_source(self.ctx)
        self.features = None
        if t.cached_features:  # frozen backbones: train on their features, extracted once
            from . import feature_cache

            try:
                self.features = feature_cache.store_for(cfg, self.run_dir, self.device, t.progress)
                # refuses what the cache cannot serve (attention on pooled features) before any extraction
                self.method.encoder.freeze_backbones(self.features.stage)
            except ValueError as exc:
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(str(exc)) from None
        self._plan_validation()  # checks eval.select before any extraction
        if self.features is not None and not dry_run:
            # torchrun: rank 0 extracts and writes the cache; the others read it once it is there
            if self.dist.is_main:
                self.source = self.source.with_features(self.features, self.method.encoder, t.cache_views)
                if self.dist.enabled:
                    self._extract_validation_features()
            self.dist.barrier()
            if not self.dist.is_main:
                self.source = self.source.with_features(self.features, self.method.encoder, t.cache_views)
        if self.dist.enabled and not dry_run:
            from .sources import ShardedSource

            self.source = ShardedSource(self.source, self.dist.rank, self.dist.world_size)
        self.head_init = None
        if not dry_run and not self.resuming:  # a resumed run loads its heads from last.pt
            self.head_init = self.method.init_heads(t.head_init, self._training_features)
        elif t.head_init != "default":
            from .head_init import check_linear_heads

            check_linear_heads(self.method.encoder)
        specs = self.method.configure_optimizers(t)  # {}: nothing to train (validated, checkpointed, evaluated)
        if not specs and any(p.requires_grad for p in self.method.parameters()):
            raise ConfigError(f"method {cfg['method']['name']!r}: configure_optimizers returned no optimiser, but "
                              "the method has trainable parameters")
        fp16 = self.amp_dtype == torch.float16
        self.optimizers: dict[str, NamedOptimizer] = {
            name: build_optimizer(name, spec, t, self.device, fp16) for name, spec in specs.items()}
        self.step = 0
        self.best: dict[str, Any] = {"metric": self.eval_opts.select, "value": None, "step": None}

    def _plan_validation(self) -> None:
        """Where model selection gets its numbers: ``eval.data`` if given, else the training data's
        ``data.val_split``, else the method's own :meth:`~sbirkit.methods.base.Method.validation_metrics`;
        ``eval.select`` is checked against what that source will produce."""
        ev, cfg = self.eval_opts, self.config
        self.val_evaluator, self.val_split, self.val_protocol, self.val_kind = None, None, None, None
        store = self.features
        if ev.data is not None:
            section = merge(defaults(DataOptions), ev.data)
            dataset = inference.build_dataset(section)
            self.val_split = section["val_split"] or "val"
            self.val_protocol = StandardProtocol(section, cfg["seed"])
            if store is not None:
                from . import feature_cache

                store = feature_cache.FeatureStore(store.root, section, store.batch_size, store.device, store.progress,
                                                   store.stage, store.augment)
            where = f"eval.data ({section['name']}) split {self.val_split!r}"
        elif self.dataset is not None and self.data_opts.val_split is not None:
            dataset, self.val_split, self.val_protocol = self.dataset, self.data_opts.val_split, self.protocol
            where = f"data.val_split {self.val_split!r}"
        else:
            dataset = None
        own = self.method.validation_protocol(self.ctx)
        if own is not None and dataset is not None:
            self.val_protocol = own
        if dataset is not None:
            sketches, photos = dataset.sketches(self.val_split), dataset.photos(self.val_split)
            if sketches and photos:
                self.val_evaluator = Evaluator(self.method.encoder, dataset, batch_size=ev.batch_size,
                                               device=self.device, features=store, dist=self.dist)
                self.val_kind = "data"
                fine = any(s.instance_id is not None for s in sketches) and \
                    any(p.instance_id is not None for p in photos)
                names = self.val_protocol.metric_names(ev.directions, fine)
                if ev.select not in names:
                    raise ConfigError(f"eval.select: {ev.select!r} is not among the validation metrics of "
                                      f"{where} ({', '.join(names)})")
                return
            self.val_message = (f"{where} has {len(sketches)} sketches and {len(photos)} photos: no model "
                                "selection, best.pt will be the final model (set data.val_fraction to hold out "
                                "training instances)")
        else:
            why = "no dataset and no eval.data" if self.dataset is None else "data.val_split is null and no eval.data"
            self.val_message = (f"no validation data ({why}): no model selection, best.pt will be the final model")
        if _overrides(self.method, "validation_metrics"):
            self.val_kind = "method"
            names = self.method.validation_metric_names()
            if names is not None and ev.select not in names:
                raise ConfigError(f"eval.select: {ev.select!r} is not among the validation metrics of method "
                                  f"{cfg['method']['name']!r} ({', '.join(names)})")

    def _extract_validation_features(self) -> None:
        """Fill the cache with the validation samples' features now (rank 0, before the others
        read), so validation under torchrun never writes to the cache from several processes."""
        if self.val_evaluator is None or self.val_evaluator.features is None:
            return
        store, dataset = self.val_evaluator.features, self.val_evaluator.dataset
        for samples in self.val_evaluator.split(self.val_split):
            if samples:
                store.features(self.method.encoder.branch(samples[0].modality), dataset, samples)

    def _training_features(self, modality: str) -> np.ndarray:
        """Backbone features of the source's training samples of one modality (for head_init)."""
        from .feature_cache import extract_features

        cached = self.source.cached_features(modality) if hasattr(self.source, "cached_features") else None
        if cached is not None and self.features is not None and self.features.stage is not None:
            branch = self.method.encoder.branch(modality)  # maps: pooled through the trainable stages as built
            was = branch.training
            branch.eval()
            with torch.no_grad():
                pooled = [branch.features_from(torch.from_numpy(np.array(cached[i:i + 64], dtype=np.float32))
                                               .to(self.device), self.features.stage).float().cpu().numpy()
                          for i in range(0, len(cached), 64)]
            branch.train(was)
            return np.concatenate(pooled)
        if cached is not None:
            return cached
        return extract_features(self.method.encoder.branch(modality), self.dataset, self.source.samples(modality),
                                self.eval_opts.batch_size, self.device, self.train_opts.progress)

    def check(self) -> dict[str, Any]:
        """Build the dataset, method, source, optimisers and validation plan without training or
        writing anything (``sbirkit train --dry-run``); returns what was found."""
        seed_everything(self.config["seed"])
        self._build(dry_run=True)
        return {"config": self.config, "run_dir": str(self.run_dir), "device": str(self.device),
                "resumes": (self.run_dir / "last.pt").is_file(), "source": self.source.describe(),
                "optimizers": {n: type(o.optimizer).__name__ for n, o in self.optimizers.items()},
                "validation": self.val_kind and (f"{self.val_kind}: {self.val_split}" if self.val_kind == "data"
                                                 else "the method's own validation_metrics"),
                "parameters": sum(p.numel() for p in self.method.parameters() if p.requires_grad)}

    # ---- run folder ------------------------------------------------------------------------------
    def _check_resume(self) -> bool:
        resuming = (self.run_dir / "last.pt").is_file()
        cfg_path = self.run_dir / "config.yaml"
        if resuming and cfg_path.is_file():
            diff = changed_keys(read_config(cfg_path), self.config)
            if diff:
                raise ConfigError(f"{cfg_path}: cannot resume with a changed config ({', '.join(diff)}); "
                                  "use another run_dir or the saved config")
        return resuming

    def _write_run_files(self) -> None:
        """config.yaml and meta.json (a resumed run keeps its meta.json and notes the resume)."""
        if not self.dist.is_main:
            return
        cfg_path, meta_path = self.run_dir / "config.yaml", self.run_dir / "meta.json"
        save_config(self.config, cfg_path)
        meta = json.loads(meta_path.read_text()) if self.resuming and meta_path.is_file() else \
            run_metadata(self.config["seed"], str(self.device))
        if self.protocol_record is not None:
            meta["zero_shot"] = self.protocol_record
        if self.head_init is not None:
            meta["head_init"] = self.head_init
        if self.features is not None:
            meta["feature_cache"] = {"root": str(self.features.root), "extracted_for_training": self.features.extracted}
        meta["source"] = self.source.describe()
        meta["optimizers"] = sorted(self.optimizers)
        meta["validation"] = self.val_kind
        meta["backbone_bn"] = self.train_opts.backbone_bn
        if self.init_record is not None:
            meta["init_from"] = self.init_record
        meta["world_size"] = self.dist.world_size
        meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")

    def _update_meta(self, **fields: Any) -> None:
        if not self.dist.is_main:
            return
        meta_path = self.run_dir / "meta.json"
        meta = json.loads(meta_path.read_text())
        for key, value in fields.items():
            if key == "resumed":
                meta.setdefault("resumed", []).append(value)
            else:
                meta[key] = value
        meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")

    # ---- checkpoints -----------------------------------------------------------------------------
    def _resume(self) -> None:
        ckpt = load_checkpoint(self.run_dir / "last.pt", map_location=self.device)
        path = self.run_dir / "last.pt"
        self.method.load_state_dict(ckpt["model"])
        states = {k: ckpt[k] for k in ("optimizer", "scheduler", "scaler")}
        if not self.optimizers:  # nothing trains (a run saved by a version that stepped a dummy at lr 0)
            states = {k: {} for k in states}
        elif "param_groups" in states["optimizer"]:  # written before optimisers had names: one, "main"
            states = {k: {next(iter(self.optimizers)): v} for k, v in states.items()}
        if set(states["optimizer"]) != set(self.optimizers):
            raise CheckpointError(f"{path}: optimizers: expected {sorted(self.optimizers)}, the checkpoint has "
                                  f"{sorted(states['optimizer'])}")
        for name, opt in self.optimizers.items():
            opt.optimizer.load_state_dict(states["optimizer"][name])
            opt.scheduler.load_state_dict(states["scheduler"][name])
            opt.scaler.load_state_dict(states["scaler"][name])
        saved_world = int(ckpt.get("world_size", 1))
        if saved_world != self.dist.world_size:
            raise CheckpointError(f"{path}: world_size: this run was trained by {saved_world} process(es); resume it "
                                  f"with {saved_world} (torchrun --nproc_per_node), not {self.dist.world_size}")
        self.step = int(ckpt["step"])
        self.best = dict(ckpt["best"])
        set_rng_state(ckpt["rng"])

    def _save_last(self) -> None:
        if not self.dist.is_main:
            return
        atomic_save({
            "model": self.method.state_dict(),
            "optimizer": {n: o.optimizer.state_dict() for n, o in self.optimizers.items()},
            "scheduler": {n: o.scheduler.state_dict() for n, o in self.optimizers.items()},
            "scaler": {n: o.scaler.state_dict() for n, o in self.optimizers.items()},
            "step": self.step,
            "rng": rng_state(),
            "best": dict(self.best),
            "method": self.config["method"]["name"],
            "world_size": self.dist.world_size,
        }, self.run_dir / "last.pt")

    def _save_best(self, selection: str) -> None:
        if not self.dist.is_main:
            return
        atomic_save({"model": self.method.state_dict(), "step": self.step, "metric": self.best["metric"],
                     "value": self.best["value"], "selection": selection,
                     "method": self.config["method"]["name"]}, self.run_dir / "best.pt")

    # ---- validation ------------------------------------------------------------------------------
    def validation_samples(self):
        """(sketches, photos) of the validation data: the only data model selection sees."""
        if self.val_evaluator is None:
            return [], []
        return self.val_evaluator.split(self.val_split)

    def _validate(self, log: MetricsLog) -> None:
        ev = self.eval_opts
        if self.val_kind == "data":
            flat = self.val_protocol.validate(self.val_evaluator, self.val_split, ev)
            split = self.val_split
        elif self.val_kind == "method":
            flat = self.method.validation_metrics(self.ctx) or {}
            split = "method"
            self.method.train_mode(self.train_opts)
        else:
            return
        if not flat:
            return
        log.write({"step": self.step, "split": split, **flat})
        key = ev.select
        if key not in flat:
            raise ConfigError(f"eval.select: {key!r} is not among the validation metrics ({', '.join(flat)})")
        value = flat[key]
        if value is not None and math.isfinite(value) and (self.best["value"] is None or value > self.best["value"]):
            self.best.update(value=float(value), step=self.step)
            self._save_best(f"max {key} on split {split!r}" if split != "method" else
                            f"max {key} of the method's own validation")

    # ---- the loop --------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train to ``train.steps`` (resuming from ``last.pt`` if present); returns the run folder."""
        from tqdm.auto import tqdm

        started = time.perf_counter()
        created = not self.run_dir.exists() and self.dist.is_main
        lock = run_lock(self.run_dir) if self.dist.is_main else contextlib.nullcontext()
        with lock, deterministic(self.train_opts.deterministic):
            try:
                self.resuming = self._check_resume()
                self.dist.barrier()  # every rank has read the old config before rank 0 rewrites it
                seed_everything(self.config["seed"])
                self._build()
            except BaseException:
                if created:  # nothing of this run was written: leave no empty folder behind
                    _remove_if_only_lock(self.run_dir)
                raise
            self._write_run_files()
            log = MetricsLog(self.run_dir / "metrics.jsonl",
                             self.run_dir / "tensorboard" if self.train_opts.tensorboard else None) \
                if self.dist.is_main else _NoLog()
            try:
                if self.resuming:
                    self._resume()
                    log.truncate_after(self.step)
                    self._update_meta(resumed={"at": now_iso(), "step": self.step})
                    log.write({"step": self.step, "event": "resume"})
                else:
                    log.truncate_after(0)
                if self.val_kind is None:
                    warnings.warn(self.val_message, stacklevel=2)
                if self.backbone_bn_notice and not self.resuming:
                    log.write({"step": self.step, "event": "notice", "message": self.backbone_bn_notice})
                    if self.train_opts.progress:
                        print(f"notice: {self.backbone_bn_notice}", file=sys.stderr)
                self._train(log, tqdm)
                if self.dist.is_main and not (self.run_dir / "best.pt").is_file():  # no validation result
                    self._save_best("final step (no validation result)")
                self.dist.barrier()  # every rank done before any returns (and reads what rank 0 wrote)
            finally:
                log.close()
            seconds = round(time.perf_counter() - started, 1)
            self.summary = {"steps": self.step, "seconds": seconds, "select": self.best["metric"],
                            "best_value": self.best["value"], "best_step": self.best["step"],
                            "run_dir": str(self.run_dir)}
            self._update_meta(finished=now_iso(), last_fit_seconds=seconds)
        return self.run_dir

    def _train(self, log: MetricsLog, tqdm) -> None:
        t, total = self.train_opts, self.train_opts.steps
        loader = step_loader(self.source, self.step, total - self.step, num_workers=t.num_workers,
                             pin_memory=self.device.type == "cuda", seed=self.config["seed"])
        manual = bool(self.method.manual_optimization)
        trainable = [p for p in self.method.parameters() if p.requires_grad]
        clip_params = {}
        for name, opt in self.optimizers.items():  # in module order, as one optimiser always had
            mine = {id(p) for p in opt.parameters()}
            clip_params[name] = [p for p in trainable if id(p) in mine]
        first = next(iter(self.optimizers.values()), None)  # None: a method with nothing to train
        bar = tqdm(total=total, initial=self.step, desc=f"train {self.run_dir.name}", unit="step",
                   disable=not t.progress or not self.dist.is_main, dynamic_ncols=True)
        sums: dict[str, Any] = {}
        window_steps, window_start = 0, time.perf_counter()
        if t.validate_at_start and self.step == 0:  # the starting point is a candidate for best.pt too
            self._validate(log)
        self.method.train_mode(t)
        for batch in loader:
            batch = to_device(batch, self.device, non_blocking=True, channels_last=t.channels_last)
            ctx = StepContext(self.step, self.device, self.optimizers, self.config["seed"], self.amp_dtype, self.dist)
            with ctx.autocast():
                out = self.method.training_step(batch, ctx)
            if not manual and first is not None:
                if "loss" not in out:
                    raise ConfigError(f"method {self.config['method']['name']!r}: training_step returned no 'loss' "
                                      f"(got {', '.join(out)}); set manual_optimization to step by itself")
                scaler = first.scaler
                for opt in self.optimizers.values():
                    opt.optimizer.zero_grad(set_to_none=True)
                scaler.scale(out["loss"]).backward()
                if self.dist.enabled:  # the one-process gradient of the global batch (engine/distributed.py)
                    distributed.average_gradients(trainable, self.dist)
                for name, opt in self.optimizers.items():
                    if opt.grad_clip > 0:
                        scaler.unscale_(opt.optimizer)
                        torch.nn.utils.clip_grad_norm_(clip_params[name], opt.grad_clip)
                    scaler.step(opt.optimizer)
                scaler.update()
            lrs = self._learning_rates()
            for opt in self.optimizers.values():
                opt.scheduler.step()
            self.step += 1
            window_steps += 1
            for k, v in out.items():  # summed on the device: no host sync per step
                sums[k] = sums.get(k, 0.0) + (v.detach().float() if isinstance(v, torch.Tensor) else float(v))
            if self.step % t.log_every == 0 or self.step == total:
                record = distributed.mean_over_ranks({k: float(v) / window_steps for k, v in sums.items()}, self.dist)
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                rate = window_steps * t.batch_size / elapsed
                losses = [k for k in record if k == "loss" or k.startswith("loss")]
                bad = [k for k in losses if not math.isfinite(record[k])]
                if bad:
                    raise FloatingPointError(f"steps {self.step - window_steps + 1}-{self.step}: {bad[0]} is "
                                             f"{record[bad[0]]}; lower train.lr or set train.grad_clip")
                log.write({"step": self.step, **record, **lrs, "samples_per_s": round(rate, 2)})
                shown = record.get("loss", record[losses[0]] if losses else float("nan"))
                bar.set_postfix(loss=f"{shown:.4f}", samples_s=f"{rate:.0f}")
                sums, window_steps, window_start = {}, 0, time.perf_counter()
            bar.update(1)
            paused = time.perf_counter()
            if self.step == total or (t.eval_every and self.step % t.eval_every == 0):
                self._validate(log)
                self.method.train_mode(t)
            if self.step == total or self.step % t.checkpoint_every == 0:
                self._save_last()
            window_start += time.perf_counter() - paused  # throughput counts training time only
        bar.close()

    def _learning_rates(self) -> dict[str, float]:
        """``lr`` (the first optimiser's first group), ``backbone_lr`` (its second group, when the
        backbones have their own) and ``lr/<name>`` for any other optimiser."""
        out: dict[str, float] = {}
        for i, (name, opt) in enumerate(self.optimizers.items()):
            groups = opt.optimizer.param_groups
            if i == 0:
                out["lr"] = groups[0]["lr"]
                if len(groups) > 1:
                    out["backbone_lr"] = groups[1]["lr"]
            else:
                out[f"lr/{name}"] = groups[0]["lr"]
        return out


class _NoLog:
    """What ranks other than 0 log to: nothing."""

    def write(self, record: Mapping[str, Any]) -> None:
        pass

    def truncate_after(self, step: int) -> int:
        return 0

    def close(self) -> None:
        pass


def _remove_if_only_lock(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but the lock file."""
    import shutil

    left = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if left <= {".lock"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def _overrides(method: torch.nn.Module, hook: str) -> bool:
    """Whether ``method``'s class overrides the base :class:`~sbirkit.methods.base.Method` hook."""
    from ..methods.base import Method

    return getattr(type(method), hook) is not getattr(Method, hook)


def train(config: Mapping[str, Any], run_dir: str | os.PathLike | None = None) -> Path:
    """Train (or resume) the run ``config`` describes; returns the run folder.

    ``run_dir`` defaults to ``config["run_dir"]``, else ``runs/<config name>``. A folder that
    already holds ``last.pt`` is resumed; its saved config must match (see ``RESUME_MUTABLE``).
    """
    return Trainer(config, run_dir).fit()
