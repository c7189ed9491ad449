"""Search latency of ``GalleryIndex``: exact (Flat) vs IVF, on clustered random unit vectors.

For each gallery size: build time, index size (serialised bytes), single-query latency p50/p95
(one ``search`` call per query, k=10 by default), batch throughput (all queries in one call),
and recall@k of the single-query results against the exact index. Galleries are Gaussian clusters around random unit centres, L2-normalised, so
inner product = cosine as in sbirkit. Queries are fresh draws from the same mixture.

    python benchmarks/bench_search.py --sizes 10000,100000,1000000 --dim 128 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import warnings
from pathlib import Path

import faiss
import numpy as np

from sbirkit.index import GalleryIndex


def clustered_unit_vectors(
    n: int, centres: np.ndarray, noise: float, rng: np.random.Generator, chunk: int = 100_000
) -> np.ndarray:
    """``n`` unit vectors: a random centre plus Gaussian noise of norm ~``noise``, normalised."""
    d = centres.shape[1]
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)]
        x += rng.standard_normal((m, d), dtype=np.float32) * np.float32(noise / math.sqrt(d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k that the approximate top-k contains."""
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def time_queries(
    gallery: GalleryIndex,
    q: np.ndarray,
    k: int,
    nprobe: int | None,
    threads: int,
    query_threads: int,
) -> dict:
    """Single-query latencies (ms, ``query_threads`` OpenMP threads) and the batch throughput
    (``threads``), plus the single-query results."""
    faiss.omp_set_num_threads(query_threads)
    for i in range(min(5, len(q))):  # warm-up
        gallery.search(q[i : i + 1], k, nprobe=nprobe)
    lat, found = [], []
    for i in range(len(q)):
        t0 = time.perf_counter()
        res = gallery.search(q[i : i + 1], k, nprobe=nprobe)
        lat.append((time.perf_counter() - t0) * 1e3)
        found.append(res.indices[0])
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    gallery.search(q, k, nprobe=nprobe)
    batch_s = time.perf_counter() - t0
    lat = np.array(lat)
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "mean_ms": float(lat.mean()),
        "batch_qps": len(q) / batch_s,
        "found": np.stack(found),
    }


def bench_size(n: int, args: argparse.Namespace) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    t0 = time.perf_counter()
    x = clustered_unit_vectors(n, centres, args.noise, rng)
    q = clustered_unit_vectors(args.queries, centres, args.noise, rng)
    print(f"[N={n}] generated {x.shape} in {time.perf_counter() - t0:.1f}s", flush=True)
    items = [{"id": str(i)} for i in range(n)]
    info = {"fingerprint": "bench", "embed_dim": args.dim}

    rows = []
    configs = [("Flat", None, None)]
    nlist = max(1, round(4 * math.sqrt(n)))
    train = min(n, args.train_per_list * nlist)
    configs += [(f"IVF{nlist},Flat", train, p) for p in args.nprobes]
    truth = None
    built: dict[str, tuple[GalleryIndex, float, int]] = {}
    for factory, train_size, nprobe in configs:
        if factory not in built:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = GalleryIndex.build(
                    x,
                    items,
                    info,
                    factory=factory,
                    train_size=train_size,
                    seed=args.seed,
                    progress=False,
                )
            build_s = time.perf_counter() - t0
            size = int(faiss.serialize_index(g.index).nbytes)
            built = {factory: (g, build_s, size)}  # keep one index alive at a time
        g, build_s, size = built[factory]
        if truth is None:
            truth = g.search(q, args.k).indices  # Flat comes first: the exact top-k
        r = time_queries(g, q, args.k, nprobe, args.threads, args.query_threads)
        row = {
            "N": n,
            "dim": args.dim,
            "factory": factory,
            "train_size": train_size,
            "nprobe": nprobe,
            "build_s": build_s,
            "index_mb": size / 2**20,
            "p50_ms": r["p50_ms"],
            "p95_ms": r["p95_ms"],
            "mean_ms": r["mean_ms"],
            "batch_qps": r["batch_qps"],
            f"recall@{args.k}": recall_at_k(r["found"], truth),
        }
        rows.append(row)
        print(
            f"[N={n}] {factory:>16} nprobe={nprobe!s:>4} build {build_s:7.2f}s  {row['index_mb']:8.1f} MB  "
            f"p50 {row['p50_ms']:7.3f} ms  p95 {row['p95_ms']:7.3f} ms  batch {row['batch_qps']:9.0f} q/s  "
            f"recall@{args.k} {row[f'recall@{args.k}']:.3f}",
            flush=True,
        )
    return rows


def markdown(rows: list[dict], k: int) -> str:
    head = (
        f"| N | index | nprobe | build (s) | index (MB) | p50 (ms) | p95 (ms) | batch (q/s) | recall@{k} |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['N']:,} | `{r['factory']}` | {r['nprobe'] or '-'} | {r['build_s']:.2f} | {r['index_mb']:.1f} | "
        f"{r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['batch_qps']:,.0f} | {r[f'recall@{k}']:.3f} |\n"
        for r in rows
    )
    return head + body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated gallery sizes")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200, help="single-query calls timed per config")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobes", default="8,32", help="IVF nprobe values to time")
    ap.add_argument("--clusters", type=int, default=1000, help="Gaussian clusters in the data")
    ap.add_argument(
        "--noise", type=float, default=0.6, help="noise norm relative to the unit centres"
    )
    ap.add_argument("--train-per-list", type=int, default=64, help="IVF training vectors per list")
    ap.add_argument(
        "--threads", type=int, default=2, help="OpenMP threads for build and batch search"
    )
    ap.add_argument(
        "--query-threads",
        type=int,
        default=1,
        help="OpenMP threads for the single-query calls (on a busy 2-core machine, 2 threads make "
        "FAISS's per-call parallel region wait on a descheduled worker)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write every row and the settings here")
    args = ap.parse_args()
    args.nprobes = [int(v) for v in args.nprobes.split(",") if v]
    sizes = [int(float(v)) for v in args.sizes.split(",") if v]
    faiss.omp_set_num_threads(args.threads)

    t0 = time.perf_counter()
    rows = [r for n in sizes for r in bench_size(n, args)]
    print()
    print(markdown(rows, args.k))
    print(
        f"total {time.perf_counter() - t0:.0f}s; faiss {faiss.__version__}, OpenMP threads: "
        f"{args.threads} (build, batch), {args.query_threads} (single-query calls)"
    )
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        settings.update(sizes=sizes, faiss=faiss.__version__, python=platform.python_version())
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
