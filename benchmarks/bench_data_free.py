"""Data-free SBIR benchmarks (BENCHMARKS.md, "Data-free SBIR (CrossX-DFL)").

Parts (``--part``, repeatable; each appends to ``OUT/results.jsonl`` and skips what is there):

* ``synthetic``: CrossX-DFL, the six baselines (classifier only with logits and with
  probabilities, uni-modal distillation, Gaussian prior, averaging weights, meta-data /
  DeepInversion, alternative data), CrossX-DFL with the paper's objective only (no BatchNorm
  matching, no cross-proxy term, no same-class masking) and the data-dependent triplet model on
  the same encoders (``triplet-synthetic``), one run per seed; test sketch -> photo mAP@all and
  P@200 of the ``best`` checkpoint (and ``last``).
* ``overlap``: CrossX-DFL (2,000 student steps, half the preset's schedule, at every overlap)
  and classifier only with teachers trained on class sets overlapping 100 ... 20 %
  (``method.class_overlap``), retrieval over the union.
* ``compute``: the official-style schedule (``crossx_dfl-synthetic-official``) against the default
  one, both logging validation mAP on the synthetic *val* split (``eval.data``) every so often,
  so the estimator steps and wall time to reach a given mAP can be read; test mAP of ``last``.
* ``real``: the real teachers (DoodleNet + EfficientNet-Lite0), Quick, Draw! -> CIFAR-10:
  CrossX-DFL (conv and stroke sketch estimators), classifier only (logits, probabilities; and
  over the 185 classes of the shipped imagenet-quickdraw map), fused, Gaussian prior, with the
  synthesis diagnostics (pair agreement, balance, probes against the teachers' kind of images).
* ``real_last``: evaluation only: ``last.pt`` of the ``real`` runs recorded with ``best`` only (the
  best-vs-last comparison behind ``crossx_dfl-doodlenet_effnet``'s ``eval.select``).
* ``paper``: the paper-like teachers (small BatchNorm CNNs trained on the nine retrieval classes:
  ``classifier-cifar9-photo``, ``classifier-quickdraw9-sketch``, trained once into OUT/teachers
  or given with ``--teachers``): CrossX-DFL (stroke and conv sketch estimators), the six
  baselines, classifier only, CrossX-DFL fused with classifier only; the diagnostics' real
  reference is the teachers' own training split (CIFAR-10 training photos, Quick, Draw! training
  drawings), read for diagnosis only.

Teachers and the discriminator are trained once into OUT (beside the runs) and shared by every
run and seed: the seed varies the data-free training only. Run one part at a time with
``OMP_NUM_THREADS=1``; ``--summary`` prints the tables from ``results.jsonl``.

    OMP_NUM_THREADS=1 python benchmarks/bench_data_free.py --out /tmp/dfl_bench --part synthetic --seeds 0,1,2
    OMP_NUM_THREADS=1 python benchmarks/bench_data_free.py --out /tmp/dfl_bench --part paper --seeds 0 --shared ../shared/data
    python benchmarks/bench_data_free.py --out /tmp/dfl_bench --summary
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SYNTHETIC = {  # name -> (preset, overrides)
    "crossx_dfl": ("crossx_dfl-synthetic", []),
    "crossx_dfl (paper objective)": ("crossx_dfl-synthetic", ["method.w_bn=0.0", "method.w_proxy_cross=0.0",
                                                              "method.mask_same_class=false"]),
    "classifier only (logits)": ("dfl_classifier_only-synthetic", []),
    "classifier only (probabilities)": ("dfl_classifier_only-synthetic", ["method.classifier_output=probs"]),
    "uni-modal distillation": ("dfl_unimodal-synthetic", []),
    "Gaussian prior": ("dfl_gaussian_prior-synthetic", []),
    "averaging weights": ("dfl_averaging-synthetic", []),
    "meta-data (DeepInversion)": ("dfl_deepinversion-synthetic", []),
    "alternative data": ("dfl_alternative_data-synthetic", []),
    "data-dependent triplet": ("triplet-synthetic", []),
}
TRAINING_FREE = ("classifier only (logits)", "classifier only (probabilities)", "averaging weights")
OVERLAPS = (1.0, 0.8, 0.5, 0.2)
OVERLAP_STEPS = 2000  # the sweep's CrossX-DFL runs use half the preset's schedule, every overlap alike
SYNTHETIC_VAL = {"name": "synthetic", "options": {"num_classes": 16, "photos_per_class": 200,
                                                  "sketches_per_photo": 1, "image_size": 32, "seed": 0},
                 "val_split": "val", "cache_images": True}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _done(out: Path) -> dict[str, dict]:
    path = out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {r["key"]: r for r in rows}


def _record(out: Path, row: dict) -> None:
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def _train_eval(out: Path, key: str, preset: str, overrides: list[str], data: dict | None = None,
                whiches=("best", "last")) -> dict:
    from sbirkit.engine import Trainer, evaluate_run
    from sbirkit.engine.config import apply_overrides, load_preset
    from sbirkit.engine.runlog import read_metrics

    run = out / _slug(key)
    config = apply_overrides(load_preset(preset), ["train.progress=false", *overrides])
    started = time.perf_counter()
    trainer = Trainer(config, run)
    trainer.fit()
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {"key": key, "preset": preset, "overrides": overrides, "train_seconds": round(seconds, 1)}
    method = trainer.method
    if hasattr(method, "estimator_step_count"):
        row["estimator_steps"] = int(method.estimator_step_count)
    row["best_step"] = trainer.best.get("step")
    vals = [r for r in read_metrics(run / "metrics.jsonl") if r.get("split") == "method"]
    if vals:  # the synthesis diagnostics of the last validation (docs/data_free.md)
        row["diagnostics"] = {k: round(v, 4) for k, v in vals[-1].items()
                              if isinstance(v, float) and k.split("/")[0] in ("synthesis", "reference", "generated")}
        row["selection_trace"] = [{k: r.get(k) for k in ("step", "generated/map", "generated/agreement",
                                                          "synthesis/agreement", "reference/map")} for r in vals]
    for which in whiches:
        t0 = time.perf_counter()
        rec = evaluate_run(run, split="test", directions=["sketch2photo"], which=which, save=False,
                           data_overrides=data, batch_size=256)
        m = rec["results"]["sketch2photo"]["metrics"]
        row[which] = {"map": round(m["map"], 4), "p@200": round(m["p@200"], 4), "p@100": round(m["p@100"], 4)}
        row["eval_seconds"] = round(time.perf_counter() - t0, 1)
        row["queries"] = rec["protocol"]["queries"]
    return row


def part_synthetic(out: Path, seeds: list[int], only: list[str] | None) -> None:
    done = _done(out)
    for seed in seeds:
        for name, (preset, overrides) in SYNTHETIC.items():
            if only and name not in only:
                continue
            key = f"synthetic/{name}/seed{seed}"
            if key in done:
                continue
            if name in TRAINING_FREE and seed != seeds[0]:  # nothing random: one run stands for every seed
                first = done.get(f"synthetic/{name}/seed{seeds[0]}")
                if first is not None:
                    _record(out, {**first, "key": key, "copied_from_seed": seeds[0]})
                    continue
            row = _train_eval(out, key, preset, [f"seed={seed}", *overrides])
            row.update(part="synthetic", method=name, seed=seed)
            _record(out, row)
            done[key] = row


def part_overlap(out: Path, seeds: list[int], overlaps: list[float]) -> None:
    done = _done(out)
    for seed in seeds:
        for overlap in overlaps:
            for name, preset, extra in (("crossx_dfl", "crossx_dfl-synthetic", [f"train.steps={OVERLAP_STEPS}"]),
                                        ("classifier only (logits)", "dfl_classifier_only-synthetic", []),
                                        ("classifier only (probabilities)", "dfl_classifier_only-synthetic",
                                         ["method.classifier_output=probs"])):
                key = f"overlap/{name}/{overlap}/seed{seed}"
                if key in done or (name != "crossx_dfl" and seed != seeds[0]):
                    continue
                if overlap == 1.0 and name != "crossx_dfl" and f"synthetic/{name}/seed{seed}" in done:
                    row = {**done[f"synthetic/{name}/seed{seed}"], "key": key, "copied_from": "synthetic"}
                else:
                    row = _train_eval(out, key, preset, [f"seed={seed}", f"method.class_overlap={overlap}", *extra],
                                      whiches=("best", "last"))
                row.update(part="overlap", method=name, seed=seed, overlap=overlap)
                _record(out, row)
                done[key] = row


def _curve(run: Path) -> list[dict]:
    from sbirkit.engine.runlog import read_metrics

    rows = read_metrics(run / "metrics.jsonl")
    start = min(r["time"] for r in rows if "time" in r)
    steps = {r["step"]: r.get("estimator_steps") for r in rows if "estimator_steps" in r}
    return [{"step": r["step"], "val_map": round(r["sketch2photo/map"], 4), "estimator_steps": steps.get(r["step"]),
             "seconds": round(r["time"] - start, 1)} for r in rows if r.get("split") == "val"]


def part_compute(out: Path, seed: int) -> None:
    done = _done(out)
    val = json.dumps(SYNTHETIC_VAL).replace('"', "")
    for name, preset, extra in (("official-style schedule", "crossx_dfl-synthetic-official", ["train.eval_every=20"]),
                                ("pooled, meta-initialised (default)", "crossx_dfl-synthetic",
                                 ["train.eval_every=200"])):
        key = f"compute/{name}/seed{seed}"
        if key in done:
            continue
        row = _train_eval(out, key, preset, [f"seed={seed}", f"eval.data={val}", "eval.select=sketch2photo/map",
                                             *extra], whiches=("last",))
        row.update(part="compute", method=name, seed=seed, curve=_curve(out / _slug(key)))
        _record(out, row)


def _fused(out: Path, key: str, student_run: Path, classifier_run: Path, data: dict | None = None,
           which: str = "best") -> dict:
    """CrossX-DFL fused with classifier only: each modality's two L2-normalised embeddings
    concatenated (equal weight), cosine; test sketch -> photo mAP@all and P@200."""
    from sbirkit.engine import evaluate_run, inference
    from sbirkit.engine.config import merge, read_config
    from sbirkit.eval import evaluate_retrieval

    started = time.perf_counter()
    emb = {}
    for name, run in (("student", student_run), ("classifier", classifier_run)):
        rec = evaluate_run(run, split="test", directions=["sketch2photo"], which=which, save=False,
                           data_overrides=data, batch_size=256, return_embeddings=True)
        emb[name] = rec["embeddings"]
    config = merge(read_config(Path(student_run) / "config.yaml")["data"], data or {})
    ds = inference.build_dataset(config)
    ls = np.array([x.class_index for x in ds.sketches("test")])
    lp = np.array([x.class_index for x in ds.photos("test")])
    fuse = {m: np.concatenate([np.asarray(emb["student"][m]), np.asarray(emb["classifier"][m])], 1) / np.sqrt(2)
            for m in ("sketch", "photo")}
    r = evaluate_retrieval(fuse["sketch"], fuse["photo"], ls, lp, metrics=["map", "p@200", "p@100"])
    m = r.metrics
    return {"key": key, "student_run": str(student_run), "classifier_run": str(classifier_run),
            which: {"map": round(m["map"], 4), "p@200": round(m["p@200"], 4), "p@100": round(m["p@100"], 4)},
            "eval_seconds": round(time.perf_counter() - started, 1), "train_seconds": 0.0}


def _training_free_run(out: Path, name: str, seeds: list[int]) -> Path:
    """The run folder of a training-free row (one run stands for every seed): the first seed's,
    else seed 0's (a later call with --seeds 1,2 fuses with the run made under seed 0)."""
    first = out / _slug(f"{name}/seed{seeds[0]}")
    return first if first.is_dir() else out / _slug(f"{name}/seed0")


def part_real(out: Path, shared: Path, seeds: list[int], only: list[str] | None) -> None:
    from sbirkit.engine.config import load_preset

    done = _done(out)
    common = [f"data.root={shared}", f"method.sketch_teacher.weights={shared / 'doodlenet' / 'doodleNet-model.h5'}"]
    # the diagnostics' real reference: CIFAR-10 training photos and Quick, Draw! training drawings
    # (what the two teachers' kinds of images look like), read for diagnosis only
    reference = (f"method.reference={{data: {{name: combined, root: {shared}, options: {{sketches: {{name: "
                 "quickdraw-ndjson, root: quickdraw_raw, options: {classes: [airplane, car, bird, cat, dog, frog, "
                 "horse, cruise ship, sailboat, speedboat, truck]}}, photos: {name: image-folder, root: cifar10}, "
                 "class_map: {automobile: car, ship: [cruise ship, sailboat, speedboat]}, sketch_splits: {train: 0.6, "
                 "test: 0.4}, seed: 0}}, split: train, size: 256}")
    # alternative data's substitute: the paper-like preset's (14 synthetic classes no teacher has), at 48 px
    substitute = load_preset("dfl_alternative_data-cifar9_quickdraw9")["method"]["substitute"]
    substitute["options"]["image_size"] = 48
    rows = (("classifier only (logits)", "dfl_classifier_only-doodlenet_effnet", [], True),
            ("classifier only (probabilities)", "dfl_classifier_only-doodlenet_effnet",
             ["method.classifier_output=probs"], True),
            ("classifier only (185 classes, imagenet-quickdraw)", "dfl_classifier_only-quickdraw_imagenet",
             ["data.options.image_size=48", "method.image_size=48"], True),
            ("crossx_dfl (conv)", "crossx_dfl-doodlenet_effnet", [], False),
            ("crossx_dfl (strokes)", "crossx_dfl-doodlenet_effnet", ["method.sketch_estimator=strokes"], False),
            ("crossx_dfl (conv, DoodleNet sketch student)", "crossx_dfl-doodlenet_effnet",
             ["model.backbone=doodlenet", "model.pretrained=false",
              f"model.weights={shared / 'doodlenet' / 'doodleNet-model.h5'}"], False),
            # the baselines on the real teachers (averaging weights needs one architecture: DoodleNet and
            # EfficientNet-Lite0 are refused with a one-line error); the students, schedule and selection
            # of crossx_dfl-doodlenet_effnet, as the paper-like baselines take crossx_dfl-cifar9_quickdraw9's
            ("uni-modal distillation", "crossx_dfl-doodlenet_effnet", ["method.variant=unimodal"], False),
            ("alternative data", "crossx_dfl-doodlenet_effnet",
             ["method.variant=alternative_data", f"method.substitute={json.dumps(substitute)}"], False),
            ("Gaussian prior", "dfl_gaussian_prior-doodlenet_effnet", [], False),
            # DeepInversion's pixel steps go through both teachers (EfficientNet at 96 px): 5 per round, the
            # estimator steps CrossX-DFL has here (the paper-like row takes 20: about 1 h on one CPU core here)
            ("meta-data (DeepInversion)", "crossx_dfl-doodlenet_effnet",
             ["method.variant=deepinversion", "method.estimator_steps=5",
              "method.inner_lr=0.1", "method.w_bn=1.0", "method.w_tv=1.0"], False))
    for seed in seeds:
        for name, preset, extra, free in rows:
            if only and name not in only:
                continue
            key = f"real/{name}/seed{seed}"
            if key in done or (free and seed != seeds[0]):
                continue
            # each evaluation embeds 9,000 CIFAR-10 photos with EfficientNet (0.5-1.5 min on one busy core)
            select = [] if free else [reference, "eval.select=generated/map"]
            row = _train_eval(out, key, preset, [*common, f"seed={seed}", *select, *extra],
                              whiches=("best",) if free else ("best", "last"))
            row.update(part="real", method=name, seed=seed)
            _record(out, row)
            done[key] = row
        fused = f"real/fused with classifier only/seed{seed}"
        student = out / _slug(f"real/crossx_dfl (conv)/seed{seed}")
        classifier = _training_free_run(out, "real/classifier only (probabilities)", seeds)
        # the student's last checkpoint, what the preset selects (a row fused from best.pt, recorded
        # before the preset took the last one, is redone: the later row replaces it in the tables)
        if "last" not in done.get(fused, {}) and (not only or "fused with classifier only" in only) and \
                (student / "last.pt").is_file() and (classifier / "best.pt").is_file():
            row = _fused(out, fused, student, classifier, {"root": str(shared)}, which="last")
            row.update(part="real", method="fused with classifier only", seed=seed)
            _record(out, row)
            done[fused] = row


def part_last(out: Path, part: str) -> None:
    """Evaluate ``last.pt`` of the trained runs of ``part`` (those with diagnostics; a training-free
    run's two checkpoints are one) recorded with ``best`` only (evaluation,
    no training; the first real-teacher rows evaluated best only) and append the completed row
    (a later row of the same key replaces the earlier one in every table): the best-vs-last
    comparison behind the presets' ``eval.select``."""
    from sbirkit.engine import evaluate_run

    for key, row in _done(out).items():
        run = out / _slug(key)
        if row.get("part") != part or "last" in row or "diagnostics" not in row or not (run / "last.pt").is_file():
            continue
        t0 = time.perf_counter()
        rec = evaluate_run(run, split="test", directions=["sketch2photo"], which="last", save=False, batch_size=256)
        m = rec["results"]["sketch2photo"]["metrics"]
        row = {**row, "last": {"map": round(m["map"], 4), "p@200": round(m["p@200"], 4), "p@100": round(m["p@100"], 4)},
               "last_eval_seconds": round(time.perf_counter() - t0, 1)}
        _record(out, row)


PAPER = {  # name -> (preset, overrides, training-free)
    "classifier only (probabilities)": ("dfl_classifier_only-cifar9_quickdraw9", [], True),
    "classifier only (logits)": ("dfl_classifier_only-cifar9_quickdraw9", ["method.classifier_output=logits"], True),
    "averaging weights": ("dfl_averaging-cifar9_quickdraw9", [], True),
    "crossx_dfl (strokes)": ("crossx_dfl-cifar9_quickdraw9", [], False),
    "crossx_dfl (conv)": ("crossx_dfl-cifar9_quickdraw9", ["method.sketch_estimator=conv"], False),
    "uni-modal distillation": ("dfl_unimodal-cifar9_quickdraw9", [], False),
    "Gaussian prior": ("dfl_gaussian_prior-cifar9_quickdraw9", [], False),
    "meta-data (DeepInversion)": ("dfl_deepinversion-cifar9_quickdraw9", [], False),
    "alternative data": ("dfl_alternative_data-cifar9_quickdraw9", [], False),
    # one setting of the preset changed at a time (chosen on the diagnostics' reference mAP, not the test)
    "crossx_dfl (strokes, in-place estimators)": ("crossx_dfl-cifar9_quickdraw9", ["method.meta_init=false"], False),
    "crossx_dfl (strokes, random student init)": ("crossx_dfl-cifar9_quickdraw9", ["method.student_init=none"], False),
    "crossx_dfl (strokes, no BN/image priors)": ("crossx_dfl-cifar9_quickdraw9",
                                                 ["method.w_bn=0.0", "method.w_tv=0.0", "method.w_l2=0.0"], False),
    "crossx_dfl (strokes, shared class anchors)": ("crossx_dfl-cifar9_quickdraw9", ["method.w_anchor=1.0"], False),
    "crossx_dfl (strokes, agreeing pairs only)": ("crossx_dfl-cifar9_quickdraw9", ["method.pool_filter=agree"], False),
}


def paper_teachers(out: Path, shared: Path, given: Path | None) -> dict[str, Path]:
    """The paper-like teachers: ``given/<preset>`` if there, else trained once into OUT/teachers."""
    from sbirkit.engine import Trainer
    from sbirkit.engine.config import apply_overrides, load_preset

    runs = {}
    for preset in ("classifier-cifar9-photo", "classifier-quickdraw9-sketch"):
        run = (given or out / "teachers") / preset
        if not (run / "best.pt").is_file():
            config = apply_overrides(load_preset(preset), [f"data.root={shared}", "train.progress=false"])
            Trainer(config, run).fit()
        runs[preset] = run
    return runs


def part_paper(out: Path, shared: Path, seeds: list[int], only: list[str] | None, teachers: Path | None,
               extra: list[str] | None = None) -> None:
    done = _done(out)
    runs = paper_teachers(out, shared, teachers)
    common = [f"data.root={shared}", f"method.photo_teacher={{run: {runs['classifier-cifar9-photo']}}}",
              f"method.sketch_teacher={{run: {runs['classifier-quickdraw9-sketch']}}}", *(extra or [])]
    reference = (f"method.reference={{data: {{name: combined, root: {shared}, options: {{sketches: {{name: "
                 "quickdraw-ndjson, root: quickdraw_raw, options: {classes: [airplane, car, bird, cat, dog, frog, "
                 "horse, cruise ship, sailboat, speedboat, truck]}}, photos: {name: image-folder, root: cifar10}, "
                 "class_map: {automobile: car, ship: [cruise ship, sailboat, speedboat]}, sketch_splits: {train: 0.6, "
                 "test: 0.4}, seed: 0}}, split: train, size: 512}")
    for seed in seeds:
        for name, (preset, overrides, free) in PAPER.items():
            if only and name not in only:
                continue
            key = f"paper/{name}/seed{seed}"
            if key in done or (free and seed != seeds[0]):
                continue
            select = [] if free else [reference, "eval.select=generated/map"]
            row = _train_eval(out, key, preset, [*common, f"seed={seed}", *select, *overrides],
                              whiches=("best",) if free else ("best", "last"))
            row.update(part="paper", method=name, seed=seed)
            _record(out, row)
            done[key] = row
        for student_name in ("crossx_dfl (strokes)", "crossx_dfl (conv)"):
            fused = f"paper/{student_name} fused with classifier only/seed{seed}"
            student = out / _slug(f"paper/{student_name}/seed{seed}")
            classifier = _training_free_run(out, "paper/classifier only (probabilities)", seeds)
            if fused in done or (only and f"{student_name} fused with classifier only" not in only):
                continue
            if (student / "last.pt").is_file() and (classifier / "best.pt").is_file():
                row = _fused(out, fused, student, classifier, {"root": str(shared)}, which="last")
                row.update(part="paper", method=f"{student_name} fused with classifier only", seed=seed)
                _record(out, row)
                done[fused] = row


# ---- tables -------------------------------------------------------------------------------------------
def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def summary(out: Path) -> str:
    from sbirkit.eval.chance import expected_ap

    rows = list(_done(out).values())
    lines = []
    syn = [r for r in rows if r.get("part") == "synthetic"]
    if syn:
        seeds = sorted({r["seed"] for r in syn})
        ref = {r["seed"]: r for r in syn if r["method"] == "crossx_dfl"}
        lines += [f"Synthetic (16 classes, 640 sketch queries x 640 photos; seeds {seeds}; mean ± sd over seeds)", "",
                  "| method | mAP@all (best) | P@200 (best) | mAP@all (last) | CrossX-DFL − method, mAP@all (best), "
                  "paired | estimator steps | train s |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name in SYNTHETIC:
            rs = [r for r in syn if r["method"] == name]
            if not rs:
                continue
            diffs = [ref[r["seed"]]["best"]["map"] - r["best"]["map"] for r in rs if r["seed"] in ref]
            diff = "-" if name == "crossx_dfl" else _mean_sd(diffs) + (f" ({sum(d > 0 for d in diffs)}/{len(diffs)} > 0)"
                                                                      if diffs else "")
            lines.append(f"| {name} | {_mean_sd([r['best']['map'] for r in rs])} | "
                         f"{_mean_sd([r['best']['p@200'] for r in rs])} | "
                         f"{_mean_sd([r['last']['map'] for r in rs if 'last' in r])} | {diff} | "
                         f"{rs[0].get('estimator_steps', '-')} | {statistics.mean(r['train_seconds'] for r in rs):.0f} |")
        lines.append("")
    ov = [r for r in rows if r.get("part") == "overlap"]
    if ov:
        lines += ["Class overlap (retrieval over the union of the two teachers' classes)", "",
                  "| overlap | CrossX-DFL mAP@all (best) | (last) | classifier only (logits) | (probabilities) |",
                  "|---:|---:|---:|---:|---:|"]
        for o in sorted({r["overlap"] for r in ov}, reverse=True):
            def get(name, which="best", o=o):
                vals = [r[which]["map"] for r in ov if r["method"] == name and r["overlap"] == o]
                return _mean_sd(vals)
            lines.append(f"| {o:.0%} | {get('crossx_dfl')} | {get('crossx_dfl', 'last')} | "
                         f"{get('classifier only (logits)')} | {get('classifier only (probabilities)')} |")
        lines.append("")
    comp = [r for r in rows if r.get("part") == "compute"]
    if comp:
        lines += ["Compute", "", "| schedule | estimator steps | student steps | train s | val mAP curve (step: "
                  "estimator steps, val mAP, s) | test mAP@all (last) |", "|---|---:|---:|---:|---|---:|"]
        for r in comp:
            curve = "; ".join(f"{c['step']}: {c['estimator_steps']}, {c['val_map']:.3f}, {c['seconds']:.0f}"
                              for c in r["curve"])
            lines.append(f"| {r['method']} | {r.get('estimator_steps')} | {r['curve'][-1]['step'] if r['curve'] else '-'}"
                         f" | {r['train_seconds']:.0f} | {curve} | {r['last']['map']:.3f} |")
        official = next((r for r in comp if r["method"].startswith("official")), None)
        fast = next((r for r in comp if r["method"].startswith("pooled")), None)
        if official and fast and official["curve"] and fast["curve"]:
            target = official["curve"][-1]["val_map"]
            reach = next((c for c in fast["curve"] if c["val_map"] >= target), None)
            if reach:
                ratio = official.get("estimator_steps", 0) / max(1, reach["estimator_steps"] or 1)
                lines.append(f"\nThe default schedule first reaches the official-style schedule's final val mAP "
                             f"({target:.3f}) at step {reach['step']}: {reach['estimator_steps']} estimator steps "
                             f"({ratio:.0f}x fewer than {official.get('estimator_steps')}), {reach['seconds']:.0f} s "
                             f"vs {official['train_seconds']:.0f} s.")
            else:
                lines.append(f"\nThe default schedule never reaches the official-style final val mAP {target:.3f}.")
        lines.append("")
    for part, title, reference in (
            ("paper", "Paper-like teachers (small BatchNorm CNNs trained on the nine retrieval classes; 101 held-out "
                      "Quick, Draw! sketches x 9,000 CIFAR-10 test photos, 32 px)", "classifier only (probabilities)"),
            ("real", "Real teachers (DoodleNet + EfficientNet-Lite0; 101 held-out Quick, Draw! sketches x 9,000 "
                     "CIFAR-10 test photos, 48 px)", "classifier only (probabilities)")):
        sub = [r for r in rows if r.get("part") == part]
        if sub:
            lines += [title, "", _paired_table(sub, reference, expected_ap(1000, 9000)), ""]
    return "\n".join(lines)


def _paired_table(rows: list[dict], reference: str, chance: float | None = None) -> str:
    """BENCHMARKS.md's issue-19 table: per seed and mean ± sd of the evaluated checkpoint's
    mAP@all (``last`` where recorded, else ``best``), the best by generated/map beside it, P@200,
    the paired difference to ``reference`` (a training-free row stands for every seed), the
    difference to ``chance`` (seeds more than 0.03 above it), and the synthesis diagnostics of
    the last validation (docs/data_free.md), averaged over seeds."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    ref = next((r for r in rows if r["method"] == reference), None)
    out = ["| method | seeds | mAP@all per seed | mean ± sd | best by generated/map |  P@200 | − classifier only, "
           "paired | − chance | teachers' agreement (chance) | balance | probe photo / sketch | reference mAP | "
           "train s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in methods:
        rs = sorted((r for r in rows if r["method"] == name), key=lambda r: r["seed"])
        free = "diagnostics" not in rs[0] and "student_run" not in rs[0]
        main = [r.get("last") or r["best"] for r in rs]
        maps = [m["map"] for m in main]
        selected = [r["best"]["map"] for r in rs if "diagnostics" in r and "best" in r]
        diff = "-"
        if ref is not None and name != reference:
            values = [v - ref["best"]["map"] for v in maps]
            diff = _mean_sd(values) + f" ({sum(v > 0 for v in values)}/{len(values)} > 0)"
        above = "-"
        if chance is not None:
            values = [v - chance for v in maps]
            above = _mean_sd(values) + ("" if free else f" ({sum(v > 0.03 for v in values)}/{len(values)} > 0.03)")
        diag = [r.get("diagnostics", {}) for r in rs]

        def avg(key, diag=diag):
            vals = [d[key] for d in diag if d.get(key) is not None and d[key] == d[key]]
            return f"{statistics.mean(vals):.2f}" if vals else "-"

        seeds = "training-free" if free else ",".join(str(r["seed"]) for r in rs)
        out.append(f"| {name} | {seeds} | {', '.join(f'{v:.3f}' for v in maps)} | {_mean_sd(maps)} | "
                   f"{_mean_sd(selected)} | {_mean_sd([m['p@200'] for m in main])} | {diff} | {above} | "
                   f"{avg('synthesis/agreement')} ({avg('synthesis/agreement_chance')}) | "
                   f"{avg('synthesis/balance')} | {avg('synthesis/probe_photo')} / {avg('synthesis/probe_sketch')} | "
                   f"{avg('reference/map')} | {statistics.mean(r['train_seconds'] for r in rs):.0f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--part", action="append", choices=["synthetic", "overlap", "compute", "real", "paper",
                                                            "real_last"],
                        default=[])
    parser.add_argument("--teachers", type=Path, default=None, help="paper: a folder holding the two paper-like "
                        "teacher runs (classifier-cifar9-photo, classifier-quickdraw9-sketch); default OUT/teachers")
    parser.add_argument("--extra", action="append", default=[], help="paper: an override for every run (repeatable)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", action="append", help="synthetic, real, paper: only these method names (repeatable)")
    parser.add_argument("--overlaps", default=",".join(map(str, OVERLAPS)))
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    for part in args.part:
        if part == "synthetic":
            part_synthetic(args.out, seeds, args.only)
        elif part == "overlap":
            part_overlap(args.out, seeds, [float(o) for o in args.overlaps.split(",")])
        elif part == "compute":
            part_compute(args.out, seeds[0])
        elif part == "real":
            part_real(args.out, args.shared.resolve(), seeds, args.only)
        elif part == "real_last":
            part_last(args.out, "real")
        elif part == "paper":
            part_paper(args.out, args.shared.resolve(), seeds, args.only, args.teachers, args.extra)
    if args.summary or not args.part:
        print(summary(args.out))


if __name__ == "__main__":
    main()
