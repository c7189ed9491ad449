"""Adaptive fine-grained SBIR benchmarks (Bhunia et al., ECCV 2022): ours against every baseline.

Every model trains through the engine (``sbirkit.engine.train``) from an ``adaptive_fg`` preset and
the overrides of ``BASELINES`` (benchmarks/adaptive_baselines.py). Meta-learned models (ours, MAML,
ANIL) and "baseline + regularisers" start from the trained no-adaptation baseline of the same seed
(``method.init_from``; the paper's meta-training builds on its supervised baseline), so they get
the baseline's steps and then their own; the others train from scratch. Every number comes from the
adaptation protocol (:class:`sbirkit.engine.adaptation.AdaptationProtocol`: tasks of the held-out
categories or users, 5 seeded support draws, the same draws for every model), so differences are
paired by training seed. Parts (``--parts``):

* ``synthetic``: category-level tasks (adaptive_fg-synthetic), k = 1, 5, 10 (``--ks``), ours against
  its own model without the test-time step, ours with the paper's regularisers (the preset's
  ``-paper`` twin), no adaptation, head fine-tuning, fine-tuning everything (steps and learning
  rate of both tuned on the validation categories), the baseline trained as long, MAML, ANIL
  (fixed margin), and the upper bound trained on the new categories' training split (``--variants``
  picks rows; rows that would train ours' own configuration again are dropped);
* ``synthetic_users``: the same on user-level tasks (adaptive_fg-synthetic_users);
* ``ablation``: category level, k = 5, in two halves: on the preset's ``-paper`` twin its regularisers
  (all on, each removed, all removed -- the shipped preset has none to remove), on the preset as
  shipped fixed margin and inner steps 0, 2, 3 (:func:`ablation_rows`); with the collapse monitors'
  values at the end of each run;
* ``qmul``: QMUL-V1 shoes -> chairs and chairs -> shoes (adaptive_fg-qmul_v1, _chairs), k = 5, 10,
  ``--qmul-draws`` (20) support draws, ours against no adaptation, head fine-tuning, the baseline
  trained as long, ours without its test-time step and ours without / with L_D (needs ``--shared``);
* ``qmul_features``: F of the QMUL-V1 presets (4 x 4 grid of the stage-5 map) against the pooled final
  map, baseline and ours, by validation Acc@1 only (issue 18, item 7; needs ``--shared``);
* ``cost``: adaptation time per task and memory over 1,000 adaptations (tiny_cnn and the cached
  EfficientNet-Lite0 model when a QMUL run exists).

Runs are kept under ``--out`` (a finished run is reused, so an interrupted benchmark continues);
``results.json`` and ``results.md`` collect the tables.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_adaptive.py --out runs/bench_adaptive --seeds 0 1 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_adaptive.py --parts qmul --shared ../shared/data

Every table row of a trained model also reports the collapse monitors of its run (docs/adaptive_fg.md):
the effective rank of F's features and the photo spread at the end of training, against the
values at the start (the baseline it starts from).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from adaptive_baselines import BASELINES, SUPERVISED

from sbirkit.engine import apply_overrides, evaluate_run, load_preset, load_run, train
from sbirkit.engine.adapt_run import protocol_for_run
from sbirkit.engine.adaptation import draw_tasks, support_batch
from sbirkit.engine.config import changed_keys, read_config

METRICS = ("acc@1", "acc@5", "acc@10")
DRAWS = 5
# ours is meta-trained with k_support = 5; ours_k1 / ours_k10 with the k they are evaluated at (the
# paired differences use the model whose training k matches: "ours (k-matched)")
VARIANTS = {**BASELINES, "ours_k1": {"overrides": ["method.k_support=1"], "strategy": "meta", "from_baseline": True},
            "ours_k10": {"overrides": ["method.k_support=10"], "strategy": "meta", "from_baseline": True},
            # ours' own model without its test-time step: what the step itself adds
            "ours_without_step": {"overrides": [], "strategy": "none", "from_baseline": True},
            "ours_k1_without_step": {"overrides": ["method.k_support=1"], "strategy": "none", "from_baseline": True},
            "ours_k10_without_step": {"overrides": ["method.k_support=10"], "strategy": "none", "from_baseline": True},
            # ours without the regularisers (the ablation's row, in the main table)
            "ours_no_reg": {"overrides": ["method.regularizers=[]"], "strategy": "meta", "from_baseline": True},
            # ours without L_D (the preset's other regularisers kept; resolved per preset by without())
            "ours_no_d": {"overrides": [], "without": "d", "strategy": "meta", "from_baseline": True},
            # its counterpart: ours with L_D added to the preset's regularisers (at the method's w_d, 0.1)
            "ours_with_d": {"overrides": [], "with": "d", "strategy": "meta", "from_baseline": True},
            # the baseline trained as long as the runs that start from it: what the extra steps alone give
            "baseline_longer": {"overrides": SUPERVISED, "strategy": "none", "from_baseline": True},
            # ours with the paper's regularisers (the preset's "-paper" twin), from the same baseline
            "ours_paper": {"overrides": [], "paper": True, "strategy": "meta", "from_baseline": True}}
# the synthetic tables' rows (issue 18); --variants adds others of VARIANTS (ours_k1, ours_k10, maml_fo, ...).
# Rows that resolve to ours' own run (ours_no_reg, ours_no_d when the preset has no regulariser) are dropped.
MAIN = ["ours", "ours_without_step", "ours_paper", "ours_no_reg", "ours_no_d", "no_adaptation", "finetune_head",
        "finetune_all", "baseline_longer", "maml", "anil", "upper_bound"]
PAPER_KEYS = ("regularizers", "w_d", "w_c", "w_s", "w_ud", "c_mode")
ABLATION_PRESET = "adaptive_fg-synthetic"
ABLATION_FIXED = [  # (row, overrides of the preset) -- ours as shipped with one thing changed
    ("fixed margin (0.2)", ["method.margin=fixed"]),
    ("inner steps 0", ["method.inner_steps=0"]),
    ("inner steps 2", ["method.inner_steps=2"]),
    ("inner steps 3", ["method.inner_steps=3"]),
]
NAMES = {"d": "L_D", "c": "L_C", "s": "L_S", "ud": "L_ud"}


def preset_regularizers(preset: str) -> list[str]:
    return list(load_preset(preset)["method"].get("regularizers") or [])


def regularizers_override(regs: list[str]) -> str:
    return f"method.regularizers=[{', '.join(regs)}]"


def _names(regs: list[str]) -> str:
    return " + ".join(NAMES[r] for r in regs) or "no regulariser"


def ablation_rows(preset: str = ABLATION_PRESET) -> list[tuple[str, list[str], str]]:
    """``(row, overrides of preset, the row it is paired with)``, in two halves. The regulariser half
    on the preset's ``-paper`` twin (the shipped presets have no regulariser to remove): the paper's
    set, each regulariser removed, all removed. The rest on the preset as shipped: ours, each of
    its own regularisers removed (if any), fixed margin, inner steps 0/2/3. Every row is an override
    of ``preset``, so a row that is another table's model (ours, ``ours_paper``) reuses its runs."""
    regs = preset_regularizers(preset)
    ours = f"ours as shipped ({_names(regs)}, learned margin, 1 inner step)"
    rows = [(ours, [], ours)]
    rows += [(f"ours − {NAMES[r]}", [regularizers_override([x for x in regs if x != r])], ours) for r in regs]
    if regs:
        rows.append(("ours, no regulariser", [regularizers_override([])], ours))
    rows += [(label, overrides, ours) for label, overrides in ABLATION_FIXED]
    paper = paper_overrides(preset)
    paper_regs = list(load_preset(f"{preset}-paper")["method"].get("regularizers") or []) if paper else []
    if paper_regs:
        keep = [o for o in paper if not o.startswith("method.regularizers=")]
        full = f"paper's regularisers ({_names(paper_regs)})"
        rows.append((full, paper, full))
        rows += [(f"paper's − {NAMES[r]}", [*keep, regularizers_override([x for x in paper_regs if x != r])], full)
                 for r in paper_regs]
        # all removed: with no regulariser the -paper weights act on nothing, so this is the preset's own
        # configuration without regulariser (ours as shipped when it ships none: the same runs)
        rows.append(("paper's − all" + (" (= ours as shipped)" if not regs else ""),
                     [regularizers_override([])] if regs else [], full))
    return rows


def paper_overrides(preset: str) -> list[str]:
    """The overrides that turn ``preset`` into its ``-paper`` twin (the paper's regularisers)."""
    ours, paper = load_preset(preset)["method"], load_preset(f"{preset}-paper")["method"]
    out = []
    for key in PAPER_KEYS:
        if paper.get(key) != ours.get(key):
            value = paper.get(key)
            out.append(regularizers_override(list(value or [])) if key == "regularizers" else f"method.{key}={value}")
    return out


def variant_overrides(spec: dict[str, Any], preset: str) -> list[str]:
    """A variant's overrides; ``without`` drops one regulariser from the preset's own set, ``with``
    adds one to it; ``paper`` takes the regulariser options of the preset's ``-paper`` twin."""
    if spec.get("paper"):
        return [*spec["overrides"], *paper_overrides(preset)]
    if "with" in spec:
        regs = preset_regularizers(preset)
        return [*spec["overrides"], regularizers_override([*regs, spec["with"]] if spec["with"] not in regs else regs)]
    if "without" not in spec:
        return list(spec["overrides"])
    return [*spec["overrides"], regularizers_override([r for r in preset_regularizers(preset)
                                                       if r != spec["without"]])]


def distinct_variants(variants: list[str], preset: str) -> list[str]:
    """``variants`` without those whose run, test-time strategy and baseline are another's (e.g.
    ours_no_reg when the preset ships no regulariser): the same model would be listed twice."""
    seen, out = set(), []
    for v in variants:
        spec = VARIANTS[v]
        config = apply_overrides(load_preset(preset), variant_overrides(spec, preset))
        key = (json.dumps(config, sort_keys=True, default=str), spec["strategy"], bool(spec.get("from_baseline")))
        if key in seen:
            continue
        seen.add(key)
        out.append(v)
    return out
FINETUNE_GRID = {"steps": (1, 3, 10, 30), "adam": (1e-4, 1e-3, 1e-2), "sgd": (1e-3, 1e-2, 1e-1)}
MONITORS = ("effective_rank", "photo_spread", "feature_spread", "modality_cosine", "d_accuracy")


def machine() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
                 platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
            "date": dt.date.today().isoformat(), "command": " ".join(sys.argv)}


# ---- runs -------------------------------------------------------------------------------------------------
def run_dir(out: Path, preset: str, overrides: list[str], seed: int) -> Path:
    key = hashlib.sha256(json.dumps([preset, sorted(overrides)]).encode()).hexdigest()[:10]
    return out / "runs" / f"{preset}-{key}-s{seed}"


def trained(out: Path, preset: str, overrides: list[str], seed: int, extra: list[str],
            from_baseline: bool = False, common: list[str] | None = None) -> tuple[Path, float]:
    """Train (or reuse) a run; returns its folder and training seconds. ``from_baseline``: start from
    the no-adaptation baseline of the same seed (trained first; method.init_from). ``common``:
    overrides of the run *and* of its baseline (e.g. another F), part of both runs' folder names."""
    common = list(common or [])
    if from_baseline:
        base, _ = trained(out, preset, [*common, *SUPERVISED], seed, extra)
        overrides = [*overrides, f"method.init_from={base}"]
    overrides = [*common, *overrides]
    folder = run_dir(out, preset, overrides, seed)
    done = folder / "done.json"
    # train.init_from=null: the presets name their own baseline; here the baseline is the row above
    config = apply_overrides(load_preset(preset), ["train.init_from=null", *overrides, *extra, f"seed={seed}",
                                                   "train.progress=false"])
    if done.is_file():
        # reuse a finished run only if it was trained with this very config (a preset or method default
        # may have changed since); else keep it aside and train again
        if not changed_keys(read_config(folder / "config.yaml"), {**config, "run_dir": str(folder)}):
            return folder, json.loads(done.read_text())["seconds"]
        stale = folder.with_name(f"{folder.name}.stale-{int(time.time())}")
        folder.rename(stale)
        print(f"{folder.name}: config changed since it was trained; kept as {stale.name}, training again", flush=True)
    started = time.perf_counter()
    train(config, folder)
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"seconds": seconds, "overrides": overrides, "seed": seed}))
    print(f"trained {folder.name} in {seconds:.0f} s", flush=True)
    return folder, seconds


def scored(folder: Path, k: int, strategy: str, *, split: str = "test", groups: list[str] | None = None,
           steps: int | None = None, lr: float | None = None, optimizer: str | None = None,
           draws: int = DRAWS) -> dict[str, Any]:
    """The protocol's macro/micro means (and per draw), cached in the run folder."""
    tag = f"{split}-k{k}-{strategy}-{steps}-{lr}-{optimizer}-{draws}-{','.join(groups or [])}"
    cache = folder / f"bench-{hashlib.sha256(tag.encode()).hexdigest()[:10]}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    protocol = protocol_for_run(folder, k=k, strategy=strategy, steps=steps, lr=lr, optimizer=optimizer,
                                groups=groups, draws=draws, device="cpu")
    report = evaluate_run(folder, split=split, protocol=protocol, save=False, device="cpu")
    p = report["protocol"]
    result = {"macro": report["results"]["sketch2photo"]["metrics"],
              "micro": report["results"]["sketch2photo (micro)"]["metrics"],
              "macro_per_draw": p["macro_per_draw"], "groups": p["groups"], "adapt_seconds": p["adapt_seconds"],
              "margin": p["margin"], "tag": tag}
    cache.write_text(json.dumps(result))
    return result


def monitors(folder: Path) -> dict[str, Any]:
    """The collapse monitors of a run's first and last validation (docs/adaptive_fg.md), and the
    validation Acc@1 of its best.pt."""
    path = folder / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    val = [r for r in records if r.get("split") and f"monitor/{MONITORS[0]}" in r]
    if not val:
        return {}
    best = max(val, key=lambda r: (r.get("sketch2photo/acc@1") or -1.0, -r["step"]))
    return {"start": {m: val[0].get(f"monitor/{m}") for m in MONITORS},
            "final": {m: val[-1].get(f"monitor/{m}") for m in MONITORS},
            "best_step": best["step"], "best_val_acc@1": best.get("sketch2photo/acc@1"),
            "warnings": sum(1 for r in records if r.get("warning"))}


def validation_groups(folder: Path) -> list[str]:
    """The groups model selection adapted on: method.val_groups, else the meta-train groups."""
    method, config = load_run(folder)
    o = config["method"]
    if o.get("val_groups"):
        return list(o["val_groups"])
    from sbirkit.engine import inference

    dataset = inference.build_dataset(config["data"])
    known = dataset.classes if o.get("group_by", "class") == "class" else dataset.users
    return [g for g in known if g not in set(o.get("test_groups") or [])]


def tune_finetuning(folder: Path, strategy: str, k: int = 5) -> dict[str, Any]:
    """Optimiser, steps and learning rate of a fine-tuning baseline, chosen on the validation groups' tasks."""
    groups = validation_groups(folder)
    rows = []
    for optimizer in ("adam", "sgd"):
        for steps in FINETUNE_GRID["steps"]:
            for lr in FINETUNE_GRID[optimizer]:
                r = scored(folder, k, strategy, split="val", groups=groups, steps=steps, lr=lr, optimizer=optimizer,
                           draws=3)
                rows.append({"optimizer": optimizer, "steps": steps, "lr": lr, "val_acc@1": r["macro"]["acc@1"]})
    none = scored(folder, k, "none", split="val", groups=groups, draws=3)["macro"]["acc@1"]
    best = max(rows, key=lambda r: (round(r["val_acc@1"], 6), -r["steps"], -r["lr"]))
    return {"best": best, "grid": rows, "val_acc@1_no_adaptation": none}


# ---- tables ---------------------------------------------------------------------------------------------------
def _ms(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def paired(ours: list[float], other: list[float]) -> str:
    d = np.asarray(ours) - np.asarray(other)
    return f"{d.mean():+.3f} ± {d.std(ddof=1) if len(d) > 1 else 0.0:.3f} ({int((d > 0).sum())}/{len(d)} seeds > 0)"


def suite(out: Path, name: str, preset: str, variants: list[str], ks: tuple[int, ...], seeds: list[int],
          extra: list[str], draws: int = DRAWS) -> dict[str, Any]:
    """Train every variant for every seed and score it at every k (fine-tuning tuned on validation)."""
    results: dict[str, Any] = {"preset": preset, "ks": list(ks), "seeds": seeds, "draws": draws, "variants": {}}
    tuned: dict[str, Any] = {}
    for v in distinct_variants(variants, preset):
        spec = VARIANTS[v]
        rows = {str(k): [] for k in ks}
        seconds, monitored = [], []
        for seed in seeds:
            folder, secs = trained(out, preset, variant_overrides(spec, preset), seed, extra,
                                   spec.get("from_baseline", False))
            seconds.append(secs)
            monitored.append(monitors(folder))
            kwargs = {}
            if spec["strategy"].startswith("finetune"):
                if v not in tuned:
                    tuned[v] = tune_finetuning(folder, spec["strategy"])
                best = tuned[v]["best"]
                kwargs = {"steps": best["steps"], "lr": best["lr"], "optimizer": best["optimizer"]}
            for k in ks:
                rows[str(k)].append(scored(folder, k, spec["strategy"], draws=draws, **kwargs))
        results["variants"][v] = {"scores": rows, "train_seconds": seconds, "tuned": tuned.get(v),
                                  "monitors": monitored}
        print(f"{name} {v}: " + ", ".join(f"k={k} acc@1 {_ms([r['macro']['acc@1'] for r in rows[str(k)]])}"
                                          for k in ks), flush=True)
    return results


def suite_table(title: str, res: dict[str, Any]) -> str:
    ks = res["ks"]
    lines = [f"### {title}", "", "| model | " + " | ".join(f"k={k} Acc@1 | k={k} Acc@5" for k in ks) +
             " | eff. rank start → end | photo spread end | train s |", "|---|" + "---|---|" * len(ks) + "---|---|---|"]
    for v, r in res["variants"].items():
        cells = []
        for k in ks:
            rows = r["scores"][str(k)]
            cells += [_ms([x["macro"]["acc@1"] for x in rows]), _ms([x["macro"]["acc@5"] for x in rows])]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {monitor_cells(r.get('monitors'))} | "
                     f"{np.mean(r['train_seconds']):.0f} |")
    if "ours" in res["variants"]:
        variants = res["variants"]
        matched = {k: variants.get(f"ours_k{k}", variants["ours"])["scores"][str(k)] for k in ks}
        lines += ["", "Paired differences, ours (k-matched: meta-trained with the k it is evaluated at) − baseline, "
                  "Acc@1 (mean ± sd over seeds):", "",
                  "| baseline | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for v, r in variants.items():
            if v in ("ours", "ours_k1", "ours_k10"):
                continue
            own = v.rsplit("_without_step", 1)[0]
            if v.startswith(("ours_k1_", "ours_k10_")):  # paired with its own model: what that model's step adds
                if own in variants:
                    cells = [paired([x["macro"]["acc@1"] for x in variants[own]["scores"][str(k)]],
                                    [x["macro"]["acc@1"] for x in r["scores"][str(k)]]) for k in ks]
                    lines.append(f"| {v} (paired with {own}, not k-matched ours) | " + " | ".join(cells) + " |")
                continue
            cells = [paired([x["macro"]["acc@1"] for x in matched[k]], [x["macro"]["acc@1"] for x in r["scores"][str(k)]])
                     for k in ks]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    tuned = {v: r["tuned"]["best"] for v, r in res["variants"].items() if r.get("tuned")}
    if tuned:
        lines += ["", "Fine-tuning chosen on the validation tasks (k=5): " +
                  "; ".join(f"{v}: {t['optimizer']}, {t['steps']} steps at lr {t['lr']:g} (val Acc@1 "
                            f"{t['val_acc@1']:.3f})"
                            for v, t in tuned.items())]
    return "\n".join(lines)


def monitor_cells(monitored: list[dict[str, Any]] | None) -> str:
    """``effective rank start -> end | photo spread end`` as means over seeds ("-" without monitors)."""
    monitored = [m for m in (monitored or []) if m]
    if not monitored:
        return "- | -"

    def mean(which: str, key: str) -> float:
        return float(np.mean([m[which][key] for m in monitored]))

    return (f"{mean('start', 'effective_rank'):.1f} → {mean('final', 'effective_rank'):.1f} | "
            f"{mean('final', 'photo_spread'):.2f}")


def ablation(out: Path, seeds: list[int], extra: list[str], only: list[str] | None = None) -> dict[str, Any]:
    """The ablation rows (``only``: those whose label contains one of these strings, and the rows
    they are paired with)."""
    res: dict[str, Any] = {}
    rows = ablation_rows()
    if only:
        keep = {label for label, _, _ in rows if any(o in label for o in only)}
        keep |= {reference for label, _, reference in rows if label in keep}
        rows = [row for row in rows if row[0] in keep]
    for label, overrides, reference in rows:
        rows, monitored, folders = [], [], []
        for seed in seeds:
            folder, _ = trained(out, ABLATION_PRESET, overrides, seed, extra, from_baseline=True)
            rows.append(scored(folder, 5, "meta"))
            monitored.append(monitors(folder))
            folders.append(folder.name)
        res[label] = {"scores": rows, "monitors": monitored, "reference": reference, "overrides": overrides,
                      "runs": folders}
        print(f"ablation {label}: acc@1 {_ms([r['macro']['acc@1'] for r in rows])}", flush=True)
    return res


def _final(monitored: list[dict[str, Any]], key: str, fmt: str = "{:.2f}") -> str:
    values = [m["final"].get(key) for m in monitored if m and m.get("final")]
    values = [v for v in values if v is not None]
    return fmt.format(float(np.mean(values))) if values else "-"


def ablation_table(res: dict[str, Any], baseline: list[float] | None) -> str:
    lines = ["### Ablation (synthetic categories, k = 5)", "",
             "Each row is paired with the first row of its half (ours as shipped; the paper's regularisers). "
             "Monitors: means over seeds at the run's last validation.", "",
             "| variant | Acc@1 | Acc@5 | − its half's first row (paired) |"
             + (" − no adaptation (paired) |" if baseline else "")
             + " eff. rank start → end | photo spread end | sketch/photo cosine end | D accuracy end | warnings |",
             "|---|---|---|---|" + ("---|" if baseline else "") + "---|---|---|---|---|"]
    for label, entry in res.items():
        rows = entry["scores"]
        a1 = [r["macro"]["acc@1"] for r in rows]
        reference = [r["macro"]["acc@1"] for r in res[entry.get("reference", label)]["scores"]]
        cells = [_ms(a1), _ms([r["macro"]["acc@5"] for r in rows]),
                 "—" if entry.get("reference", label) == label else paired(a1, reference)]
        if baseline:
            cells.append(paired(a1, baseline))
        monitored = [m for m in entry.get("monitors") or [] if m]
        cells += [monitor_cells(monitored), _final(monitored, "modality_cosine", "{:.3f}"),
                  _final(monitored, "d_accuracy"), str(sum(m.get("warnings", 0) for m in monitored))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


QMUL = ["ours", "ours_without_step", "ours_no_d", "ours_with_d", "no_adaptation", "finetune_head", "baseline_longer"]
QMUL_PRESETS = (("adaptive_fg-qmul_v1", "shoes -> chairs"), ("adaptive_fg-qmul_v1_chairs", "chairs -> shoes"))
# F as the -paper QMUL presets take it: the attention-weighted, globally pooled final map (issue 18, item 7)
POOLED = ["model.backbone_stages=null", "model.pool=avg", "train.head_init=default"]


def qmul(out: Path, shared: Path, seeds: list[int], extra: list[str], draws: int = 20,
         ks: tuple[int, ...] = (5, 10)) -> dict[str, Any]:
    root = shared / "qmul_v1"
    cache = out / "qmul-feature-cache"
    res = {}
    for preset, name in QMUL_PRESETS:
        res[name] = suite(out, name, preset, QMUL, ks, seeds,
                          [f"data.root={root}", f"train.feature_cache={cache}", *extra], draws=draws)
    return res


def qmul_features(out: Path, shared: Path, seeds: list[int], extra: list[str]) -> dict[str, Any]:
    """Item 7: F as the grid of the stage-5 map (the presets) against the pooled final map
    (:data:`POOLED`), each baseline and ours from it (no regulariser), by *validation* Acc@1 only
    (best.pt's: held-out pairs of the meta-train category); the test categories are not scored."""
    qextra = [f"data.root={shared / 'qmul_v1'}", f"train.feature_cache={out / 'qmul-feature-cache'}", *extra]
    res: dict[str, Any] = {}
    for preset, name in QMUL_PRESETS:
        res[name] = {}
        for feat, common in (("grid", []), ("pooled", POOLED)):
            base = [monitors(trained(out, preset, [*common, *SUPERVISED], seed, qextra)[0]) for seed in seeds]
            ours = [monitors(trained(out, preset, [], seed, qextra, from_baseline=True, common=common)[0])
                    for seed in seeds]
            res[name][feat] = {"seeds": seeds, "baseline": [m.get("best_val_acc@1") for m in base],
                               "ours": [m.get("best_val_acc@1") for m in ours]}
            print(f"{name} {feat}: val acc@1 baseline {res[name][feat]['baseline']}, ours {res[name][feat]['ours']}",
                  flush=True)
    return res


def qmul_features_table(res: dict[str, Any]) -> str:
    lines = ["### QMUL-V1 F: 4 × 4 grid of the stage-5 map vs pooled final map (validation Acc@1 of best.pt)", "",
             "| direction | model | grid (per seed) | pooled (per seed) | grid − pooled (paired) |", "|---|---|---|---|---|"]
    for name, r in res.items():
        for model in ("baseline", "ours"):
            g, p = r["grid"][model], r["pooled"][model]
            lines.append(f"| {name} | {model} | {' / '.join(f'{v:.3f}' for v in g)} | "
                         f"{' / '.join(f'{v:.3f}' for v in p)} | {paired(g, p)} |")
    return "\n".join(lines)


def cost(out: Path, shared: Path | None, extra: list[str]) -> dict[str, Any]:
    """Adaptation time per task and resident memory over 1,000 adaptations, for ours (seed 0)."""
    res = {}
    candidates = [trained(out, "adaptive_fg-synthetic", [], 0, extra, from_baseline=True)[0]]
    if shared is not None:
        qmul_extra = [f"data.root={shared / 'qmul_v1'}", f"train.feature_cache={out / 'qmul-feature-cache'}", *extra]
        candidates.append(trained(out, "adaptive_fg-qmul_v1", [], 0, qmul_extra, from_baseline=True)[0])
    for folder in candidates:
        method, config = load_run(folder, device="cpu")
        from sbirkit.engine import inference

        dataset = inference.build_dataset(config["data"])
        groups = config["method"].get("test_groups")
        tasks, _ = draw_tasks(dataset, "test", config["method"].get("group_by", "class"), 5, 1, groups=groups)
        batch = support_batch(dataset, tasks[0].support, tasks[0].negatives)
        for _ in range(10):
            method.adapt(batch)
        with open("/proc/self/statm") as f:
            rss0 = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        started = time.perf_counter()
        n = 1000
        for _ in range(n):
            method.adapt(batch)
        per = (time.perf_counter() - started) / n
        with open("/proc/self/statm") as f:
            rss1 = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        res[folder.name] = {"backbone": config["model"]["backbone"], "image_size": config["data"]["options"].get(
            "image_size"), "ms_per_adaptation_k5": per * 1000, "rss_growth_mb_over_1000": (rss1 - rss0) / 2**20,
            "rss_mb": rss1 / 2**20, "note": "support images through F, then the head step (no graph kept)"}
        print(f"cost {folder.name}: {per * 1000:.1f} ms per k=5 adaptation, RSS +{(rss1 - rss0) / 2**20:.1f} MB",
              flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_adaptive"))
    p.add_argument("--parts", nargs="+", default=["synthetic", "synthetic_users", "ablation", "cost"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--shared", type=Path, default=None, help="../shared/data (for the qmul part)")
    p.add_argument("--steps", type=int, default=None, help="train.steps override (default: the presets')")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--qmul-draws", type=int, default=20, help="support draws per task in the qmul part")
    p.add_argument("--variants", nargs="+", default=MAIN, choices=sorted(VARIANTS),
                   help="the synthetic parts' rows (default: %(default)s)")
    p.add_argument("--ks", type=int, nargs="+", default=None,
                   help="support sizes of the synthetic (1 5 10) and qmul (5 10) parts (default: those)")
    p.add_argument("--ablation-only", nargs="+", default=None, metavar="TEXT",
                   help="ablation rows whose label contains TEXT (and the rows they are paired with)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    extra = [f"train.steps={args.steps}"] if args.steps else []
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["machine"] = machine()
    tables = []
    for part in args.parts:
        if part == "synthetic":
            results[part] = suite(args.out, part, "adaptive_fg-synthetic", args.variants, tuple(args.ks or (1, 5, 10)),
                                  args.seeds, extra)
            tables.append(suite_table("Synthetic, new categories (category-level tasks)", results[part]))
        elif part == "synthetic_users":
            results[part] = suite(args.out, part, "adaptive_fg-synthetic_users", args.variants,
                                  tuple(args.ks or (1, 5, 10)), args.seeds, extra)
            tables.append(suite_table("Synthetic, new drawing style (user-level tasks)", results[part]))
        elif part == "ablation":
            results[part] = ablation(args.out, args.seeds, extra, args.ablation_only)
            base = results.get("synthetic", {}).get("variants", {}).get("no_adaptation")
            tables.append(ablation_table(results[part], [r["macro"]["acc@1"] for r in base["scores"]["5"]]
                                         if base and len(base["scores"]["5"]) == len(args.seeds) else None))
        elif part == "qmul":
            if args.shared is None:
                p.error("--parts qmul needs --shared ../shared/data")
            results[part] = qmul(args.out, args.shared, args.seeds, extra, args.qmul_draws, tuple(args.ks or (5, 10)))
            for name, res in results[part].items():
                tables.append(suite_table(f"QMUL-V1 {name}", res))
        elif part == "qmul_features":
            if args.shared is None:
                p.error("--parts qmul_features needs --shared ../shared/data")
            results[part] = qmul_features(args.out, args.shared, args.seeds, extra)
            tables.append(qmul_features_table(results[part]))
        elif part == "cost":
            results[part] = cost(args.out, args.shared, extra)
            tables.append("### Cost\n\n| run | backbone | px | ms per k=5 adaptation | RSS growth over 1,000 (MB) |\n"
                          "|---|---|---|---|---|\n" + "\n".join(
                              f"| {n} | {r['backbone']} | {r['image_size']} | {r['ms_per_adaptation_k5']:.1f} | "
                              f"{r['rss_growth_mb_over_1000']:.1f} |" for n, r in results[part].items()))
        else:
            p.error(f"--parts: unknown part {part!r}")
        results_path.write_text(json.dumps(results, indent=2, default=str))
    text = "\n\n".join(tables)
    (args.out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
