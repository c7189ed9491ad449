"""The one training loop every method plugs into.

``Trainer`` owns what a method does not: data order (a resumable
:class:`~sbirkit.data.samplers.PairBatchSampler`), the optimiser and LR schedule, mixed
precision (CUDA only), gradient clipping, validation-only model selection (``best.pt``),
logging (``metrics.jsonl``, a tqdm bar, optional TensorBoard) and atomic checkpoints
(``last.pt``). A run folder with a ``last.pt`` is resumed where it stopped, with the same
batches, optimiser state and RNG state, so it ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.samplers import PairBatchSampler, PairDataset
from . import feature_cache, head_init, inference, zero_shot
from .checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from .config import ConfigError, changed_keys, read_config, resolve, save_config
from .image_cache import cached_images
from .runlog import MetricsLog, now_iso, run_metadata
from .schedule import WarmupCosine


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {spec!r} requested but CUDA is not available")
    return device


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """bf16/fp16 autocast on CUDA; always None (full precision) on CPU."""
    if amp not in ("auto", "bf16", "fp16", "none"):
        raise ConfigError(f"train.amp: expected auto, bf16, fp16 or none, got {amp!r}")
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def default_run_dir(config: Mapping[str, Any]) -> Path:
    return Path(config.get("run_dir") or Path("runs") / (config.get("name") or "run"))


class Trainer:
    """Trains ``config["method"]`` on ``config["data"]`` into ``run_dir`` (see the module docstring)."""

    def __init__(self, config: Mapping[str, Any], run_dir: str | os.PathLike | None = None):
        config = resolve(config)
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
        config["run_dir"] = str(self.run_dir)
        self.config = config
        self.t = config["train"]
        self.device = resolve_device(self.t["device"])
        self.resuming = False
        self.amp_dtype = autocast_dtype(self.device, self.t["amp"])
        for key in ("steps", "batch_size", "log_every", "checkpoint_every", "eval_every"):
            if not isinstance(self.t[key], int) or self.t[key] < (0 if key == "eval_every" else 1):
                raise ConfigError(f"train.{key}: expected a positive integer, got {self.t[key]!r}")
        # checked here, before the dataset is built or any feature is extracted
        if self.t["head_init"] not in head_init.HEAD_INITS:
            raise ConfigError(f"train.head_init: expected one of {head_init.HEAD_INITS}, got {self.t['head_init']!r}")
        if self.t["backbone_bn"] not in ("train", "frozen"):
            raise ConfigError(f"train.backbone_bn: expected 'train' or 'frozen', got {self.t['backbone_bn']!r}")
        lr = self.t["backbone_lr"]
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr < 0):
            raise ConfigError(f"train.backbone_lr: expected null or a number >= 0, got {lr!r}")

    # ---- setup ---------------------------------------------------------------------------------
    def _prepare_run_dir(self) -> bool:
        """Create the folder, check a resumed run's config, write config.yaml and meta.json."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resuming = (self.run_dir / "last.pt").is_file()
        cfg_path, meta_path = self.run_dir / "config.yaml", self.run_dir / "meta.json"
        if resuming and cfg_path.is_file():
            diff = changed_keys(read_config(cfg_path), self.config)
            if diff:
                raise ConfigError(f"{cfg_path}: cannot resume with a changed config ({', '.join(diff)}); "
                                  "use another run_dir or the saved config")
        save_config(self.config, cfg_path)
        meta = json.loads(meta_path.read_text()) if resuming and meta_path.is_file() else \
            run_metadata(self.config["seed"], str(self.device))
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        return resuming

    def _build(self) -> None:
        from ..methods import create_method

        cfg, t = self.config, self.t
        self.dataset = inference.build_dataset(cfg["data"])
        # under data.zero_shot: seen classes only (engine/zero_shot.py)
        self.dataset, self.class_split, self.val_classes = zero_shot.training_view(self.dataset, cfg["data"],
                                                                                   cfg["seed"])
        if cfg["data"]["cache_images"]:
            self.dataset = cached_images(self.dataset)
        self.method = create_method(cfg["method"]["name"], cfg)
        self.method.setup(self.dataset, cfg["data"]["train_split"])
        self.method.to(self.device)
        spec = self.method.sampler_spec()
        if spec.kind != "pairs":
            raise ConfigError(f"method {cfg['method']['name']!r} asks for {spec.kind!r} batches; "
                              "this trainer provides 'pairs' only")
        self.sampler = PairBatchSampler(self.dataset, cfg["data"]["train_split"], t["batch_size"], spec.mode,
                                        spec.classes_per_batch, seed=cfg["seed"])
        self.features = None
        if t["cached_features"]:  # frozen backbones: train on their features, extracted once
            self.features = feature_cache.store_for(cfg, self.run_dir, self.device, t["progress"])
            self.pairs = feature_cache.training_pairs(self.method.encoder, self.sampler, self.features)
        else:
            self.pairs = PairDataset.for_sampler(self.sampler)
        self.head_init = None
        if not self.resuming:  # a resumed run loads its heads from last.pt
            self.head_init = head_init.init_heads(t["head_init"], self.method.encoder, self._training_features)
        params = self._param_groups()
        if t["optimizer"] == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=t["lr"], weight_decay=t["weight_decay"])
        elif t["optimizer"] == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=t["lr"], momentum=t["momentum"],
                                             weight_decay=t["weight_decay"])
        else:
            raise ConfigError(f"train.optimizer: expected 'adamw' or 'sgd', got {t['optimizer']!r}")
        if t["schedule"] not in ("cosine", "constant"):
            raise ConfigError(f"train.schedule: expected 'cosine' or 'constant', got {t['schedule']!r}")
        lam = WarmupCosine(t["steps"], t["warmup_steps"], t["min_lr_ratio"], cosine=t["schedule"] == "cosine")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lam)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.best: dict[str, Any] = {"metric": cfg["eval"]["select"], "value": None, "step": None}

    def _param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters; with ``train.backbone_lr`` set, the backbones' in a group of their own
        at that learning rate (the schedule scales both groups alike)."""
        trainable = [p for p in self.method.parameters() if p.requires_grad]
        backbone_lr = self.t["backbone_lr"]
        if backbone_lr is None:
            return [{"params": trainable}]
        in_backbone = {id(p) for branch in feature_cache.encoder_branches(self.method.encoder)
                       for p in branch.backbone.parameters()}
        groups = [{"params": [p for p in trainable if id(p) not in in_backbone]}]
        backbone = [p for p in trainable if id(p) in in_backbone]
        if backbone:  # none with cached features: the backbones are frozen
            groups.append({"params": backbone, "lr": float(backbone_lr)})
        return groups

    def _training_features(self, modality: str) -> np.ndarray:
        """Backbone features of the sampler's training samples of one modality (for head_init)."""
        if self.features is not None:
            return self.pairs.features_of(modality)
        samples = self.sampler.sketches if modality == "sketch" else self.sampler.photos
        return feature_cache.extract_features(self.method.encoder.branch(modality), self.dataset, samples,
                                              int(self.config["eval"]["batch_size"]), self.device, self.t["progress"])

    def _resume(self) -> None:
        ckpt = load_checkpoint(self.run_dir / "last.pt", map_location=self.device)
        self.method.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.best = dict(ckpt["best"])
        set_rng_state(ckpt["rng"])

    # ---- checkpoints ---------------------------------------------------------------------------
    def _save_last(self) -> None:
        atomic_save({
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "rng": rng_state(),
            "best": dict(self.best),
            "method": self.config["method"]["name"],
        }, self.run_dir / "last.pt")

    def _save_best(self, selection: str) -> None:
        atomic_save({"model": self.method.state_dict(), "step": self.step, "metric": self.best["metric"],
                     "value": self.best["value"], "selection": selection,
                     "method": self.config["method"]["name"]}, self.run_dir / "best.pt")

    # ---- validation ----------------------------------------------------------------------------
    def validation_samples(self):
        """(sketches, photos) of the validation split: the only data model selection sees."""
        split = self.config["data"]["val_split"]
        if split is None:
            return [], []
        return self.dataset.sketches(split), self.dataset.photos(split)

    def _validate(self, log: MetricsLog) -> None:
        sketches, photos = self.validation_samples()
        if not sketches or not photos:
            return
        from ..eval import evaluate_directions

        ev, enc = self.config["eval"], self.method.encoder
        if self.features is not None:
            embed = self.features.embedder(enc, self.dataset)
        else:
            def embed(samples):
                return inference.embed_samples(enc, self.dataset, samples, ev["batch_size"], self.device)
        s_emb, s_lab, s_inst = embed(sketches)
        p_emb, p_lab, p_inst = embed(photos)
        fine = any(i is not None for i in s_inst) and any(i is not None for i in p_inst)
        results = evaluate_directions(s_emb, s_lab, p_emb, p_lab, directions=ev["directions"],
                                      sketch_instances=s_inst if fine else None,
                                      photo_instances=p_inst if fine else None, distance=ev["distance"])
        flat = {f"{d}/{k}": v for d, r in results.items() for k, v in r.metrics.items()}
        log.write({"step": self.step, "split": self.config["data"]["val_split"], **flat})
        key = ev["select"]
        if key not in flat:
            raise ConfigError(f"eval.select: {key!r} is not among the validation metrics ({', '.join(flat)})")
        value = flat[key]
        if value is not None and math.isfinite(value) and (self.best["value"] is None or value > self.best["value"]):
            self.best.update(value=float(value), step=self.step)
            self._save_best(f"max {key} on split {self.config['data']['val_split']!r}")

    def _record_protocol(self) -> None:
        """Write the zero-shot classes and the feature-cache use into meta.json."""
        meta_path = self.run_dir / "meta.json"
        meta = json.loads(meta_path.read_text())
        if self.class_split is not None:
            meta["zero_shot"] = {"spec": self.config["data"]["zero_shot"], "name": self.class_split.name,
                                 "seen": list(self.class_split.seen), "unseen": list(self.class_split.unseen),
                                 "validation_classes": list(self.val_classes)}
        if self.head_init is not None:
            meta["head_init"] = self.head_init
        if self.features is not None:
            meta["feature_cache"] = {"root": str(self.features.root), "extracted_for_training": self.features.extracted}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train to ``train.steps`` (resuming from ``last.pt`` if present); returns the run folder."""
        from tqdm.auto import tqdm

        t = self.t
        resuming = self.resuming = self._prepare_run_dir()
        previous_det = torch.are_deterministic_algorithms_enabled()
        if t["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_everything(self.config["seed"])
        self._build()
        self._record_protocol()
        log = MetricsLog(self.run_dir / "metrics.jsonl",
                         self.run_dir / "tensorboard" if t["tensorboard"] else None)
        try:
            if resuming:
                self._resume()
                log.truncate_after(self.step)
                meta_path = self.run_dir / "meta.json"
                meta = json.loads(meta_path.read_text())
                meta.setdefault("resumed", []).append({"at": now_iso(), "step": self.step})
                meta_path.write_text(json.dumps(meta, indent=2) + "\n")
                log.write({"step": self.step, "event": "resume"})
            else:
                log.truncate_after(0)
            sketches, photos = self.validation_samples()
            if not sketches or not photos:
                warnings.warn(f"data.val_split {self.config['data']['val_split']!r} has {len(sketches)} sketches and "
                              f"{len(photos)} photos: no model selection, best.pt will be the final model "
                              "(set data.val_fraction to hold out training instances)", stacklevel=2)
            self._train(log, tqdm)
            if not (self.run_dir / "best.pt").is_file():  # no validation split or no finite value
                self._save_best("final step (no validation result)")
        finally:
            log.close()
            torch.use_deterministic_algorithms(previous_det)
        return self.run_dir

    def _train(self, log: MetricsLog, tqdm) -> None:
        t, total = self.t, self.t["steps"]
        loader = torch.utils.data.DataLoader(
            self.pairs, batch_sampler=self.sampler.steps(self.step, total - self.step),
            num_workers=t["num_workers"], pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.config["seed"]))  # keeps the global RNG untouched
        params = [p for p in self.method.parameters() if p.requires_grad]
        bar = tqdm(total=total, initial=self.step, desc=f"train {self.run_dir.name}", unit="step",
                   disable=not t["progress"], dynamic_ncols=True)
        sums: dict[str, Any] = {}
        window_steps, window_start = 0, time.perf_counter()
        self._train_mode()
        for batch in loader:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self._autocast(), self._inputs():
                out = self.method.training_step(batch)
            loss = out["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if t["grad_clip"] > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, t["grad_clip"])
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self.optimizer.param_groups[0]["lr"]
            lrs = {"backbone_lr": self.optimizer.param_groups[1]["lr"]} if len(self.optimizer.param_groups) > 1 else {}
            self.scheduler.step()
            self.step += 1
            window_steps += 1
            for k, v in out.items():  # summed on the device: no host sync per step
                sums[k] = sums.get(k, 0.0) + v.detach().float()
            if self.step % t["log_every"] == 0 or self.step == total:
                record = {k: float(v) / window_steps for k, v in sums.items()}
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                rate = window_steps * t["batch_size"] / elapsed
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"steps {self.step - window_steps + 1}-{self.step}: loss is "
                                             f"{record['loss']}; lower train.lr or set train.grad_clip")
                log.write({"step": self.step, **record, "lr": lr, **lrs, "samples_per_s": round(rate, 2)})
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{rate:.0f}")
                sums, window_steps, window_start = {}, 0, time.perf_counter()
            bar.update(1)
            paused = time.perf_counter()
            if self.step == total or (t["eval_every"] and self.step % t["eval_every"] == 0):
                self._validate(log)
                self._train_mode()
            if self.step == total or self.step % t["checkpoint_every"] == 0:
                self._save_last()
            window_start += time.perf_counter() - paused  # throughput counts training time only
        bar.close()

    def _train_mode(self) -> None:
        """``method.train()``; with ``train.backbone_bn: frozen`` the backbones' normalisation layers
        stay in eval mode (their running statistics are used and kept, not updated)."""
        self.method.train()
        if self.t["backbone_bn"] == "frozen":
            for branch in feature_cache.encoder_branches(self.method.encoder):
                for module in branch.backbone.modules():
                    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                        module.eval()

    def _inputs(self):
        """With cached features, batches hold features: the encoder branches skip their backbones."""
        if self.features is None:
            return contextlib.nullcontext()
        return feature_cache.features_as_inputs(self.method.encoder)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def train(config: Mapping[str, Any], run_dir: str | os.PathLike | None = None) -> Path:
    """Train (or resume) the run ``config`` describes; returns the run folder.

    ``run_dir`` defaults to ``config["run_dir"]``, else ``runs/<config name>``. A folder that
    already holds ``last.pt`` is resumed; its saved config must match (see ``RESUME_MUTABLE``).
    """
    return Trainer(config, run_dir).fit()
