"""Zero-shot benchmarks for ZSCMR (Chaudhuri et al., CVPRW 2020) and the supervised triplet baseline.

Every model is trained through the engine (``sbirkit.engine.train``) on frozen ImageNet
EfficientNet-Lite0 features cached once per dataset (``train.cached_features``), with model
selection on held-out *seen* classes (``data.zero_shot_val_classes``) and evaluation on unseen
classes only (``sbirkit.engine.evaluate_run``). Parts:

* ``synthetic``: the presets ``zscmr-synthetic`` and ``triplet-synthetic-zs`` (24 classes, the
  seeded split random:6:0), four directions, ZSL and GZSL, with 64-bit ITQ rows; five training
  seeds (mean ± std), and the per-seed differences ZSCMR − baseline.
* ``quickdraw``: Quick, Draw! sketch -> sketch over its 345 classes, seeded split random:45:0
  (300 seen / 45 unseen). The data has no photos, so both branches are given the same sketches
  (the "photo" side is a copy of each sketch); only sketch -> sketch is reported.
* ``cifar``: Quick, Draw! sketches <-> CIFAR-10 photos on the nine shared classes, 6 seen / 3
  unseen, four directions, over the seeded splits random:3:0, :1 and :2 of the nine (each listed).
* ``ablation``: ZSCMR on the synthetic split with each loss term removed in turn, and with the
  class-name vectors replaced by one-hot and by random vectors.
* ``end_to_end`` (not in the default parts; ~16 min a run): both synthetic presets with the
  backbones fine-tuned instead of frozen, one seed.
* ``quickdraw_tuning`` (not in the default parts): each method's settings tried on Quick, Draw!'s
  held-out seen classes, validation and unseen-class test mAP side by side.

DoodleNet is not used as a backbone: it was trained on all 345 Quick, Draw! classes, the unseen
ones included, which would leak them into the features.

    .venv/bin/python benchmarks/bench_zscmr.py --shared ../shared/data --out runs/bench_zscmr
    .venv/bin/python benchmarks/bench_zscmr.py --shared ../shared/data --out /tmp/zs --parts synthetic --quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbirkit.data import Modality, Sample, SBIRDataset, create_dataset, register_dataset
from sbirkit.engine import apply_overrides, evaluate_run, feature_cache, inference, load_preset, train, zero_shot
from sbirkit.models import create_encoder

DIRECTIONS = ("sketch2photo", "photo2sketch", "sketch2sketch", "photo2photo")
SHORT = {"sketch2photo": "S→P", "photo2sketch": "P→S", "sketch2sketch": "S→S", "photo2photo": "P→P"}
QUICKDRAW_CIFAR_CLASSES = ["airplane", "car", "bird", "cat", "dog", "frog", "horse", "cruise ship", "sailboat",
                           "speedboat", "truck"]
ABLATIONS = [  # (row label, overrides of the zscmr-synthetic preset: L_cmd + L_3lt + L_rcs, margin 0.6)
    ("ZSCMR preset (L_cmd + L_3lt + L_rcs, margin 0.6)", []),
    ("+ L_class (the paper's four terms)", ["method.terms=[cmd,triplet,rcs,class]"]),
    ("the paper's four terms, margin 0.2 (first-round preset)", ["method.terms=[cmd,triplet,rcs,class]",
                                                                 "method.margin=0.2"]),
    ("− L_cmd (no semantic alignment)", ["method.terms=[triplet,rcs]"]),
    ("− L_3lt (no triplet)", ["method.terms=[cmd,rcs]"]),
    ("− L_rcs (no reconstruction)", ["method.terms=[cmd,triplet]"]),
    ("one-hot class vectors", ["method.semantic=onehot", "method.semantic_options={}"]),
    ("random class vectors (300-d)", ["method.semantic=random", "method.semantic_options={dim: 300, seed: 0}"]),
    ("fixed random P (the method's default)", ["method.projection=fixed"]),
    ("w_cmd = 1 (the paper's equal weights)", ["method.w_cmd=1.0"]),
    ("random head init (no PCA)", ["train.head_init=default"]),
]


# ---- a sketch-only dataset seen from both sides --------------------------------------------------
class SketchesBothSides(SBIRDataset):
    """Every sketch of ``source`` once as a sketch and once as a "photo" (key ``as-photo/<key>``)."""

    name = "sketches-both-sides"

    def __init__(self, source: SBIRDataset):
        self.source = source
        copies = [Sample(f"as-photo/{s.key}", Modality.PHOTO, s.class_index, s.class_name, s.source, s.index,
                         None, s.user_id, s.split) for s in source.sketches()]
        self._original = {c.key: s for c, s in zip(copies, source.sketches())}
        sketches = [Sample(s.key, s.modality, s.class_index, s.class_name, s.source, s.index, None, s.user_id, s.split)
                    for s in source.sketches()]
        super().__init__(source.classes, sketches + copies, root=source.root, image_size=source.image_size,
                         stroke_width=source.stroke_width, skipped=source.skipped)

    def read(self, sample: Sample):
        return self.source.read(self._original.get(sample.key, sample))


@register_dataset("bench-sketches-both-sides", help="benchmark only: a sketch dataset with each sketch also as a photo")
def sketches_both_sides(root: str | None = None, *, source: dict) -> SketchesBothSides:
    return SketchesBothSides(create_dataset(source["name"], source.get("root") or root, **(source.get("options") or {})))


# ---- runs ----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20)
    except (OSError, ValueError, IndexError):
        mem = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "commit": commit,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def config_for(preset: str, args, *overrides: str) -> dict:
    common = ["train.progress=false", f"train.feature_cache={args.cache}"]
    if args.quick:
        common += ["train.steps=60", "train.eval_every=20", "train.checkpoint_every=60"]
    return apply_overrides(load_preset(preset), [*common, *overrides])


def run(name: str, config: dict, args, log: dict) -> Path:
    run_dir = args.out / name
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(config, run_dir)
    log.setdefault("train_seconds", {})[name] = round(time.perf_counter() - t, 1)
    print(f"  trained {name} in {log['train_seconds'][name]:.0f} s", flush=True)
    return run_dir


def evaluated(run_dir: Path, directions=DIRECTIONS, gzsl: bool = False) -> dict[str, Any]:
    report = evaluate_run(run_dir, directions=list(directions), gzsl=gzsl, device="cpu", save=False)
    rows = {d: {"map": r["metrics"]["map"], "p@100": r["metrics"]["p@100"]} for d, r in report["results"].items()}
    return {"rows": rows, "protocol": report["protocol"], "best_step": report["checkpoint"]["step"]}


def frozen_feature_scores(config: dict, args, directions=DIRECTIONS) -> dict[str, Any]:
    """Training-free reference: the cached backbone features themselves (both branches hold the
    same ImageNet weights, so sketch and photo features share one space), unseen classes, ZSL."""
    data = config["data"]
    dataset = inference.build_dataset(data)
    split = zero_shot.class_split(dataset, data["zero_shot"])
    unseen = set(split.unseen_indices(dataset))
    torch.manual_seed(0)
    encoder = create_encoder(**config["model"]).eval()
    store = feature_cache.FeatureStore(args.cache, data, batch_size=128)
    sides = {}
    for modality, samples in (("sketch", dataset.sketches("test")), ("photo", dataset.photos("test"))):
        samples = [s for s in samples if s.class_index in unseen]
        feats = np.array(store.features(encoder.branch(modality), dataset, samples), np.float32)
        zero = ~feats.any(axis=1)  # an all-zero feature (a blank-looking image) has no cosine: make it
        feats[zero] = 1e-6  # equally similar to everything, and count it
        sides[modality] = (feats, np.array([s.class_index for s in samples]))
        if zero.any():
            print(f"  frozen features: {int(zero.sum())} all-zero {modality} rows", flush=True)
    results = zero_shot.evaluate_zero_shot(sides["sketch"][0], sides["sketch"][1], sides["photo"][0],
                                           sides["photo"][1], unseen, directions=directions,
                                           metrics=("map", "p@100"))
    return {"rows": {d: {"map": r["map"], "p@100": r["p@100"]} for d, r in results.items()}}


# ---- parts ---------------------------------------------------------------------------------------
def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' evaluations as one: each cell becomes the list of its values."""
    first = results[0]
    rows = {d: {m: [r["rows"][d][m] for r in results] for m in first["rows"][d]} for d in first["rows"]}
    return {"rows": rows, "protocol": first["protocol"], "best_step": [r["best_step"] for r in results]}


def part_synthetic(args, log) -> dict[str, Any]:
    zs = config_for("zscmr-synthetic", args)
    out = {"split": zs["data"]["zero_shot"], "seeds": args.seeds, "frozen": frozen_feature_scores(zs, args)}
    for key, preset in (("zscmr", "zscmr-synthetic"), ("triplet", "triplet-synthetic-zs")):
        zsl, gzsl = [], []
        for seed in args.seeds:
            run_dir = run(f"synthetic-{key}-seed{seed}", config_for(preset, args, f"seed={seed}"), args, log)
            zsl.append(evaluated(run_dir))
            gzsl.append(evaluated(run_dir, gzsl=True))
        out[key], out[key + "_gzsl"] = pooled(zsl), pooled(gzsl)
    return out


def quickdraw_config(preset: str, args) -> list[str]:
    source = {"name": "quickdraw-ndjson", "root": str(args.shared / "quickdraw_raw"),
              "options": {"image_size": args.quickdraw_size}}
    return ["data.name=bench-sketches-both-sides", f"data.options={json.dumps({'source': source})}",
            "data.zero_shot=random:45:0", "data.zero_shot_val_classes=30", "data.cache_images=false",
            "eval.directions=[sketch2sketch]", "eval.select=sketch2sketch/map"]


def part_quickdraw(args, log) -> dict[str, Any]:
    zs = config_for("zscmr-synthetic", args, *quickdraw_config("zscmr-synthetic", args))
    out = {"split": "random:45:0 over the 345 classes (300 seen, of which 30 held out for model selection; 45 unseen)",
           "frozen": frozen_feature_scores(zs, args, ["sketch2sketch"])}
    for key, preset in (("zscmr", "zscmr-synthetic"), ("triplet", "triplet-synthetic-zs")):
        config = config_for(preset, args, *quickdraw_config(preset, args))
        out[key] = evaluated(run(f"quickdraw-{key}", config, args, log), ["sketch2sketch"])
    return out


# The presets' first validation round on the synthetic split (the Quick, Draw! candidates below
# started from it): ZSCMR's four terms with margin 0.2, the baseline's margin 0.4.
FIRST_ROUND = {"zscmr": ["method.terms=[cmd,triplet,rcs,class]", "method.margin=0.2"],
               "triplet": ["method.margin=0.4"]}
QUICKDRAW_CANDIDATES = [  # (method, label, overrides of its synthetic preset), tried on Quick, Draw!'s validation
    ("zscmr", "preset (no L_class, hard negatives, margin 0.6)", []),
    ("zscmr", "first round (hard negatives, w_class 1, margin 0.2)", FIRST_ROUND["zscmr"]),
    ("zscmr", "first round, random negatives", [*FIRST_ROUND["zscmr"], "method.mining=random"]),
    ("zscmr", "first round, lr 3e-4", [*FIRST_ROUND["zscmr"], "train.lr=3e-4"]),
    ("zscmr", "first round, random negatives, w_class 0.1",
     [*FIRST_ROUND["zscmr"], "method.mining=random", "method.w_class=0.1"]),
    ("zscmr", "first round, random negatives, w_class 0.1, w_cmd 1",
     [*FIRST_ROUND["zscmr"], "method.mining=random", "method.w_class=0.1", "method.w_cmd=1.0"]),
    ("zscmr", "first round, random negatives, w_class 0.1, cosine, margin 0.4",
     [*FIRST_ROUND["zscmr"], "method.mining=random", "method.w_class=0.1", "method.distance=cosine",
      "method.margin=0.4"]),
    ("triplet", "preset (semi-hard, margin 0.6)", []),
    ("triplet", "first round (semi-hard, margin 0.4)", FIRST_ROUND["triplet"]),
    ("triplet", "first round, all negatives", [*FIRST_ROUND["triplet"], "method.mining=all"]),
    ("triplet", "first round, lr 3e-4", [*FIRST_ROUND["triplet"], "train.lr=3e-4"]),
    ("ablation", "ZSCMR without L_class, random negatives, margin 0.2",
     [*FIRST_ROUND["zscmr"], "method.mining=random", "method.terms=[cmd,triplet,rcs]"]),
    ("ablation", "ZSCMR's L_3lt alone, random negatives, margin 0.2",
     [*FIRST_ROUND["zscmr"], "method.mining=random", "method.terms=[triplet]"]),
    ("ablation", "ZSCMR first round, random negatives, w_class 0.1, one-hot class vectors",
     [*FIRST_ROUND["zscmr"], "method.mining=random", "method.w_class=0.1", "method.semantic=onehot",
      "method.semantic_options={}"]),
    ("ablation", "ZSCMR first round, random negatives, w_class 0.1, random class vectors",
     [*FIRST_ROUND["zscmr"], "method.mining=random", "method.w_class=0.1", "method.semantic=random",
      "method.semantic_options={dim: 384, seed: 0}"]),
]


def validation_at_best(run_dir: Path, key: str) -> float:
    """The validation value of ``key`` at the checkpoint model selection kept."""
    best = torch.load(run_dir / "best.pt", weights_only=True)["step"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"split"' in line]
    return next(r[key] for r in rows if r["step"] == best)


def part_quickdraw_tuning(args, log) -> dict[str, Any]:
    """Each method's settings tried on Quick, Draw!'s 30 held-out seen classes (validation); the
    unseen-class test value is reported next to it, and a method's pick is its best validation."""
    rows = []
    for i, (method, label, overrides) in enumerate(QUICKDRAW_CANDIDATES):
        preset = "triplet-synthetic-zs" if method == "triplet" else "zscmr-synthetic"
        config = config_for(preset, args, *quickdraw_config(preset, args), "eval.binary_bits=0", *overrides)
        run_dir = run(f"quickdraw-tuning-{i}", config, args, log)
        test = evaluated(run_dir, ["sketch2sketch"])
        rows.append({"method": method, "label": label, "overrides": overrides, "best_step": test["best_step"],
                     "val": validation_at_best(run_dir, "sketch2sketch/map"),
                     "test": test["rows"]["sketch2sketch"]["map"]})
    return {"rows": rows}


END_TO_END = [  # (label, {method: (preset, overrides)}): backbones fine-tuned with the heads, synthetic split
    ("one lr (1e-4) for backbones and heads, first-round objectives",
     {"zscmr": ("zscmr-synthetic-e2e", ["train.lr=1e-4", "train.backbone_lr=null", "train.backbone_bn=train"]),
      "triplet": ("triplet-synthetic-zs-e2e", ["train.lr=1e-4", "train.backbone_lr=null", "train.backbone_bn=train"])}),
    # the presets as shipped: backbone lr 1e-5, heads 1e-3, BatchNorm statistics frozen
    ("backbone lr 1e-5, heads 1e-3, BatchNorm frozen, first-round objectives (the -e2e presets)",
     {"zscmr": ("zscmr-synthetic-e2e", []), "triplet": ("triplet-synthetic-zs-e2e", [])}),
    ("backbone lr 1e-5, heads 1e-3, BatchNorm frozen, second-round objectives (the cached presets')",
     {"zscmr": ("zscmr-synthetic-e2e", ["method.terms=[cmd,triplet,rcs]", "method.margin=0.6"]),
      "triplet": ("triplet-synthetic-zs-e2e", ["method.margin=0.6"])}),
]


def part_end_to_end(args, log) -> dict[str, Any]:
    """Both methods trained end to end (``train.cached_features=false``) instead of on cached
    features; slow on a CPU (~16 min a run on one core)."""
    rows = {}
    for i, (label, runs) in enumerate(END_TO_END):
        for key, (preset, overrides) in runs.items():
            config = config_for(preset, args, "eval.binary_bits=0", *overrides)
            rows[f"{key}: {label}"] = evaluated(run(f"end-to-end-{i}-{key}", config, args, log))
    return rows


def cifar_config(args) -> list[str]:
    options = {
        "sketches": {"name": "quickdraw-ndjson", "root": "quickdraw_raw",
                     "options": {"classes": QUICKDRAW_CIFAR_CLASSES, "image_size": 32}},
        "photos": {"name": "image-folder", "root": "cifar10", "options": {"image_size": 32}},
        "class_map": {"automobile": "car", "ship": ["cruise ship", "sailboat", "speedboat"]},
        "image_size": 32,
    }
    return ["data.name=combined", f"data.root={args.shared}", f"data.options={json.dumps(options)}",
            "data.zero_shot=random:3:0", "data.zero_shot_val_classes=0", "data.val_fraction=0.15",
            "data.cache_images=false", "train.batch_size=32", "method.classes_per_batch=4"]


def part_cifar(args, log) -> dict[str, Any]:
    out: dict[str, Any] = {"splits": []}
    runs: dict[str, list] = {"frozen": [], "zscmr": [], "triplet": []}
    for seed in args.cifar_splits:
        spec = f"data.zero_shot=random:3:{seed}"
        zs = config_for("zscmr-synthetic", args, *cifar_config(args), spec)
        dataset = inference.build_dataset(zs["data"])
        split = zero_shot.class_split(dataset, zs["data"]["zero_shot"])
        out["splits"].append({"spec": f"random:3:{seed}", "unseen": list(split.unseen), "seen": list(split.seen)})
        out.setdefault("dropped", dataset.report.describe() if hasattr(dataset, "report") else "")
        frozen = frozen_feature_scores(zs, args)
        runs["frozen"].append({**frozen, "protocol": {}, "best_step": None})
        for key, preset in (("zscmr", "zscmr-synthetic"), ("triplet", "triplet-synthetic-zs")):
            config = config_for(preset, args, *cifar_config(args), spec)
            runs[key].append(evaluated(run(f"cifar-{key}-split{seed}", config, args, log)))
    for key, values in runs.items():
        out[key] = pooled(values)
        out[key]["per_split"] = values
    out["chance"] = {d: float(np.mean([r["protocol"]["chance"][d] for r in runs["zscmr"]])) for d in DIRECTIONS}
    return out


def part_ablation(args, log) -> dict[str, Any]:
    rows = {}
    for i, (label, overrides) in enumerate(ABLATIONS):
        results = []
        for seed in args.seeds:
            config = config_for("zscmr-synthetic", args, "eval.binary_bits=0", f"seed={seed}", *overrides)
            results.append(evaluated(run(f"ablation-{i}-seed{seed}", config, args, log)))
        rows[label] = pooled(results)
    return rows


# ---- tables --------------------------------------------------------------------------------------
def fmt(v: float | list[float] | None) -> str:
    """A value, or the mean ± standard deviation of several runs."""
    if v is None:
        return "—"
    if isinstance(v, list):
        return f"{np.mean(v):.3f}" if len(v) == 1 else f"{np.mean(v):.3f} ± {np.std(v):.3f}"
    return f"{v:.3f}"


def table(rows: dict[str, dict], directions, chance: dict[str, float] | None = None) -> str:
    head = "| model | " + " | ".join(f"{SHORT[d]} mAP | {SHORT[d]} P@100" for d in directions) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(directions)]
    if chance:
        lines.append("| chance (random ranking) | " + " | ".join(f"{fmt(chance[d])} | {fmt(chance[d])}"
                                                             for d in directions) + " |")
    for label, values in rows.items():
        cells = [f"{fmt(values.get(d, {}).get('map'))} | {fmt(values.get(d, {}).get('p@100'))}" for d in directions]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(a: dict[str, dict], b: dict[str, dict], directions, metric: str = "map") -> str:
    """Per-seed differences a − b: mean ± std, and in how many seeds a is higher."""
    lines = ["| | " + " | ".join(SHORT[d] for d in directions) + " |", "|---|" + "---:|" * len(directions)]
    diffs = {d: np.array(a[d][metric]) - np.array(b[d][metric]) for d in directions}
    lines.append("| mean ± std of the difference | " + " | ".join(
        f"{v.mean():+.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}" for v in diffs.values()) + " |")
    lines.append("| seeds where ZSCMR is higher | " + " | ".join(
        f"{int((v > 0).sum())} of {len(v)}" for v in diffs.values()) + " |")
    return "\n".join(lines)


def itq_rows(result: dict, directions) -> dict[str, dict]:
    return {d: result["rows"][f"{d} (64-bit ITQ, Hamming)"] for d in directions
            if f"{d} (64-bit ITQ, Hamming)" in result["rows"]}


def report(results: dict[str, Any]) -> str:
    out = []
    if "synthetic" in results:
        r = results["synthetic"]
        chance = r["zscmr"]["protocol"]["chance"]
        out.append(f"Synthetic, ZSL ({r['split']}; unseen: {', '.join(r['zscmr']['protocol']['zero_shot']['unseen'])}; "
                   f"mean ± std over training seeds {r['seeds']}):")
        out.append(table({"frozen EfficientNet-Lite0 features (no training)": r["frozen"]["rows"],
                          "triplet baseline (triplet-synthetic-zs)": r["triplet"]["rows"],
                          "ZSCMR (zscmr-synthetic)": r["zscmr"]["rows"],
                          "triplet, 64-bit ITQ, Hamming": itq_rows(r["triplet"], DIRECTIONS),
                          "ZSCMR, 64-bit ITQ, Hamming": itq_rows(r["zscmr"], DIRECTIONS)}, DIRECTIONS, chance))
        out.append("\nZSCMR − triplet baseline, paired by training seed (same held-out validation classes), ZSL mAP@all:")
        out.append(paired_table(r["zscmr"]["rows"], r["triplet"]["rows"], DIRECTIONS))
        out.append("\nSynthetic, GZSL (gallery also holds the seen-class test items):")
        out.append(table({"triplet baseline": r["triplet_gzsl"]["rows"], "ZSCMR": r["zscmr_gzsl"]["rows"]},
                         DIRECTIONS, r["zscmr_gzsl"]["protocol"]["chance"]))
    if "quickdraw" in results:
        r = results["quickdraw"]
        d = ["sketch2sketch"]
        out.append(f"\nQuick, Draw! sketch→sketch, ZSL ({r['split']}):")
        out.append(table({"frozen EfficientNet-Lite0 features (no training)": r["frozen"]["rows"],
                          "triplet baseline": r["triplet"]["rows"], "ZSCMR": r["zscmr"]["rows"],
                          "triplet, 64-bit ITQ, Hamming": itq_rows(r["triplet"], d),
                          "ZSCMR, 64-bit ITQ, Hamming": itq_rows(r["zscmr"], d)}, d, r["zscmr"]["protocol"]["chance"]))
    if "quickdraw_tuning" in results:
        out.append("\nQuick, Draw! sketch→sketch, settings tried on the 30 held-out seen classes (mAP@all):")
        lines = ["| method | setting | validation (seen, held out) | test (unseen) | best step |", "|---|---|---:|---:|---:|"]
        for r in results["quickdraw_tuning"]["rows"]:
            lines.append(f"| {r['method']} | {r['label']} | {r['val']:.3f} | {r['test']:.3f} | {r['best_step']} |")
        out.append("\n".join(lines))
    if "cifar" in results:
        r = results["cifar"]
        splits = "; ".join(f"{s['spec']}: unseen {', '.join(s['unseen'])}" for s in r["splits"])
        out.append(f"\nQuick, Draw! ↔ CIFAR-10, ZSL, 6 seen / 3 unseen, mean ± std over {len(r['splits'])} splits "
                   f"({splits}):")
        out.append(table({"frozen EfficientNet-Lite0 features (no training)": r["frozen"]["rows"],
                          "triplet baseline": r["triplet"]["rows"], "ZSCMR": r["zscmr"]["rows"],
                          "triplet, 64-bit ITQ, Hamming": itq_rows(r["triplet"], DIRECTIONS),
                          "ZSCMR, 64-bit ITQ, Hamming": itq_rows(r["zscmr"], DIRECTIONS)},
                         DIRECTIONS, r["chance"]))
        for i, s in enumerate(r["splits"]):
            out.append(f"\nsplit {s['spec']} (unseen {', '.join(s['unseen'])}), mAP@all:")
            out.append(table({k: {d: {"map": r[k]["per_split"][i]["rows"][d]["map"], "p@100": None}
                                  for d in DIRECTIONS} for k in ("frozen", "triplet", "zscmr")}, DIRECTIONS,
                             r["zscmr"]["per_split"][i]["protocol"]["chance"]))
    if "end_to_end" in results:
        out.append("\nEnd to end (synthetic split, ZSL, one seed):")
        out.append(table({label: r["rows"] for label, r in results["end_to_end"].items()}, DIRECTIONS))
    if "ablation" in results:
        out.append("\nAblation (synthetic split, ZSL, mAP@all):")
        rows = results["ablation"]
        lines = ["| variant | " + " | ".join(SHORT[d] for d in DIRECTIONS) + " | best steps |",
                 "|---|" + "---:|" * (len(DIRECTIONS) + 1)]
        for label, v in rows.items():
            lines.append(f"| {label} | " + " | ".join(fmt(v["rows"][d]["map"]) for d in DIRECTIONS)
                         + f" | {', '.join(map(str, v['best_step']))} |")
        out.append("\n".join(lines))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, required=True, help="folder holding quickdraw_raw/ and cifar10/")
    parser.add_argument("--out", type=Path, required=True, help="run folders and results.json go here")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache (default OUT/features)")
    parser.add_argument("--parts", default="synthetic,quickdraw,cifar,ablation")
    parser.add_argument("--quickdraw-size", type=int, default=48, help="raster size of the Quick, Draw! sketches")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="training seeds of the synthetic and ablation runs")
    parser.add_argument("--cifar-splits", default="0,1,2", help="seeds of the random:3:SEED class splits (CIFAR)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    parser.add_argument("--quick", action="store_true", help="a few training steps per run (smoke test)")
    parser.add_argument("--resume", action="store_true", help="keep finished run folders (train resumes them)")
    args = parser.parse_args(argv)
    args.seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    args.cifar_splits = [int(v) for v in args.cifar_splits.split(",") if v.strip()]
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache = args.cache or args.out / "features"
    args.shared = args.shared.resolve()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    known = {"synthetic": part_synthetic, "quickdraw": part_quickdraw, "cifar": part_cifar, "ablation": part_ablation,
             "quickdraw_tuning": part_quickdraw_tuning, "end_to_end": part_end_to_end}
    unknown = [p for p in parts if p not in known]
    if unknown:
        parser.error(f"--parts: unknown {unknown}; expected names from {', '.join(known)}")
    log: dict[str, Any] = {"machine": machine(), "argv": sys.argv, "part_seconds": {}}
    results: dict[str, Any] = {}
    start = time.perf_counter()
    for part in parts:
        t = time.perf_counter()
        print(f"[{dt.datetime.now():%H:%M:%S}] {part} ...", flush=True)
        results[part] = known[part](args, log)
        log["part_seconds"][part] = round(time.perf_counter() - t, 1)
        print(f"[{dt.datetime.now():%H:%M:%S}] {part}: {log['part_seconds'][part]:.0f} s", flush=True)
    log["total_seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "results.json").write_text(json.dumps({"log": log, "results": results}, indent=2, default=str) + "\n")
    print(report(results))
    print(f"\ntotal {log['total_seconds']:.0f} s; {log['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
