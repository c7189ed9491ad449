"""Training throughput of the engine against a plain PyTorch loop over the same model and batches.

Both loops see the same batches, collated once before timing and served from memory, so the
difference is what the engine adds per step (moving the nested batch, the step context, summing
the logged losses, the LR readout and schedule, the progress bar, metrics.jsonl, checkpoints every
``--checkpoint-every`` steps). The plain loop is ``training_step -> zero_grad -> backward -> clip -> step -> schedule``
with the same AdamW optimiser, gradient clipping and cosine schedule. A third row times the engine reading its real data source
(decoding and collating every batch), i.e. what a user sees. Images/s counts sketches and photos.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_engine.py --steps 60
    .venv/bin/python benchmarks/bench_engine.py --device cuda --speed train.channels_last=true,train.amp=bf16
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from sbirkit.engine import Trainer, apply_overrides, load_preset
from sbirkit.engine.sources import TrainSource, step_loader

MODELS = {
    "tiny_cnn, 32 px": ["model.backbone=tiny_cnn", "model.pretrained=false",
                        "data.options={num_classes: 8, photos_per_class: 40, image_size: 32, seed: 0}"],
    "efficientnet_lite0, 64 px": ["model.backbone=efficientnet_lite0", "model.pretrained=true",
                                  "data.options={num_classes: 8, photos_per_class: 40, image_size: 64, seed: 0}"],
}


class MemorySource(TrainSource):
    """Pre-collated batches served in order (the timing excludes data loading)."""

    kind = "pairs"

    def __init__(self, batches):
        self._batches = batches

    def batches(self, start_step=0):
        step = int(start_step)
        while True:
            yield step % len(self._batches)
            step += 1

    def collate(self, plan, step=None):
        return self._batches[plan]


def config(extra, steps, checkpoint_every, device="cpu", speed=()):
    return apply_overrides(load_preset("triplet_sn-synthetic"), [
        *extra, "model.shared=true", "model.embed_dim=64", "method.classes_per_batch=null",
        "data.cache_images=true", "data.val_split=null", "train.batch_size=32", f"train.steps={steps}",
        "train.log_every=10", f"train.checkpoint_every={checkpoint_every}", "train.warmup_steps=0",
        "train.progress=true", "train.backbone_bn=frozen", f"train.device={device}", *speed])


def plain_loop(trainer, batches, steps):
    method = trainer.method
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=trainer.train_opts.lr,
                            weight_decay=trainer.train_opts.weight_decay)
    # the same work per step as the engine's: clipping at train.grad_clip and a cosine schedule
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    params, clip = [p for p in method.parameters() if p.requires_grad], trainer.train_opts.grad_clip
    method.train_mode(trainer.train_opts)
    start = time.perf_counter()
    for i in range(steps):
        out = method.training_step(batches[i % len(batches)])
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
    return time.perf_counter() - start


def engine_loop(cfg, run_dir, batches, steps):
    trainer = Trainer(cfg, run_dir)
    build = trainer._build

    def build_from_memory(*args, **kwargs):
        build(*args, **kwargs)
        trainer.source = MemorySource(batches)

    trainer._build = build_from_memory
    trainer.fit()
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    backbones = [name.split(",")[0] for name in MODELS]
    parser.add_argument("--models", default=",".join(backbones), help="comma-separated subset of: " + ", ".join(backbones))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU path: run where one is lent)")
    parser.add_argument("--speed", default="", help="comma-separated train.* overrides, e.g. "
                        "train.channels_last=true,train.amp=bf16,train.compile=true,train.num_workers=4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    speed = [o for o in args.speed.split(",") if o]
    rows = []
    unknown = [m for m in args.models.split(",") if m not in backbones]
    if unknown:
        parser.error(f"--models: unknown {unknown}; expected some of {backbones}")
    for name, extra in MODELS.items():
        if name.split(",")[0] not in args.models.split(","):
            continue
        cfg = config(extra, args.steps, args.checkpoint_every, args.device, speed)
        with tempfile.TemporaryDirectory() as tmp:
            probe = Trainer(cfg, Path(tmp) / "probe")
            torch.manual_seed(0)
            probe._build()
            loader = step_loader(probe.source, 0, min(args.steps, 20))
            batches = [batch for batch in loader]
            plain = plain_loop(probe, batches, args.steps)
            # the engine's own time: the fit minus the build (timed separately with the same build)
            t0 = time.perf_counter()
            engine_loop(cfg, Path(tmp) / "engine", batches, args.steps)
            engine_total = time.perf_counter() - t0
            t0 = time.perf_counter()
            Trainer(cfg, Path(tmp) / "build_only")._build()
            build = time.perf_counter() - t0
            engine = engine_total - build
            t0 = time.perf_counter()
            Trainer(cfg, Path(tmp) / "real").fit()
            real = time.perf_counter() - t0 - build
        images = 2 * 32 * args.steps
        rows.append({"model": name, "plain_images_s": images / plain, "engine_images_s": images / engine,
                     "overhead": engine / plain - 1, "engine_real_data_images_s": images / real,
                     "steps": args.steps, "overhead_ms_per_step": 1000 * (engine - plain) / args.steps})
        r = rows[-1]
        print(f"{name}: plain {r['plain_images_s']:.0f} img/s, engine {r['engine_images_s']:.0f} img/s "
              f"(overhead {100 * r['overhead']:+.1f}%, {r['overhead_ms_per_step']:+.2f} ms/step), engine with its data source {r['engine_real_data_images_s']:.0f}"
              " img/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
