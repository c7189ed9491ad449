"""Fine-grained presets on real data: candidates chosen on validation, then test, several seeds.

For QMUL-V1 shoes and chairs (sketch -> photo edge map), every candidate in ``CANDIDATES`` trains
with each seed through the engine (``sbirkit.engine.train``) from a base preset plus overrides;
its score is the validation Acc@1 at the checkpoint model selection kept (10% of the training
pairs held out by ``data.val_fraction``; the same pairs for every seed). Test is evaluated for
every run but never used to choose. One feature cache per category is shared by every run, so
each (stage, augmentation) is extracted once. Results go to ``<out>/results.json`` as they come
(a rerun skips finished runs).

    .venv/bin/python benchmarks/bench_finegrained.py --shared ../shared/data --out runs/bench_fg \\
        --categories shoes --candidates cached,views8,att_s1 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

AUG = ("{photo: {crop: [0.8, 1.0], flip: 0.5, rotate: 5, translate: 0.04}, "
       "sketch: {crop: [0.8, 1.0], flip: 0.5, rotate: 5, translate: 0.04}, pair_flip: same}")
VIEWS8 = [f"data.augment={AUG}", "train.cache_views=8"]
ATT = ["model.attention=true", "model.pool=max", "model.attention_mode=softmax"]
CANDIDATES: dict[str, list[str]] = {
    # the shipped heads-on-cached-features preset as it was (pooled 224-px features, PCA head)
    "cached": [],
    # the same heads on 8 cached augmented views per sample
    "views8": VIEWS8,
    # spatial attention + max pooling (DSSA-style) on the cached final map, the 1x1 head conv trains
    "att_s1": [*VIEWS8, *ATT, "train.trainable_stages=1", "train.head_init=default", "train.lr=3e-4",
               "train.backbone_lr=1e-4", "train.steps=800"],
    # ... and the last block group too (stage 7: 192 -> 320 channels at 7x7)
    "att_s2": [*VIEWS8, *ATT, "train.trainable_stages=2", "train.head_init=default", "train.lr=3e-4",
               "train.backbone_lr=1e-4", "train.steps=800"],
    "gem_s2": [*VIEWS8, "model.pool=gem", "train.trainable_stages=2", "train.head_init=default",
               "train.lr=3e-4", "train.backbone_lr=1e-4", "train.steps=800"],
    "att_s2_long": [*VIEWS8, *ATT, "train.trainable_stages=2", "train.head_init=default", "train.lr=3e-4",
                    "train.backbone_lr=1e-4", "train.steps=1600"],
    "att_s2_semihard": [*VIEWS8, *ATT, "train.trainable_stages=2", "train.head_init=default", "train.lr=3e-4",
                        "train.backbone_lr=1e-4", "train.steps=800", "method.mining=semi_hard"],
    # att_s2, its two trainable stages started from a sketch classifier (sketch-domain pretraining,
    # as Triplet-SN's branches were): --sketch-pretrained RUN, e.g. a classifier on the 9,570
    # Quick, Draw! drawings at 224 px with the same two stages trained on cached maps
    "att_s2_sketchpre": [*VIEWS8, *ATT, "train.trainable_stages=2", "train.head_init=default", "train.lr=3e-4",
                         "train.backbone_lr=1e-4", "train.steps=800", "train.init_from={sketch_pretrained}"],
    "att_s3": [*VIEWS8, *ATT, "train.trainable_stages=3", "train.head_init=default", "train.lr=3e-4",
               "train.backbone_lr=1e-4", "train.steps=800"],
}
# layout-keeping features: the backbone cut after its 6th stage (stage index 5, 112 channels at 14x14
# for 224 px) and averaged over a 4x4 grid (1792-d), or after its 7th (192 x 7x7) on a 7x7 grid
GRID = ["model.backbone_stages=6", "model.pool=grid", "model.pool_grid=4"]
GRID7 = ["model.backbone_stages=7", "model.pool=grid", "model.pool_grid=7"]
CANDIDATES.update({
    "grid_cached": GRID,
    "grid_cached_256": [*GRID, "model.embed_dim=256"],
    "grid7_cached": GRID7,
    "grid_views8": [*GRID, *VIEWS8],
    # the ablation around grid_cached: resolution, grid size, cut, schedule, mining, head init
    "grid_cached_128px": [*GRID, "data.options.image_size=128"],
    "grid_cached_256px": [*GRID, "data.options.image_size=256"],
    "grid_cached_g2": [*GRID, "model.pool_grid=2"],
    "grid_cached_g7": [*GRID, "model.pool_grid=7"],
    "grid_cached_cut5": ["model.backbone_stages=5", "model.pool=grid", "model.pool_grid=4"],
    "grid_cached_cut7": ["model.backbone_stages=7", "model.pool=grid", "model.pool_grid=4"],
    "grid_cached_long": [*GRID, "train.steps=1600"],
    "grid_cached_semihard": [*GRID, "method.mining=semi_hard"],
    "grid_cached_hard": [*GRID, "method.mining=hard"],
    "grid_cached_random_init": [*GRID, "train.head_init=default"],
    # DSSA-style spatial attention re-weighting the stage-5 map before the grid pooling (maps cached)
    "grid_att": [*GRID, "model.attention=true", "model.attention_mode=softmax"],
    # a hard-negative mining schedule: every violating negative first, the hardest one from step 400
    "grid_cached_sched": [*GRID, "train.steps=1600", "method.mining_schedule={400: hard}"],
    "grid_s2": [*GRID, *VIEWS8, "train.trainable_stages=2", "train.head_init=default", "train.lr=3e-4",
                "train.backbone_lr=1e-4", "train.steps=800"],
})
BASE = {"shoes": "triplet_sn-qmul_v1-cached", "chairs": "triplet_sn-qmul_v1_chairs-cached",
        "quickdraw_cifar10": "triplet-quickdraw_cifar10"}
# Quick, Draw! -> CIFAR-10 (category level): the same data and splits as triplet-quickdraw_cifar10
QD_AUG = ("{photo: {crop: [0.7, 1.0], flip: 0.5}, sketch: {flip: 0.5, rotate: 8, translate: 0.05}, "
          "strokes: {drop: 0.1, jitter: 0.01, width: [0.75, 1.5]}, pair_flip: independent}")
CANDIDATES.update({
    # the shipped preset as it was: both EfficientNet-Lite0 branches fine-tuned end to end at 32 px
    "qd_e2e": [],
    # ... with augmentation (stroke ops on the vector sketches, crops and flips)
    "qd_e2e_aug": [f"data.augment={QD_AUG}"],
    # frozen backbones at 64 px, the last two stages, GeM and the heads trained on 8 cached views
    "qd_s2_views": [f"data.augment={QD_AUG}", "train.cache_views=8", "train.cached_features=true",
                    "data.options.image_size=64", "train.trainable_stages=2", "model.pool=gem", "train.lr=3e-4",
                    "train.backbone_lr=1e-4", "train.steps=1200", "train.eval_every=200"],
})
# ... twice the schedule (validation was still at its best at the last step on two seeds of three)
CANDIDATES["qd_s2_views_long"] = [*CANDIDATES["qd_s2_views"], "train.steps=2400"]
METRICS = {"shoes": ("acc@1", "acc@5", "acc@10"), "chairs": ("acc@1", "acc@5", "acc@10"),
           "quickdraw_cifar10": ("map", "p@100")}


def machine() -> dict:
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | cut -d: -f2"], capture_output=True,
                         text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def run_one(shared: Path, out: Path, category: str, name: str, seed: int, base: str | None = None,
            sketch_pretrained: Path | None = None) -> dict:
    from sbirkit.engine import Trainer, apply_overrides, evaluate_run, load_preset

    run_dir = out / category / name / f"seed{seed}"
    root = shared if category == "quickdraw_cifar10" else shared / "qmul_v1"
    overrides = [f"data.root={root}", f"seed={seed}", "train.progress=false",
                 f"train.feature_cache={out / category / 'features'}",
                 *[o.replace("{sketch_pretrained}", str(sketch_pretrained)) for o in CANDIDATES[name]]]
    config = apply_overrides(load_preset(base or BASE[category]), overrides)
    t0 = time.perf_counter()
    trainer = Trainer(config, run_dir)
    trainer.fit()
    seconds = time.perf_counter() - t0
    best = torch.load(run_dir / "best.pt", weights_only=True)
    report = evaluate_run(run_dir, split="test", device="cpu", save=True)
    test = report["results"]["sketch2photo"]["metrics"]
    return {"category": category, "candidate": name, "seed": seed, "overrides": overrides,
            "val_acc@1": best["value"], "val_metric": best["metric"], "best_step": best["step"],
            "train_seconds": round(seconds, 1),
            "extracted_rows": trainer.features.extracted if trainer.features is not None else 0,
            "test": {k: test[k] for k in METRICS[category]}}


def summarise(rows: list[dict]) -> str:
    lines = ["| category | candidate | seeds | validation (mean ± std) | test Acc@1 or mAP | test Acc@10 or P@100 "
             "| s/run |", "|---|---|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["category"], r["candidate"]) for r in rows},
                  key=lambda k: (k[0], list(CANDIDATES).index(k[1]) if k[1] in CANDIDATES else 99))
    for cat, cand in keys:
        group = [r for r in rows if (r["category"], r["candidate"]) == (cat, cand)]
        val = np.array([r["val_acc@1"] for r in group])
        first, second = ("map", "p@100") if cat == "quickdraw_cifar10" else ("acc@1", "acc@10")
        t1 = np.array([r["test"][first] for r in group])
        t10 = np.array([r["test"][second] for r in group])
        secs = np.mean([r["train_seconds"] for r in group])
        sd = (lambda x: x.std(ddof=1)) if len(group) > 1 else (lambda x: 0.0)  # sample sd, as BENCHMARKS.md
        lines.append(f"| {cat} | {cand} | {len(group)} | {val.mean():.3f} ± {sd(val):.3f} | "
                     f"{t1.mean():.3f} ± {sd(t1):.3f} | {t10.mean():.3f} ± {sd(t10):.3f} | {secs:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--categories", default="shoes,chairs")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sketch-pretrained", type=Path, help="a sketch classifier run (for *_sketchpre)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    saved = json.loads(path.read_text()) if path.is_file() else {"machine": machine(), "runs": []}
    done = {(r["category"], r["candidate"], r["seed"]) for r in saved["runs"]}
    for category in args.categories.split(","):
        for name in args.candidates.split(","):
            for seed in map(int, args.seeds.split(",")):
                if (category, name, seed) in done:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {category} {name} seed {seed}", flush=True)
                if "{sketch_pretrained}" in " ".join(CANDIDATES[name]) and args.sketch_pretrained is None:
                    parser.error(f"candidate {name} needs --sketch-pretrained RUN")
                row = run_one(args.shared, args.out, category, name, seed, sketch_pretrained=args.sketch_pretrained)
                first = next(iter(row["test"]))
                print(f"    val {row['val_acc@1']:.3f} test {first} {row['test'][first]:.3f} "
                      f"({row['train_seconds']:.0f} s)", flush=True)
                saved["runs"].append(row)
                path.write_text(json.dumps(saved, indent=2) + "\n")
    print(summarise(saved["runs"]))


if __name__ == "__main__":
    main()
