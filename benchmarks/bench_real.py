"""Real-data benchmarks for the supervised baselines: QMUL-V1 (fine-grained) and Quick, Draw! → CIFAR-10.

QMUL-V1 shoes and chairs (sketch → photo edge map, test split): Acc@1/Acc@10 of the training-free
pixel baseline, of the two Triplet-SN presets trained through the engine (fine-tuned end to end at
64 px, and heads on cached 224-px features), and of a Triplet-SN head on frozen ImageNet
EfficientNet-Lite0 features trained by this script. Quick, Draw! → CIFAR-10 (nine shared classes,
held-out sketches → the 9,000 CIFAR test photos): mAP@all and P@100 of chance, of training-free
EfficientNet-Lite0 features, and of triplet heads trained on frozen features. Model selection
always uses a validation split held out from train (``data.val_fraction``), never test.

    .venv/bin/python benchmarks/bench_real.py --shared ../shared/data --out runs/bench_real
    .venv/bin/python benchmarks/bench_real.py --shared ../shared/data --out /tmp/smoke --quick
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sbirkit.data import SBIRDataset, create_dataset
from sbirkit.data.dataset import pil_to_tensor
from sbirkit.engine import apply_overrides, evaluate_run, load_preset, train
from sbirkit.engine.inference import build_dataset
from sbirkit.eval import evaluate_retrieval
from sbirkit.eval.chance import random_ranking_scores
from sbirkit.losses import CrossModalTripletLoss
from sbirkit.models import EmbeddingHead, create_backbone
from sbirkit.models.pixel import pixel_features

PUBLISHED = {  # Acc@1 / Acc@10 on QMUL-V1, as quoted in the issue
    "shoes": {"Triplet-SN (Yu et al., CVPR 2016)": (0.39, 0.88), "DSSA (Song et al., ICCV 2017)": (0.62, 0.95)},
    "chairs": {"Triplet-SN (Yu et al., CVPR 2016)": (0.69, 0.98), "DSSA (Song et al., ICCV 2017)": (0.81, 0.96)},
}
QMUL_PRESETS = {"shoes": "triplet_sn-qmul_v1", "chairs": "triplet_sn-qmul_v1_chairs"}  # fine-tuned end to end
QMUL_CACHED_PRESETS = {"shoes": "triplet_sn-qmul_v1-cached", "chairs": "triplet_sn-qmul_v1_chairs-cached"}  # heads only
CIFAR_PRESET = "triplet-quickdraw_cifar10"


# ---- small helpers -------------------------------------------------------------------------------
class Clock:
    """Wall-clock seconds per named stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def stage(self, name: str):
        clock = self

        class _Stage:
            def __enter__(self):
                self.t = time.perf_counter()
                print(f"[{dt.datetime.now():%H:%M:%S}] {name} ...", flush=True)

            def __exit__(self, *exc):
                clock.seconds[name] = round(time.perf_counter() - self.t, 1)
                print(f"[{dt.datetime.now():%H:%M:%S}] {name}: {clock.seconds[name]:.0f} s", flush=True)

        return _Stage()


def per_class(samples, n: int | None, seed: int = 0) -> list:
    """At most ``n`` samples of each class (a seeded choice, original order kept); all when n is None."""
    if n is None:
        return list(samples)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_class[s.class_index].append(i)
    keep = sorted(j for idx in by_class.values() for j in (rng.choice(idx, n, replace=False) if len(idx) > n else idx))
    return [samples[i] for i in keep]


@torch.no_grad()
def frozen_features(backbone, dataset: SBIRDataset, samples, size: int, grid: int | None = None,
                    batch: int = 64) -> torch.Tensor:
    """Backbone features (eval mode) of ``samples`` at ``size`` px, L2-normalised: the pooled vector,
    or with ``grid`` the ``grid×grid`` average-pooled map flattened (keeps the layout, for fine-grained)."""
    stats = backbone.input_stats
    mean, std = ((torch.tensor(v).view(1, -1, 1, 1) for v in stats) if stats else (None, None))
    out = []
    for i in range(0, len(samples), batch):
        x = torch.stack([pil_to_tensor(dataset.load_image(s, size)) for s in samples[i:i + batch]])
        if mean is not None:
            x = (x - mean) / std
        f = backbone(x) if grid is None else F.adaptive_avg_pool2d(backbone.forward_features(x), grid).flatten(1)
        out.append(F.normalize(f.float(), dim=1))
    return torch.cat(out)


def fine_grained(q, g, sketches, photos) -> dict[str, float]:
    r = evaluate_retrieval(q, g, [s.class_index for s in sketches], [p.class_index for p in photos],
                           query_instances=[s.instance_id for s in sketches],
                           gallery_instances=[p.instance_id for p in photos], metrics=["acc@1", "acc@10"])
    return {**r.metrics, "queries": r.num_queries, "gallery": r.gallery_size}


def category_level(q, g, q_labels, g_labels) -> dict[str, float]:
    r = evaluate_retrieval(q, g, q_labels, g_labels, metrics=["map", "p@100"])
    return {**r.metrics, "queries": r.num_queries, "gallery": r.gallery_size}


# ---- heads on frozen features ----------------------------------------------------------------------
def train_heads(train_s, train_p, train_labels, val_eval, *, level: str, shared: bool, steps: int, batch: int,
                lr: float, weight_decay: float, distance: str, margin: float, embed_dim: int, eval_every: int,
                seed: int, classes_per_batch: int | None = None, photo_pool=None):
    """Triplet-loss embedding heads (:class:`EmbeddingHead`) on frozen features; keeps the best on val.

    ``level="instance"``: ``train_s[i]`` and ``train_p[i]`` are a pair (Triplet-SN, Yu et al. 2016, Eq. 1).
    ``level="class"``: each sketch is paired with a random same-class photo from ``photo_pool``
    (label -> row indices of ``train_p``); batches hold ``classes_per_batch`` classes.
    ``val_eval(sketch_head, photo_head) -> score`` is maximised. Returns (heads, best step, history).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    hs = EmbeddingHead(train_s.shape[1], embed_dim)
    hp = hs if shared else EmbeddingHead(train_p.shape[1], embed_dim)
    params = list({id(p): p for p in (*hs.parameters(), *hp.parameters())}.values())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    loss_fn = CrossModalTripletLoss(distance, margin, "all", level=level, same_class_negatives=level == "instance")
    labels = torch.as_tensor(train_labels)
    classes = torch.unique(labels)
    members = {int(c): torch.nonzero(labels == c).flatten() for c in classes}
    best = (-math.inf, 0, copy.deepcopy((hs.state_dict(), hp.state_dict())))
    history = []
    for step in range(1, steps + 1):
        if level == "instance":
            idx = torch.randperm(len(train_s), generator=g)[:batch]
            ps = idx
            inst = idx
        else:
            chosen = classes[torch.randperm(len(classes), generator=g)[:classes_per_batch]]
            k = batch // len(chosen)
            idx = torch.cat([members[int(c)][torch.randint(len(members[int(c)]), (k,), generator=g)] for c in chosen])
            ps = torch.stack([photo_pool[int(labels[i])][torch.randint(len(photo_pool[int(labels[i])]), (1,),
                                                                        generator=g)][0] for i in idx])
            inst = None
        out = loss_fn(hs(train_s[idx]), hp(train_p[ps]), labels[idx], inst, generator=g)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            hs.eval(), hp.eval()
            with torch.no_grad():
                score = float(val_eval(hs, hp))
            hs.train(), hp.train()
            history.append({"step": step, "loss": float(out["loss"].detach()), "val": score})
            if score > best[0]:
                best = (score, step, copy.deepcopy((hs.state_dict(), hp.state_dict())))
    hs.load_state_dict(best[2][0])
    if not shared:
        hp.load_state_dict(best[2][1])
    hs.eval(), hp.eval()
    return (hs, hp), best[1], history


# ---- QMUL-V1 ---------------------------------------------------------------------------------------
def qmul_pixel(root: Path, category: str, pixel_size: int) -> dict[str, Any]:
    """The training-free pixel baseline (32×32 blurred ink maps, cosine) on the test split."""
    ds = create_dataset("qmul-v1", str(root), category=category)
    sketches, photos = ds.sketches("test"), ds.photos("test")
    q = pixel_features([ds.load_image(s, pixel_size) for s in sketches], True, photo_mode="ink")
    g = pixel_features([ds.load_image(p, pixel_size) for p in photos], False, photo_mode="ink")
    return fine_grained(q, g, sketches, photos)


def qmul_engine(args, preset: str, root: Path, out: Path) -> dict[str, Any]:
    """Train a QMUL-V1 Triplet-SN preset through the engine; evaluate its best.pt on test."""
    cfg = load_preset(preset)
    overrides = [f"data.root={root}", "train.progress=false"]
    if cfg["train"].get("cached_features"):
        overrides.append(f"train.feature_cache={out / 'features'}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.quick:
        overrides += ["train.steps=2", "train.batch_size=8", "train.eval_every=0", "train.checkpoint_every=2",
                      "data.options.image_size=64"]
    cfg = apply_overrides(cfg, overrides)
    run_dir = out / "runs" / preset
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        train(cfg, run_dir)
    train_s = time.perf_counter() - t
    report = evaluate_run(run_dir, "test")
    m = report["results"]["sketch2photo"]["metrics"]
    return {"acc@1": m["acc@1"], "acc@10": m["acc@10"], "queries": report["protocol"]["queries"]["sketch"],
            "gallery": report["protocol"]["queries"]["photo"], "selected_step": report["checkpoint"]["step"],
            "selection": report["checkpoint"]["selection"], "steps": cfg["train"]["steps"],
            "train_seconds": round(train_s, 1), "preset": preset, "overrides": overrides,
            "cached_features": bool(cfg["train"].get("cached_features")),
            "model": {k: cfg["model"][k] for k in ("backbone", "pretrained", "shared")},
            "image_size": cfg["data"]["options"].get("image_size"), "val_fraction": cfg["data"]["val_fraction"]}


def qmul_frozen(args, category: str, root: Path, backbone) -> dict[str, Any]:
    """Triplet-SN head on frozen EfficientNet-Lite0 feature maps (``grid``×``grid`` pooled), shared branch."""
    cfg = apply_overrides(load_preset(QMUL_PRESETS[category]), [f"data.root={root}"])
    ds = build_dataset(cfg["data"])  # the same train/val split as the engine run (data.val_fraction)
    pairs = {split: ds.pairs(split) for split in ("train", "val", "test")}
    size, grid = args.qmul_feature_size, args.qmul_grid
    feats = {split: (frozen_features(backbone, ds, [s for s, _ in p], size, grid),
                     frozen_features(backbone, ds, [ph for _, ph in p], size, grid)) for split, p in pairs.items()}
    test_s, test_p = [s for s, _ in pairs["test"]], [p for _, p in pairs["test"]]
    val_s, val_p = [s for s, _ in pairs["val"]], [p for _, p in pairs["val"]]
    free = fine_grained(*feats["test"], test_s, test_p)

    def val_eval(hs, hp):
        return fine_grained(hs(feats["val"][0]), hp(feats["val"][1]), val_s, val_p)["acc@1"]

    method = cfg["method"]
    (hs, hp), best_step, history = train_heads(
        feats["train"][0], feats["train"][1], [0] * len(pairs["train"]), val_eval, level="instance", shared=True,
        steps=args.head_steps, batch=32, lr=1e-3, weight_decay=1e-3, distance=method["distance"],
        margin=method["margin"], embed_dim=cfg["model"]["embed_dim"], eval_every=25, seed=cfg["seed"])
    with torch.no_grad():
        trained = fine_grained(hs(feats["test"][0]), hp(feats["test"][1]), test_s, test_p)
    return {"training_free": free, "trained": {**trained, "selected_step": best_step, "steps": args.head_steps},
            "pairs": {k: len(v) for k, v in pairs.items()}, "feature_size": size, "grid": grid,
            "history": history}


# ---- Quick, Draw! -> CIFAR-10 ------------------------------------------------------------------------
def cifar_setup(args, shared: Path):
    """The preset's combined dataset (with its val split) and the sketches/photos each part uses:
    all sketches and all test photos; at most N train/val photos a class (fewer with ``--quick``)."""
    cfg = apply_overrides(load_preset(CIFAR_PRESET), [f"data.root={shared}"])
    ds = build_dataset(cfg["data"])
    if args.quick:
        n_train, n_val, n_test = 10, 10, 20
    else:
        n_train, n_val, n_test = args.train_photos_per_class, args.val_photos_per_class, None
    sets = {
        "train": (ds.sketches("train"), per_class(ds.photos("train"), n_train, 1)),
        "val": (ds.sketches("val"), per_class(ds.photos("val"), n_val, 2)),
        "test": (ds.sketches("test"), per_class(ds.photos("test"), n_test, 3)),
    }
    return cfg, ds, sets


def cifar_benchmark(args, shared: Path, photo_backbone) -> dict[str, Any]:
    """Chance, training-free EfficientNet-Lite0 features, and triplet heads on frozen features
    (sketch side: EfficientNet-Lite0, and DoodleNet when its weights are under ``shared``)."""
    cfg, ds, sets = cifar_setup(args, shared)
    size = args.cifar_feature_size
    photo_feats = {k: frozen_features(photo_backbone, ds, p, size) for k, (_, p) in sets.items()}
    labels = {k: ([s.class_index for s in sk], [p.class_index for p in ph]) for k, (sk, ph) in sets.items()}
    sketch_backbones = {"efficientnet_lite0": (photo_backbone, size)}
    doodle = shared / "doodlenet" / "doodleNet-model.h5"
    if doodle.is_file():
        sketch_backbones["doodlenet"] = (create_backbone("doodlenet", weights=doodle).eval(), 64)
    result: dict[str, Any] = {
        "dataset": ds.summary()["combine"],
        "counts": {k: {"sketches": len(sk), "photos": len(ph)} for k, (sk, ph) in sets.items()},
        "chance": random_ranking_scores(*labels["test"], k=100),
        "classes": ds.classes,
        "rows": {},
    }
    method = cfg["method"]
    for name, (bb, sketch_size) in sketch_backbones.items():
        sketch_feats = {k: frozen_features(bb, ds, sk, sketch_size) for k, (sk, _) in sets.items()}
        if name == "efficientnet_lite0":
            result["rows"]["training_free"] = category_level(sketch_feats["test"], photo_feats["test"],
                                                             *labels["test"])
        pool = defaultdict(list)
        for i, c in enumerate(labels["train"][1]):
            pool[c].append(i)
        pool = {c: torch.tensor(v) for c, v in pool.items()}

        def val_eval(hs, hp, sf=sketch_feats):
            return category_level(hs(sf["val"]), hp(photo_feats["val"]), *labels["val"])["map"]

        (hs, hp), best_step, history = train_heads(
            sketch_feats["train"], photo_feats["train"], labels["train"][0], val_eval, level="class", shared=False,
            steps=args.head_steps, batch=32, lr=1e-3, weight_decay=1e-3, distance=method["distance"],
            margin=method["margin"], embed_dim=cfg["model"]["embed_dim"], eval_every=25, seed=cfg["seed"],
            classes_per_batch=method.get("classes_per_batch") or 8, photo_pool=pool)
        with torch.no_grad():
            scores = category_level(hs(sketch_feats["test"]), hp(photo_feats["test"]), *labels["test"])
        result["rows"][f"triplet_heads_{name}"] = {**scores, "selected_step": best_step, "steps": args.head_steps,
                                                   "sketch_feature_size": sketch_size, "history": history}
    result["photo_feature_size"] = size
    return result


def cifar_engine(args, shared: Path, out: Path) -> dict[str, Any]:
    """Train the Quick, Draw! → CIFAR-10 preset through the engine and evaluate best.pt on all test photos.

    With ``--quick``: 2 steps, no validation and no test evaluation (a check that the preset trains).
    """
    overrides = [f"data.root={shared}", "train.progress=false"]
    if args.cifar_engine_steps is not None:
        overrides.append(f"train.steps={args.cifar_engine_steps}")
    if args.quick:
        overrides += ["train.steps=2", "data.val_fraction=0.0", "train.eval_every=0", "train.checkpoint_every=2"]
    cfg = apply_overrides(load_preset(CIFAR_PRESET), overrides)
    run_dir = out / "runs" / "quickdraw_cifar10"
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        train(cfg, run_dir)
    seconds = round(time.perf_counter() - t, 1)
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    row = {"steps": cfg["train"]["steps"], "train_seconds": seconds, "preset": CIFAR_PRESET, "overrides": overrides,
           "last_loss": next((r["loss"] for r in reversed(logged) if "loss" in r), None),
           "model": {k: cfg["model"].get(k) for k in ("backbone", "photo_backbone", "pretrained", "shared")},
           "image_size": cfg["data"]["options"].get("image_size")}
    if args.quick:
        return row
    report = evaluate_run(run_dir, "test")
    m = report["results"]["sketch2photo"]["metrics"]
    return {**row, "map": m["map"], "p@100": m["p@100"], "queries": report["protocol"]["queries"]["sketch"],
            "gallery": report["protocol"]["queries"]["photo"], "selected_step": report["checkpoint"]["step"],
            "selection": report["checkpoint"]["selection"]}


# ---- reporting ---------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
                     model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()], "python": platform.python_version(),
            "torch": torch.__version__, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def fmt(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def qmul_table(results: dict[str, Any]) -> str:
    lines = ["| category | method | Acc@1 | Acc@10 | queries / gallery | notes |", "|---|---|---:|---:|---:|---|"]
    for cat, r in results.items():
        size = f"{r['pixel']['queries']} / {r['pixel']['gallery']}"
        lines.append(f"| {cat} | pixel baseline (training-free) | {fmt(r['pixel']['acc@1'])} | "
                     f"{fmt(r['pixel']['acc@10'])} | {size} | 32×32 blurred ink maps, cosine |")
        if "frozen" in r:
            f = r["frozen"]
            lines.append(f"| {cat} | EfficientNet-Lite0 ImageNet features (training-free) | "
                         f"{fmt(f['training_free']['acc@1'])} | {fmt(f['training_free']['acc@10'])} | {size} | "
                         f"{f['feature_size']} px, {f['grid']}×{f['grid']} pooled map, cosine |")
            t = f["trained"]
            lines.append(f"| {cat} | Triplet-SN head on frozen EfficientNet-Lite0 | {fmt(t['acc@1'])} | "
                         f"{fmt(t['acc@10'])} | {size} | linear head, {t['steps']} steps, best val step "
                         f"{t['selected_step']} |")
        for e in (r[k] for k in ("engine", "engine_cached") if k in r):
            model = e["model"]
            how = "head on cached features of" if e.get("cached_features") else "fine-tuned"
            lines.append(f"| {cat} | Triplet-SN, {how} {model['backbone']}{' ImageNet' if model['pretrained'] else ''} "
                         f"(preset `{e['preset']}`) | {fmt(e['acc@1'])} | {fmt(e['acc@10'])} | "
                         f"{e['queries']} / {e['gallery']} | {e['image_size']} px, {e['steps']} steps, "
                         f"best val step {e['selected_step']}, {e['train_seconds']:.0f} s |")
        for name, (a1, a10) in PUBLISHED[cat].items():
            lines.append(f"| {cat} | *published:* {name} | {a1:.2f} | {a10:.2f} | {size} | as quoted in the issue |")
    return "\n".join(lines)


def cifar_table(r: dict[str, Any]) -> str:
    test = r["counts"]["test"]
    lines = [f"Test: {test['sketches']} held-out Quick, Draw! sketch queries → {test['photos']} CIFAR-10 test photos "
             f"({len(r['classes'])} classes).", "",
             "| method | mAP@all | P@100 | notes |", "|---|---:|---:|---|"]
    c = r["chance"]
    lines.append(f"| chance (random ranking, analytic) | {fmt(c['map'])} | {fmt(c['p@100'])} | expected AP and "
                 "P@100 of a uniformly random ranking |")
    rows = r["rows"]
    if "training_free" in rows:
        t = rows["training_free"]
        lines.append(f"| EfficientNet-Lite0 ImageNet features, both sides (training-free) | {fmt(t['map'])} | "
                     f"{fmt(t['p@100'])} | {r['photo_feature_size']} px, pooled 1280-d, cosine |")
    for name, t in rows.items():
        if not name.startswith("triplet_heads_"):
            continue
        sketch = name.removeprefix("triplet_heads_")
        lines.append(f"| triplet heads on frozen features: sketch {sketch}, photo efficientnet_lite0 | "
                     f"{fmt(t['map'])} | {fmt(t['p@100'])} | linear heads, {t['steps']} steps, best val step "
                     f"{t['selected_step']} |")
    e = r.get("engine")
    if e and "map" in e:
        lines.append(f"| triplet, sketch {e['model']['backbone']} + photo {e['model']['photo_backbone']} ImageNet, "
                     f"fine-tuned (preset `{e['preset']}`) | {fmt(e['map'])} | {fmt(e['p@100'])} | "
                     f"{e['image_size']} px, {e['steps']} steps, best val step {e['selected_step']}, "
                     f"{e['train_seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, required=True, help="the shared data folder (qmul_v1/, quickdraw_raw/, ...)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_real"), help="run folders, JSON and markdown go here")
    p.add_argument("--quick", action="store_true", help="smoke run: a few steps and small galleries (numbers meaningless)")
    p.add_argument("--steps", type=int, default=None, help="engine training steps for the QMUL-V1 presets "
                                                              "(default: the presets' own)")
    p.add_argument("--head-steps", type=int, default=300, help="steps for heads trained on frozen features")
    p.add_argument("--categories", default="shoes,chairs")
    p.add_argument("--skip", default="",
                   help="comma list of parts to skip: qmul_engine, qmul_engine_cached, qmul_frozen, cifar, cifar_engine")
    p.add_argument("--qmul-feature-size", type=int, default=128)
    p.add_argument("--qmul-grid", type=int, default=4)
    p.add_argument("--pixel-size", type=int, default=256, help="image size the pixel baseline reads (then 32×32)")
    p.add_argument("--cifar-feature-size", type=int, default=64, help="frozen-feature input size (CIFAR is 32 px)")
    p.add_argument("--train-photos-per-class", type=int, default=300)
    p.add_argument("--val-photos-per-class", type=int, default=100)
    p.add_argument("--cifar-engine-steps", type=int, default=None,
                   help="engine training steps for the Quick, Draw! -> CIFAR-10 preset (default: the preset's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a busy 2-core machine two OpenMP threads mostly wait on each other)")
    args = p.parse_args(argv)
    if args.quick:
        args.head_steps = min(args.head_steps, 30)
        args.qmul_feature_size = min(args.qmul_feature_size, 64)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    torch.set_num_threads(args.threads)
    shared = args.shared.resolve()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    started = time.perf_counter()
    results: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else
                               " ".join(["bench_real.py", *argv]), "machine": machine(), "quick": args.quick,
                               "qmul_v1": {}, "timings_s": clock.seconds}
    lite0 = create_backbone("efficientnet_lite0", pretrained=True).eval()
    qmul_root = shared / "qmul_v1"
    for cat in [c.strip() for c in args.categories.split(",") if c.strip()]:
        r: dict[str, Any] = {}
        with clock.stage(f"qmul {cat} pixel"):
            r["pixel"] = qmul_pixel(qmul_root, cat, args.pixel_size)
        if "qmul_frozen" not in skip:
            with clock.stage(f"qmul {cat} frozen features + head"):
                r["frozen"] = qmul_frozen(args, cat, qmul_root, lite0)
        if "qmul_engine" not in skip:
            with clock.stage(f"qmul {cat} engine"):
                r["engine"] = qmul_engine(args, QMUL_PRESETS[cat], qmul_root, out)
        if "qmul_engine_cached" not in skip:
            with clock.stage(f"qmul {cat} engine, cached features"):
                r["engine_cached"] = qmul_engine(args, QMUL_CACHED_PRESETS[cat], qmul_root, out)
        results["qmul_v1"][cat] = r
    if "cifar" not in skip:
        with clock.stage("quickdraw->cifar10 frozen features + heads"):
            results["quickdraw_cifar10"] = cifar_benchmark(args, shared, lite0)
        if "cifar_engine" not in skip:
            with clock.stage("quickdraw->cifar10 engine"):
                results["quickdraw_cifar10"]["engine"] = cifar_engine(args, shared, out)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]

    md = ["### QMUL-V1 (fine-grained, test split, sketch → photo edge map)", "", qmul_table(results["qmul_v1"])]
    if "quickdraw_cifar10" in results:
        md += ["", "### Quick, Draw! → CIFAR-10 (category level)", "", cifar_table(results["quickdraw_cifar10"])]
    md += ["", f"Total {results['total_seconds']:.0f} s; stages: " +
           ", ".join(f"{k} {v:.0f} s" for k, v in clock.seconds.items())]
    text = "\n".join(md)
    print(text)
    (out / "bench_real.md").write_text(text + "\n")
    (out / "bench_real.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {out / 'bench_real.json'} and {out / 'bench_real.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
