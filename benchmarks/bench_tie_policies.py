"""Each metric under the three tie policies on trained runs' test splits (docs/metrics.md).

For a run, the test split is embedded once with the run's best checkpoint; every metric is then
scored under ``pessimistic``, ``expected`` and ``optimistic`` ties, on the float embeddings
(the run's distance) and on ITQ binary codes of them (fitted on the training split's embeddings,
sketches and photos together, no labels) ranked by exact Hamming distance. A class-level run is
scored with every class metric name; a fine-grained one (instance ids) with Acc@K and the
instance-level metrics (relevant = the query's own photo).

    OMP_NUM_THREADS=1 python benchmarks/bench_tie_policies.py \\
        --run qmul=runs/triplet_sn-qmul_v1-grid:../shared/data/qmul_v1 \\
        --run quickdraw=runs/triplet-quickdraw_cifar10-views:../shared/data --json out.json

Also prints, per embedding, how many gallery items share their distance with another one (mean
over queries): the amount of ties the policies can act on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

POLICIES = ("pessimistic", "expected", "optimistic")
CLASS_METRICS = ("map", "map:voc", "map:sklearn", "map@200:sake", "map@200:standard", "map@200:yelamarthi",
                 "map@200:sem-pcyc", "p@100", "p@200", "p@100:zse", "p@200:zse", "p@100:doodle2search")
FINE_METRICS = ("acc@1", "acc@5", "acc@10")
INSTANCE_METRICS = ("map", "map:voc", "map:sklearn", "p@1", "p@10")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR:DATA_ROOT",
                   help="a trained run and the data root to evaluate it on (repeatable)")
    p.add_argument("--split", default="test")
    p.add_argument("--train-split", default="train", help="the split ITQ is fitted on")
    p.add_argument("--bits", default="64", help="comma-separated ITQ code lengths")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def embed(run: str, root: str, split: str):
    """(sketch emb, labels, instances, photo emb, labels, instances) of a split, in dataset order."""
    import numpy as np

    from sbirkit.engine import evaluate_run, inference
    from sbirkit.engine.config import load_yaml, merge

    report = evaluate_run(run, split=split, directions=["sketch2photo"], data_overrides={"root": root},
                          save=False, return_embeddings=True, device="cpu")
    config = load_yaml((Path(run) / "config.yaml").read_text())
    dataset = inference.build_dataset(merge(config["data"], {"root": root}))
    sketches, photos = dataset.sketches(split), dataset.photos(split)
    emb = report["embeddings"]
    return (emb["sketch"], np.array([s.class_index for s in sketches]), [s.instance_id for s in sketches],
            emb["photo"], np.array([p.class_index for p in photos]), [p.instance_id for p in photos])


def score(query, gallery, q_labels, g_labels, metrics, distance: str, **kwargs) -> dict:
    """Per policy: the metrics, the sampled estimates' standard errors and the seconds taken."""
    from sbirkit.eval import evaluate_retrieval

    out = {}
    for ties in POLICIES:
        start = time.perf_counter()
        result = evaluate_retrieval(query, gallery, q_labels, g_labels, metrics=list(metrics), distance=distance,
                                    ties=ties, **kwargs)
        out[ties] = {"metrics": result.metrics, "stderr": result.tie_stderr,
                     "seconds": time.perf_counter() - start}
    return out


def tied_items(query, gallery, distance: str) -> float:
    """Mean over queries of how many gallery items share their distance with another item."""
    import torch

    from sbirkit.eval import pairwise_hamming

    if distance == "hamming":
        d = pairwise_hamming(query, gallery)
    else:
        q = torch.nn.functional.normalize(torch.as_tensor(query, dtype=torch.float32), dim=1)
        g = torch.nn.functional.normalize(torch.as_tensor(gallery, dtype=torch.float32), dim=1)
        d = -(q @ g.T)
    s = torch.sort(d, dim=1).values
    same = s[:, 1:] == s[:, :-1]
    tied = torch.zeros_like(s, dtype=torch.bool)
    tied[:, 1:] |= same
    tied[:, :-1] |= same
    return float(tied.float().sum(dim=1).mean())


def measure(run: str, root: str, split: str, train_split: str, bits: list[int], distance: str) -> dict:
    import numpy as np

    from sbirkit.eval.itq import fit_itq

    sq, sl, si, pq, pl, pi = embed(run, root, split)
    fine = bool({i for i in si if i is not None} & {i for i in pi if i is not None})  # sketches pair with photos
    tq, _, _, tp, _, _ = embed(run, root, train_split)
    codes = {"float": (sq, pq, distance)}
    for b in bits:
        itq = fit_itq(np.concatenate([tq, tp]), bits=b, seed=0)
        codes[f"itq{b}"] = (itq.encode(sq), itq.encode(pq), "hamming")
    out = {"queries": len(sq), "gallery": len(pq), "fine_grained": fine, "embeddings": {}}
    for name, (q, g, dist) in codes.items():
        entry = {"distance": dist, "tied_items_per_query": tied_items(q, g, dist)}
        if fine:
            entry["acc"] = score(q, g, sl, pl, FINE_METRICS, dist, query_instances=si, gallery_instances=pi)
            entry["instance"] = score(q, g, si, pi, INSTANCE_METRICS, dist)
        else:
            entry["class"] = score(q, g, sl, pl, CLASS_METRICS, dist)
        out["embeddings"][name] = entry
    return out


def format_markdown(name: str, result: dict) -> str:
    lines = [f"{name}: {result['queries']} queries x {result['gallery']} gallery", "",
             "| embedding | metric | pessimistic | expected | optimistic |", "|---|---|---|---|---|"]
    for emb, entry in result["embeddings"].items():
        label = f"{emb} ({entry['distance']}; {entry['tied_items_per_query']:.1f} tied items per query)"
        for group in ("acc", "instance", "class"):
            if group not in entry:
                continue
            for metric in entry[group]["pessimistic"]["metrics"]:
                cells = []
                for ties in POLICIES:
                    value = entry[group][ties]["metrics"][metric]
                    se = entry[group][ties]["stderr"].get(metric)
                    cells.append(f"{value:.4f}" + (f" ± {se:.4f}" if se and se >= 5e-5 else f" ± {se:.0e}" if se else ""))
                shown = f"instance {metric}" if group == "instance" else metric
                lines.append(f"| {label} | {shown} | " + " | ".join(cells) + " |")
                label = ""
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from sbirkit.engine.config import load_yaml

    torch.set_num_threads(1)
    results = {}
    for spec in args.run:
        name, _, rest = spec.partition("=")
        run, _, root = rest.partition(":")
        if not name or not run or not root:
            raise SystemExit(f"--run: expected NAME=RUN_DIR:DATA_ROOT, got {spec!r}")
        distance = load_yaml((Path(run) / "config.yaml").read_text())["eval"].get("distance", "cosine")
        results[name] = measure(run, root, args.split, args.train_split,
                                [int(b) for b in args.bits.split(",") if b], distance)
        print(format_markdown(name, results[name]) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
