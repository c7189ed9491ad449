"""The end-to-end demo (the README's main command): data -> baseline -> train -> eval -> index -> report.

Runs on the built-in synthetic data with no files and no network, in about 2 minutes on
2 CPU cores, and writes ``OUT/report.md`` with the metrics table, a precision-recall curve,
a per-class AP chart and a retrieval grid. Re-running resumes (or reuses) the finished run.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

DISPLAY_SIZE = 128  # side of the indexed photos written to OUT/photos for the server's thumbnails


def _say(msg: str) -> None:
    print(msg, flush=True)


def demo_config(out: Path, quick: bool = False) -> dict[str, Any]:
    from .engine.config import apply_overrides, load_preset

    config = load_preset("triplet-synthetic")
    overrides: dict[str, Any] = {"run_dir": str(out / "run"), "eval.directions": ["sketch2photo"]}
    if quick:  # a smoke-test sized run: seconds, not minutes
        overrides.update({"train.steps": 30, "train.eval_every": 15, "train.checkpoint_every": 15,
                          "train.warmup_steps": 5, "data.options.num_classes": 6,
                          "data.options.photos_per_class": 10, "data.options.image_size": 32,
                          "method.classes_per_batch": 4})
    return apply_overrides(config, overrides)


def run_demo(out: str | Path = "runs/demo", quick: bool = False, fresh: bool = False) -> dict[str, Any]:
    """Run every stage and write the report; returns the numbers that went into it."""
    from .engine import evaluate_run, model_fingerprint, train
    from .engine.inference import build_dataset
    from .eval import DIRECTIONS, evaluate_directions, format_table
    from .eval.curves import per_class_mean, plot_per_class, plot_pr_curves, precision_recall_curve
    from .index import GalleryIndex, draw_grid_rows
    from .models.pixel import pixel_features

    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    config = demo_config(out, quick)

    # 1. data ------------------------------------------------------------------------------
    dataset = build_dataset(config["data"])
    summary = dataset.summary()
    test_sketches, test_photos = dataset.sketches("test"), dataset.photos("test")
    _say(f"[1/6] data: synthetic, {summary['classes']} classes, {summary['by_modality']['photo']} photos, "
         f"{summary['by_modality']['sketch']} sketches, {len(dataset.users)} users; splits "
         + ", ".join(f"{k}: {v.get('photo', 0)}p/{v.get('sketch', 0)}s" for k, v in summary["by_split"].items()))

    # 2. training-free baseline ---------------------------------------------------------------
    s_px = pixel_features([dataset.load_image(s) for s in test_sketches], is_sketch=True)
    p_px = pixel_features([dataset.load_image(p) for p in test_photos], is_sketch=False)
    s_lab = np.array([s.class_index for s in test_sketches])
    p_lab = np.array([p.class_index for p in test_photos])
    s_inst = [s.instance_id for s in test_sketches]
    p_inst = [p.instance_id for p in test_photos]
    pixel = evaluate_directions(s_px, s_lab, p_px, p_lab, directions=["sketch2photo"],
                                sketch_instances=s_inst, photo_instances=p_inst)["sketch2photo"]
    _say(f"[2/6] pixel baseline (training-free), sketch->photo on test: mAP@all {pixel['map']:.3f}, "
         f"Acc@1 {pixel['acc@1']:.3f}")

    # 3. train ---------------------------------------------------------------------------------
    _say(f"[3/6] training {config['method']['name']} ({config['model']['backbone']}, "
         f"{config['train']['steps']} steps) -> {config['run_dir']}")
    run_dir = train(config)

    # 4. evaluate all four directions on the test split ------------------------------------------
    report = evaluate_run(run_dir, split="test", directions=DIRECTIONS, return_embeddings=True)
    s_emb, p_emb = report["embeddings"]["sketch"], report["embeddings"]["photo"]
    results = evaluate_directions(s_emb, s_lab, p_emb, p_lab, sketch_instances=s_inst, photo_instances=p_inst,
                                  return_per_query=True)
    table = format_table(results)
    _say("[4/6] evaluation on the test split (model selected on val):\n" + table)

    # 5. index the test photos, search with test sketches ---------------------------------------
    # the photos are written out too (at 128 px, for display), so `sbirkit serve --index OUT/index`
    # can show them: an index serves thumbnails from the files its items name
    photo_dir = out / "photos"
    items = []
    for p in test_photos:
        path = photo_dir / f"{p.key.split('/', 1)[-1]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.load_image(p, size=DISPLAY_SIZE).save(path)
        items.append({"id": p.key, "label": p.class_index, "class_name": p.class_name, "instance": p.instance_id,
                      "path": str(path.resolve())})
    model_info = {"run": str(Path(run_dir).resolve()), "fingerprint": model_fingerprint(run_dir, "best"),
                  "which": "best", "embed_dim": int(p_emb.shape[1]), "backbone": config["model"]["backbone"]}
    index = GalleryIndex.build(p_emb, items, model_info, factory="Flat", progress=False)
    index_dir = index.save(out / "index")
    reloaded = GalleryIndex.load(index_dir, expect_model=model_info)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(test_sketches), size=min(6, len(test_sketches)), replace=False)
    live = index.search(s_emb[picks], k=8)
    saved = reloaded.search(s_emb[picks], k=8)
    same_results = bool(np.array_equal(live.indices, saved.indices))
    rows = []
    for row, qi in enumerate(picks):
        results_row = []
        for rank in range(live.indices.shape[1]):
            j = int(live.indices[row, rank])
            results_row.append((dataset.load_image(test_photos[j]), f"{live.scores[row, rank]:.2f}",
                                test_photos[j].class_index == test_sketches[qi].class_index))
        rows.append((dataset.load_image(test_sketches[qi]), results_row))
    grid = draw_grid_rows(rows, out / "retrieval_grid.png", thumb=80)
    _say(f"[5/6] index: {len(index)} photos in {index_dir}; saved-and-reloaded search gives the same top "
         f"results: {same_results}; grid -> {grid}")

    # 6. report ---------------------------------------------------------------------------------
    curves = {
        "triplet (trained)": precision_recall_curve(s_emb, p_emb, s_lab, p_lab),
        "pixel baseline": precision_recall_curve(s_px, p_px, s_lab, p_lab),
    }
    pr_png = plot_pr_curves(curves, out / "pr_curve.png", title="sketch -> photo, test split")
    ap = per_class_mean(results["sketch2photo"].per_query["map"].cpu().numpy(), s_lab, dataset.classes)
    chance = float(np.mean([np.mean(p_lab == c) for c in s_lab]))
    ap_png = plot_per_class(ap, out / "per_class_ap.png", title="per-class AP, sketch -> photo", chance=chance)
    numbers = {
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "chance_map": chance,
        "chance_acc@1": 1.0 / len(test_photos),
        "pixel_baseline": pixel.as_dict(),
        "trained": {d: r.as_dict() for d, r in results.items()},
        "saved_index_matches_live": same_results,
        "protocol": report["protocol"],
        "checkpoint": report["checkpoint"],
    }
    (out / "results.json").write_text(json.dumps(numbers, indent=2) + "\n")
    _write_report(out, config, numbers, table, pixel, [pr_png, ap_png, grid], quick)
    _say(f"[6/6] report -> {out / 'report.md'} ({numbers['elapsed_s']} s in all)")
    _say(f"draw to search these photos in a browser: sbirkit serve --index {index_dir}  (http://127.0.0.1:8000/)")
    return numbers


def _write_report(out: Path, config: dict, numbers: dict, table: str, pixel, pictures: list[Path],
                  quick: bool = False) -> None:
    from .eval import TIE_POLICIES

    s2p = numbers["trained"]["sketch2photo"]["metrics"]
    ties = numbers["trained"]["sketch2photo"]["ties"]
    smoke = ["> **Smoke test** (`--quick`): a tiny dataset and a few training steps, to check that every "
             "stage runs. These numbers say nothing about how well the method retrieves; run the demo "
             "without `--quick` for that.", ""] if quick else []
    lines = [
        "# sbirkit demo report",
        "",
        *smoke,
        f"Built-in synthetic data ({config['data']['options']}), method `{config['method']['name']}` "
        f"with backbone `{config['model']['backbone']}`, {config['train']['steps']} training steps; "
        f"model selected on the validation split; all numbers on the test split. "
        f"Run folder: `{config['run_dir']}`. Total time {numbers['elapsed_s']} s.",
        "",
        "## Retrieval on the test split",
        "",
        "```",
        table,
        "```",
        "",
        "| sketch -> photo | mAP@all | Acc@1 |",
        "|---|---|---|",
        f"| chance | {numbers['chance_map']:.3f} | {numbers['chance_acc@1']:.3f} |",
        f"| pixel baseline (training-free) | {pixel['map']:.3f} | {pixel['acc@1']:.3f} |",
        f"| trained | {s2p['map']:.3f} | {s2p['acc@1']:.3f} |",
        "",
        "mAP@all is non-interpolated average precision over the full ranking; P@K is the fraction of "
        "relevant items in the top K; Acc@K counts a sketch as found when its own photo ranks within K. "
        f"Ties (items at equal distance): `{ties}`, {TIE_POLICIES[ties]} (docs/metrics.md). "
        "Same-modality directions leave the query out of its own ranking.",
        "",
        "## Pictures",
        "",
        f"![precision-recall]({pictures[0].name})",
        "",
        f"![per-class AP]({pictures[1].name})",
        "",
        "Retrieval grid: each row is a test sketch (left) and its top results in the saved index "
        "(green frame: same class).",
        "",
        f"![retrieval grid]({pictures[2].name})",
        "",
        f"Saved-and-reloaded index returns the same top results as the in-memory one: "
        f"{numbers['saved_index_matches_live']}.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
