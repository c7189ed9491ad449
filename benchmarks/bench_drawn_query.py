"""Drawn-query protocol for Quick, Draw! -> CIFAR-10: held-out drawings sent to a served index the way
the drawing page sends them, scored beside the plain test split.

For each run (``--run NAME=RUN_DIR``, any run whose data section is triplet-quickdraw_cifar10's):

* **test split**: the run's held-out test sketches (101), drawn by the dataset and embedded by the
  engine (``Evaluator``), against an index of the 9,000 CIFAR-10 test photos of the nine shared
  classes (``sbirkit index build RUN <gallery>``), mAP@all and P@24;
* **drawn**: the same index, served
  in-process (``sbirkit.serve.create_app`` behind FastAPI's test client). Each held-out drawing's
  strokes are placed on the page's canvas as a person might draw them (:func:`sbirkit.serve.page_drawing.page_body`:
  canvas side, line width of the page's slider, the drawing's size as a fraction of the canvas, its
  centre) and POSTed to ``/search`` as the page does, with ``k`` = the whole gallery; AP and P@24
  come from the returned scores through the same metric functions (``sbirkit.eval.metrics``).
  ``CONDITIONS`` lists the placements; the ``fit canvas`` row sends the default one with ``"fit": "canvas"``
  (the drawing placed as drawn at the page's line width: the server's behaviour before one
  rasterisation rule), for reference.

``--with-deer`` adds a "drawn, 10,000" condition on an index of all 10,000 test photos, deer
included (no sketch class maps to it, so a deer photo is never relevant): what the issue's user searched.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_drawn_query.py --shared ../shared/data \\
        --run views=runs/triplet-quickdraw_cifar10-views --out /tmp/drawn

Results go to ``<out>/results.json`` as they come (a rerun skips finished (run, condition) pairs)
and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

CLASSES = ("airplane", "automobile", "bird", "cat", "dog", "frog", "horse", "ship", "truck")
# name: (canvas side px, line width px, drawing size as a fraction of the canvas, centre as fractions)
CONDITIONS = {
    "page-default": (512, 18, 0.6, (0.5, 0.5)),  # the page's canvas and line width, a drawing of 60% of it
    "small-thin-corner": (512, 4, 0.3, (0.27, 0.3)),
    "large-thick": (512, 48, 0.9, (0.52, 0.48)),
    "phone-300px": (300, 10, 0.7, (0.45, 0.55)),
    "wide-1024px": (1024, 30, 0.5, (0.6, 0.4)),
}
K = 24


def gallery_folder(shared: Path, out: Path, with_deer: bool) -> Path:
    """A copy of the CIFAR-10 test class folders (the nine shared classes, or all ten) under ``out``
    (``index build`` does not follow symbolic links out of the folder it indexes)."""
    import shutil

    folder = out / ("gallery10" if with_deer else "gallery9")
    for name in (*CLASSES, "deer") if with_deer else CLASSES:
        if not (folder / name).is_dir():
            shutil.copytree(shared / "cifar10" / "test" / name, folder / name)
    return folder


def build_index(run: Path, gallery: Path, out: Path) -> Path:
    if (out / "index.json").is_file() or any(out.glob("v*")):
        return out
    cmd = [sys.executable, "-m", "sbirkit", "index", "build", str(run), str(gallery), "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return out


def scores_to_metrics(scores: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """mAP@all and P@24 of (queries, gallery) similarity scores (higher is closer), by the
    project's metric functions (ties as everywhere in sbirkit.eval)."""
    from sbirkit.eval.metrics import average_precision, mean_defined, precision_at_k, rank_relevant

    ranked = rank_relevant(torch.from_numpy(-scores.astype(np.float64)), torch.from_numpy(relevant))
    return {"map": mean_defined(average_precision(ranked))[0], f"p@{K}": mean_defined(precision_at_k(ranked, K))[0]}


def test_data(run: Path, shared: Path):
    """The run's dataset (its data section, under ``shared``) and its held-out test sketches."""
    from sbirkit.engine.config import read_config
    from sbirkit.engine.inference import build_dataset

    dataset = build_dataset(read_config(run / "config.yaml")["data"], {"root": str(shared)})
    return dataset, dataset.sketches("test")


def test_split(run: Path, dataset, index: Path) -> dict[str, float]:
    """The held-out test sketches drawn by the dataset (the training rasterisation), embedded by the
    engine's ``Evaluator``, searched in the run's index of the 9,000 test photos (the photos are
    embedded once per run, by ``index build``; scores are the index's inner products of unit vectors,
    i.e. the cosine that ``sbirkit eval`` uses)."""
    from sbirkit.engine import Evaluator, load_run
    from sbirkit.index.gallery import GalleryIndex

    method, _ = load_run(run)
    gallery = GalleryIndex.load(index)
    sketches = dataset.sketches("test")
    s, sl, _ = Evaluator(method.encoder, dataset, batch_size=128, device="cpu").embed(sketches)
    s = torch.nn.functional.normalize(torch.as_tensor(s, dtype=torch.float32), dim=1).numpy()
    gallery_class = np.array([item["class_name"] for item in gallery.items])
    relevant = gallery_class[None, :] == np.array([dataset.classes[int(c)] for c in sl])[:, None]
    return scores_to_metrics(all_scores(gallery, s), relevant)


def all_scores(gallery, queries: np.ndarray) -> np.ndarray:
    """(queries, gallery rows) scores of every gallery row, in row order, from the index's own search."""
    found = gallery.search(queries, k=len(gallery))
    scores = np.full((len(queries), len(gallery)), -np.inf)
    np.put_along_axis(scores, found.indices, found.scores, axis=1)
    return scores


def drawn(index: Path, dataset, sketches: list, condition: tuple, fit_canvas: bool = False) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from sbirkit.serve import Limits, create_app
    from sbirkit.serve.page_drawing import page_body

    app = create_app(index, limits=Limits(max_k=100_000), batch_wait_ms=0.0)
    canvas, width, fill, centre = condition
    with TestClient(app) as client:
        size = client.get("/health").json()["items"]
        ids = None
        rows, relevant = [], []
        for sample in sketches:
            body = page_body(dataset.load_strokes(sample), canvas, width, fill, centre)
            if fit_canvas:
                body["fit"] = "canvas"
            r = client.post(f"/search?k={size}", json=body)
            r.raise_for_status()
            hits = r.json()["results"]
            if ids is None:
                ids = sorted(h["id"] for h in hits)
                column = {i: c for c, i in enumerate(ids)}
                classes = {h["id"]: h["class_name"] for h in hits}
                gallery_class = np.array([classes[i] for i in ids])
            row = np.full(len(ids), -np.inf)
            for h in hits:
                row[column[h["id"]]] = h["score"]
            rows.append(row)
            relevant.append(gallery_class == dataset.classes[sample.class_index])
    return scores_to_metrics(np.stack(rows), np.stack(relevant))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True)
    parser.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="names from CONDITIONS, comma-separated")
    parser.add_argument("--no-canvas-fit", action="store_true", help="skip the canvas-fit reference row")
    parser.add_argument("--with-deer", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    saved = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    done = {(r["run"], r["condition"]) for r in saved["rows"]}
    conditions = [c for c in args.conditions.split(",") if c]
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        parser.error(f"--conditions: unknown {unknown}; expected some of {list(CONDITIONS)}")

    def record(name, run, condition, metrics, seconds):
        row = {"run": name, "run_dir": str(run), "condition": condition, **metrics, "seconds": round(seconds, 1)}
        saved["rows"].append(row)
        path.write_text(json.dumps(saved, indent=2) + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] {name:>24} {condition:>24}: mAP {metrics['map']:.4f} "
              f"P@{K} {metrics[f'p@{K}']:.4f} ({seconds:.0f} s)", flush=True)

    for spec in args.run:
        name, _, run = spec.partition("=")
        run = Path(run)
        dataset, sketches = test_data(run, args.shared)
        index = build_index(run, gallery_folder(args.shared, args.out, False), args.out / "indexes" / name)
        if (name, "test split") not in done:
            t0 = time.perf_counter()
            record(name, run, "test split", test_split(run, dataset, index), time.perf_counter() - t0)
        todo = [(c, CONDITIONS[c], False) for c in conditions]
        if not args.no_canvas_fit:
            todo.append(("page-default, fit canvas (before)", CONDITIONS["page-default"], True))
        for label, condition, fit_canvas in todo:
            if (name, label) in done:
                continue
            t0 = time.perf_counter()
            record(name, run, label, drawn(index, dataset, sketches, condition, fit_canvas), time.perf_counter() - t0)
        if args.with_deer and (name, "drawn, 10,000 (deer)") not in done:
            deer = build_index(run, gallery_folder(args.shared, args.out, True), args.out / "indexes" / f"{name}-deer")
            t0 = time.perf_counter()
            record(name, run, "drawn, 10,000 (deer)", drawn(deer, dataset, sketches, CONDITIONS["page-default"]),
                   time.perf_counter() - t0)
    print(summarise(saved["rows"]))


def summarise(rows: list[dict]) -> str:
    lines = [f"| run | condition | mAP@all | P@{K} | mAP − test split |", "|---|---|---:|---:|---:|"]
    test = {r["run"]: r["map"] for r in rows if r["condition"] == "test split"}
    for r in rows:
        diff = r["map"] - test[r["run"]] if r["run"] in test else float("nan")
        lines.append(f"| {r['run']} | {r['condition']} | {r['map']:.3f} | {r[f'p@{K}']:.3f} | {diff:+.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
