"""Benchmark the blocked evaluation engine against the per-query scikit-learn loop and a floor.

Variants, each run in its own subprocess on the same seeded data (cosine, class-structured):

* ours:    ``evaluate_retrieval`` computing mAP@all + P@100 + P@200 under the default tie policy
  (``expected``: the exact expectation over random orders inside ties).
* ours_pessimistic / ours_optimistic: the same under the other two tie policies (the cost of
  ``expected`` is read against ``ours_pessimistic``, the engine's only policy before issue 20).
* sklearn: the loop of SBIR reference code: per query a cosine-similarity row, then
  ``sklearn.metrics.average_precision_score`` and a top-200 selection for P@K. Run on a subsample
  of queries and extrapolated linearly. Favourable to it: the gallery is normalised once, outside
  the loop, and P@K uses ``np.argpartition`` instead of a full sort.
* floor:   bare matmul + full row sort of the float32 distances, in the same query blocks as
  ours, with the fastest sort at hand: NumPy's in-place SIMD sort, rows split over the torch
  thread count (values only; the same primitive ours uses).
* floor_torch: the same with ``torch.sort`` (values and indices), for reference; not run unless
  named in ``--variants``.

Memory: peak extra = ``ru_maxrss`` after the variant minus the resident set size (VmRSS) just
after the data was created, in that subprocess. ru_maxrss is monotone, so this never understates
the variant's peak (it can only overstate, if data creation briefly peaked higher).

    python benchmarks/bench_eval.py                 # 10,000 x 100,000 x 512, a few minutes
    python benchmarks/bench_eval.py --quick         # 1,000 x 10,000 smoke run
    python benchmarks/bench_eval.py --json out.json
    OMP_NUM_THREADS=1 python benchmarks/bench_eval.py --queries 2000 --variants ours,ours_pessimistic --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("ours", "ours_pessimistic", "ours_optimistic", "sklearn", "floor", "floor_torch")
METRICS = ("map", "p@100", "p@200")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block-size", type=int, default=None,
                   help="query rows per block (default: the engine's automatic choice)")
    p.add_argument("--sklearn-queries", type=int, default=200,
                   help="queries timed in the scikit-learn loop, then extrapolated")
    p.add_argument("--variants", default="ours,sklearn,floor",
                   help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every variant this many times, round-robin; report the median")
    p.add_argument("--codes", type=int, default=0, metavar="BITS",
                   help="> 0: score binary codes instead (the signs of the first BITS dimensions), by exact "
                        "Hamming distance: nearly every item ties (ours variants only)")
    p.add_argument("--quick", action="store_true", help="1,000 x 10,000 smoke run")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.queries, args.gallery = 1_000, 10_000
        args.sklearn_queries = min(args.sklearn_queries, 50)
    args.sklearn_queries = min(args.sklearn_queries, args.queries)
    return args


def make_data(args: argparse.Namespace):
    """Seeded class-structured embeddings (class centre + noise), built in place in chunks so data
    creation does not overshoot the resident set measured as the baseline."""
    import torch

    gen = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(args.classes, args.dim, generator=gen)
    out = []
    for n in (args.queries, args.gallery):
        labels = torch.randint(0, args.classes, (n,), generator=gen)
        emb = torch.randn(n, args.dim, generator=gen)
        for lo in range(0, n, 8192):
            emb[lo:lo + 8192].add_(centres[labels[lo:lo + 8192]], alpha=0.35)
        out += [emb, labels]
    return out  # query_emb, query_labels, gallery_emb, gallery_labels


def block_rows(args: argparse.Namespace) -> int:
    from sbirkit.eval.retrieval import DEFAULT_BLOCK_ELEMENTS

    if args.block_size:
        return args.block_size
    return max(1, min(args.queries, DEFAULT_BLOCK_ELEMENTS // (args.gallery + 1)))


def sample_queries(args: argparse.Namespace) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(args.seed + 1)
    return sorted(rng.choice(args.queries, size=args.sklearn_queries, replace=False).tolist())


def run_ours(args, q, ql, g, gl, ties: str | None = None) -> dict:
    import torch

    from sbirkit.eval import DEFAULT_TIES, evaluate_retrieval

    if args.codes:
        q, g = torch.sign(q[:, :args.codes]), torch.sign(g[:, :args.codes])
    result = evaluate_retrieval(q, g, ql, gl, metrics=METRICS, distance="hamming" if args.codes else "cosine",
                                ties=ties or DEFAULT_TIES,
                                block_size=args.block_size, return_per_query=True)
    sample = sample_queries(args)
    return {"metrics": result.metrics, "sample_ap": result.per_query["map"][sample].tolist(),
            "ties": result.ties}


def run_ours_pessimistic(args, q, ql, g, gl) -> dict:
    return run_ours(args, q, ql, g, gl, ties="pessimistic")


def run_ours_optimistic(args, q, ql, g, gl) -> dict:
    return run_ours(args, q, ql, g, gl, ties="optimistic")


def run_sklearn(args, q, ql, g, gl) -> dict:
    import numpy as np
    from sklearn.metrics import average_precision_score

    gallery = g.numpy()
    gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)  # hoisted out of the loop
    gallery_labels = gl.numpy()
    queries, query_labels = q.numpy(), ql.numpy()
    aps, p100, p200 = [], [], []
    for i in sample_queries(args):
        query = queries[i] / np.linalg.norm(queries[i])
        sim = gallery @ query  # the cosine-similarity row
        rel = gallery_labels == query_labels[i]
        aps.append(float(average_precision_score(rel, sim)))
        top = np.argpartition(-sim, 200)[:200]
        top = top[np.argsort(-sim[top], kind="stable")]
        p100.append(rel[top[:100]].mean())
        p200.append(rel[top].mean())
    return {"metrics": {"map": float(np.mean(aps)), "p@100": float(np.mean(p100)),
                        "p@200": float(np.mean(p200))},
            "sample_ap": aps}


def run_floor(args, q, ql, g, gl, use_torch_sort: bool = False) -> dict:
    import torch
    import torch.nn.functional as F

    from sbirkit.eval.ranking import sort_rows_

    rows = block_rows(args)
    gallery_t = F.normalize(g, dim=1).t()
    checksum = 0.0
    for lo in range(0, q.shape[0], rows):
        block = F.normalize(q[lo:lo + rows], dim=1)
        dist = torch.mm(block, gallery_t).neg_()
        values = torch.sort(dist, dim=1).values if use_torch_sort else sort_rows_(dist)
        checksum += float(values[:, 0].sum())
    return {"metrics": {}, "checksum": checksum}


def run_floor_torch(args, q, ql, g, gl) -> dict:
    return run_floor(args, q, ql, g, gl, use_torch_sort=True)


def worker(args: argparse.Namespace) -> None:
    """Build the data, then time one variant; print one JSON line."""
    q, ql, g, gl = make_data(args)
    import numpy  # noqa: F401  (imports happen before the clock starts)
    import sklearn.metrics  # noqa: F401

    import sbirkit.eval  # noqa: F401

    rss_before_kib = _vm_rss_kib()
    start, start_cpu = time.perf_counter(), time.process_time()
    run = {"ours": run_ours, "ours_pessimistic": run_ours_pessimistic, "ours_optimistic": run_ours_optimistic,
           "sklearn": run_sklearn, "floor": run_floor, "floor_torch": run_floor_torch}[args.worker]
    out = run(
        args, q, ql, g, gl)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - start_cpu  # user + system time of every thread of this process
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.update(variant=args.worker, seconds=seconds, cpu_seconds=cpu_seconds, peak_extra_mib=(peak_kib - rss_before_kib) / 1024,
               queries_timed=args.sklearn_queries if args.worker == "sklearn" else args.queries)
    print(json.dumps(out))


def _vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/status: no VmRSS line; this benchmark needs Linux")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    import torch

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; expected from {VARIANTS}")
    if args.codes and not set(variants) <= {"ours", "ours_pessimistic", "ours_optimistic"}:
        raise SystemExit("--codes: expected only the ours variants")
    passthrough = [f"--codes={args.codes}", f"--queries={args.queries}", f"--gallery={args.gallery}", f"--dim={args.dim}",
                   f"--classes={args.classes}", f"--seed={args.seed}",
                   f"--sklearn-queries={args.sklearn_queries}"]
    if args.block_size:
        passthrough.append(f"--block-size={args.block_size}")
    trials: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(args.repeats):  # round-robin, so a burst of load hits every variant
        for variant in variants:
            print(f"running {variant} ({repeat + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
            proc = subprocess.run([sys.executable, __file__, f"--worker={variant}", *passthrough],
                                  check=False, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"variant {variant} failed:\n{proc.stderr}")
            trial = json.loads(proc.stdout.strip().splitlines()[-1])
            if variant == "sklearn":  # extrapolate the subsample to all queries
                trial["seconds_measured"] = trial["seconds"]
                for key in ("seconds", "cpu_seconds"):
                    trial[key] = trial[key] * args.queries / trial["queries_timed"]
            trial["load_average"] = os.getloadavg()[0]
            trials[variant].append(trial)
    runs = {}
    for variant, results in trials.items():
        seconds = sorted(t["seconds"] for t in results)
        runs[variant] = {**results[0], "seconds": statistics.median(seconds),
                         "seconds_all": [t["seconds"] for t in results],
                         "cpu_seconds": statistics.median(t["cpu_seconds"] for t in results),
                         "cpu_seconds_all": [t["cpu_seconds"] for t in results],
                         "peak_extra_mib": max(t["peak_extra_mib"] for t in results),
                         "load_average_all": [t["load_average"] for t in results]}
    summary = {
        "config": {"queries": args.queries, "gallery": args.gallery, "dim": args.dim,
                   "classes": args.classes, "dtype": "float32", "device": "cpu",
                   "block_rows": block_rows(args), "sklearn_queries": args.sklearn_queries,
                   "seed": args.seed, "codes": args.codes},
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                    "processor": _cpu_model(), "python": platform.python_version()},
        "runs": runs,
    }
    if "ours" in runs and "ours_pessimistic" in runs:
        summary["expected_vs_pessimistic"] = runs["ours"]["seconds"] / runs["ours_pessimistic"]["seconds"]
        summary["expected_vs_pessimistic_all"] = [a / b for a, b in zip(runs["ours"]["seconds_all"],
                                                                         runs["ours_pessimistic"]["seconds_all"])]
        # CPU time: on a shared machine wall time also counts the time the process waited for a
        # core; CPU time counts only the work (one thread), so the ratio is far less noisy.
        summary["expected_vs_pessimistic_cpu"] = (runs["ours"]["cpu_seconds"]
                                                  / runs["ours_pessimistic"]["cpu_seconds"])
        summary["expected_vs_pessimistic_cpu_all"] = [
            a / b for a, b in zip(runs["ours"]["cpu_seconds_all"], runs["ours_pessimistic"]["cpu_seconds_all"])]
    if "ours" in runs and "sklearn" in runs:
        ours_ap, sk_ap = runs["ours"]["sample_ap"], runs["sklearn"]["sample_ap"]
        summary["max_abs_ap_diff_vs_sklearn"] = max(abs(a - b) for a, b in zip(ours_ap, sk_ap))
    print(format_markdown(summary))
    if args.json:
        for r in runs.values():
            r.pop("sample_ap", None)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


def format_markdown(summary: dict) -> str:
    cfg, runs = summary["config"], summary["runs"]
    lines = [
        (f"{cfg['queries']:,} queries x {cfg['gallery']:,} gallery x {cfg['dim']}-d, "
         f"{cfg['classes']} classes, float32, CPU ({summary['machine']['threads']} torch threads), "
         f"blocks of {cfg['block_rows']} query rows"
         + (f"; scored as {cfg['codes']}-bit binary codes by exact Hamming distance" if cfg.get("codes") else "")),
        "",
        "| variant | wall time (s), median | all runs (s) | vs ours | CPU time (s), median "
        "| peak extra memory (MiB) | mAP@all | P@100 | P@200 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {"ours": "ours: evaluate_retrieval (mAP@all + P@100 + P@200), ties=expected (default)",
              "ours_pessimistic": "ours, ties=pessimistic",
              "ours_optimistic": "ours, ties=optimistic",
              "sklearn": f"(a) per-query sklearn loop, {cfg['sklearn_queries']} queries "
                         "timed, extrapolated",
              "floor": "(b) floor: blocked matmul + full row sort (NumPy SIMD sort)",
              "floor_torch": "(b') the same floor with torch.sort"}
    ours = runs.get("ours", {}).get("seconds")
    for name, r in runs.items():
        ratio = f"{r['seconds'] / ours:.2f}x" if ours else "—"
        m = r.get("metrics", {})
        every = ", ".join(f"{s:.1f}" for s in r["seconds_all"])
        cells = [labels[name], f"{r['seconds']:.1f}", every, ratio, f"{r['cpu_seconds']:.1f}",
                 f"{r['peak_extra_mib']:.0f}",
                 *(f"{m[k]:.4f}" if k in m else "—" for k in METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    if "expected_vs_pessimistic" in summary:
        lines.append("")
        lines.append(f"cost of ties=expected / ties=pessimistic: {summary['expected_vs_pessimistic']:.3f}x "
                     "(medians; per round: "
                     + ", ".join(f"{x:.3f}" for x in summary["expected_vs_pessimistic_all"]) + ")")
        lines.append(f"the same in CPU time: {summary['expected_vs_pessimistic_cpu']:.3f}x (per round: "
                     + ", ".join(f"{x:.3f}" for x in summary["expected_vs_pessimistic_cpu_all"]) + ")")
    if "max_abs_ap_diff_vs_sklearn" in summary:
        lines.append("")
        lines.append(f"max |AP ours - AP sklearn| over the {cfg['sklearn_queries']} sampled queries: "
                     f"{summary['max_abs_ap_diff_vs_sklearn']:.2e}")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
