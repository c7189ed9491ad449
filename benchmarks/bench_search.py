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
    # the configuration BENCHMARKS.md records (FAISS's guide: 4 to 16 sqrt(N) lists for speed), not the
    # library's own rule (sbirkit.index.faiss_ops.default_nlist, about sqrt(N), used by suggested_ivf_factory)
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


# ---- large collections: 10M vectors within a memory budget, every index kind at 1M, real embeddings ----
SCALE_DOC = """Large-collection benchmark, in cached stages under --out (rerunning skips finished stages):

  vectors  N clustered unit vectors written as a shard folder (sbirkit.index.shards layout), and
           fresh queries from the same mixture
  truth    exact top-k of every query over all N vectors, one shard at a time (cached per shard)
  build    one index per --kinds entry ("auto" = the --max-memory chooser, or a FAISS factory),
           built by sbirkit.index.autotune.build_index from the shards, in its own process
           (peak RSS of the build alone), saved as a GalleryIndex folder
  search   load (memory-mapped, as 'sbirkit search' does), single-query p50/p95 latency, and
           recall@k of all queries against the cached exact top-k, in its own process

    OMP_NUM_THREADS=1 python benchmarks/bench_search.py scale --out /tmp/bench_scale --n 10000000 \\
        --dim 64 --queries 10000 --kinds auto --max-memory 4GiB
    python benchmarks/bench_search.py scale --out DIR --from-embeddings SHARDS --kinds 'Flat;HNSW32;...'
"""


def _rss_now() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except OSError:  # pragma: no cover
        return 0


def _peak_rss() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _write_array_shards(root: Path, n: int, dim: int, num_shards: int, centres, noise: float, seed: int) -> None:
    """A shard folder of ``n`` clustered vectors (ids "0".."n-1"), one shard generated at a time."""
    import hashlib

    from sbirkit.index.shards import FORMAT, HEADER_FILE, MANIFEST_FILE, ShardSet, check_shard, write_shard

    try:
        ShardSet.open(root)
        return
    except Exception:
        pass
    root.mkdir(parents=True, exist_ok=True)
    manifest = "".join(f"{i}\n" for i in range(n)).encode()
    (root / MANIFEST_FILE).write_bytes(manifest)
    header = {"format": FORMAT, "format_version": 1, "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
              "files": n, "num_shards": num_shards, "modality": "photo",
              "model_info": {"fingerprint": f"synthetic-{n}-{dim}-{seed}", "embed_dim": dim}}
    (root / HEADER_FILE).write_text(json.dumps(header))
    for j in range(num_shards):
        if check_shard(root, j, header) is not None:
            continue
        a, b = j * n // num_shards, (j + 1) * n // num_shards
        x = clustered_unit_vectors(b - a, centres, noise, np.random.default_rng([seed, j]))
        write_shard(root, j, header, x, [{"id": str(i)} for i in range(a, b)])
        print(f"  vectors: shard {j + 1}/{num_shards} ({b - a:,} rows)", flush=True)


def _truth(out: Path, shards_dir: Path, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k over every shard (cached per shard under ``out``), merged."""
    from sbirkit.index.autotune import _drop_self
    from sbirkit.index.shards import ShardSet

    final = out / "truth.npy"
    if final.is_file():
        return np.load(final)
    shards = ShardSet.open(shards_dir)
    out.mkdir(parents=True, exist_ok=True)
    kk = k + (1 if exclude is not None else 0)
    heap = faiss.ResultHeap(len(queries), kk, keep_max=True)
    for s in range(len(shards.shards)):
        part = out / f"part-{s:05d}.npz"
        if not part.is_file():
            t0 = time.perf_counter()
            x = np.ascontiguousarray(shards.vectors(s))
            d, i = faiss.knn(queries, x, min(kk, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
            del x
            np.savez(part, d=d, i=i + int(shards.offsets[s]))
            print(f"  truth: shard {s + 1}/{len(shards.shards)} in {time.perf_counter() - t0:.0f}s", flush=True)
        with np.load(part) as z:
            heap.add_result(np.ascontiguousarray(z["d"]), np.ascontiguousarray(z["i"]))
    heap.finalize()
    _, i = _drop_self(heap.D, heap.I, exclude, k)
    np.save(final, i)
    return i


def _dir_bytes(path: Path) -> dict:
    return {p.name: p.stat().st_size for p in path.iterdir() if p.is_file()}


def _stage_build(args) -> None:
    """(subprocess) build one index from the shards and save it; print a JSON line."""
    from sbirkit.index.autotune import build_index, open_source

    faiss.omp_set_num_threads(args.threads)
    source = open_source(args.shards)
    t0 = time.perf_counter()
    kind = args.kind
    gallery = build_index(source, factory=None if kind == "auto" else kind,
                          max_memory=args.max_memory if kind == "auto" else None,
                          target_recall=args.target_recall, progress=False, seed=args.seed,
                          echo=lambda line: print("  build:", line, flush=True))
    build_s = time.perf_counter() - t0
    rss_built = _peak_rss()
    gallery.save(args.index)
    total_s = time.perf_counter() - t0
    from sbirkit.index import GalleryIndex

    meta = GalleryIndex.read_meta(args.index)
    print(json.dumps({"factory": gallery.factory, "build_s": build_s, "build_and_save_s": total_s,
                      "peak_rss_build": rss_built, "peak_rss": _peak_rss(), "files": meta["files"],
                      "nprobe": gallery.nprobe, "build": gallery.build_info}))


def _stage_search(args) -> None:
    """(subprocess) load an index as 'sbirkit search' does; latency and recall; print a JSON line."""
    from sbirkit.index import GalleryIndex

    faiss.omp_set_num_threads(args.threads)
    rss0 = _rss_now()
    t0 = time.perf_counter()
    g = GalleryIndex.load(args.index)
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_now()
    q = np.load(args.queries)
    truth = np.load(args.truth)
    lat = time_queries(g, q[: args.latency_queries], args.k, None, args.threads, 1)
    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.rows is not None:  # queries are gallery rows: leave each one's own row out, as the truth does
        from sbirkit.index.autotune import _drop_self

        res = g.search(q, args.k + 1)
        _, found = _drop_self(res.scores, res.indices, np.load(args.rows), args.k)
    else:
        found = g.search(q, args.k).indices
    batch_s = time.perf_counter() - t0
    print(json.dumps({"mapped": g.mapped, "load_s": load_s, "rss_before_load": rss0, "rss_after_load": rss_loaded,
                      "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"], "batch_qps": len(q) / batch_s,
                      f"recall@{args.k}": recall_at_k(found, truth), "queries": len(q),
                      "latency_queries": min(len(q), args.latency_queries),
                      "peak_rss": _peak_rss(), "rss_end": _rss_now(), "nprobe": g.nprobe}))


def _run_stage(stage: str, **kw) -> dict:
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "scale-stage", stage]
    for key, value in kw.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line, flush=True)
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"stage {stage} failed ({proc.returncode})")
    return json.loads(lines[-1])


def scale_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=SCALE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=10_000_000, help="synthetic gallery size")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--num-shards", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=10_000)
    ap.add_argument("--noise", type=float, default=0.6)
    ap.add_argument("--queries", type=int, default=10_000, help="queries for recall (fresh draws, or gallery "
                    "rows with --from-embeddings, each one's own row left out)")
    ap.add_argument("--latency-queries", type=int, default=1000, help="of those, single-query calls timed")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kinds", default="auto", help="semicolon-separated: auto (the --max-memory chooser) and/or "
                    "FAISS factories, e.g. 'auto;Flat;IVF1024,PQ32'")
    ap.add_argument("--max-memory", default="4GiB")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--from-embeddings", type=Path, default=None, help="a shard folder (real embeddings) "
                    "instead of synthetic vectors")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    from sbirkit.index.shards import ShardSet

    t_all = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_embeddings is not None:
        shards_dir = args.from_embeddings
        tag = shards_dir.name
        shards = ShardSet.open(shards_dir)
        rng = np.random.default_rng(args.seed + 7)
        nq = min(args.queries, len(shards) // 2)
        q_rows = np.sort(rng.choice(len(shards), nq, replace=False))
        queries = shards.take(q_rows)
        exclude = q_rows
        data = {"source": str(shards_dir), "rows": len(shards), "dim": shards.dim}
    else:
        tag = f"synthetic-{args.n}x{args.dim}"
        shards_dir = args.out / tag / "vectors"
        rng = np.random.default_rng(args.seed)
        centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        t0 = time.perf_counter()
        _write_array_shards(shards_dir, args.n, args.dim, args.num_shards, centres, args.noise, args.seed)
        queries = clustered_unit_vectors(args.queries, centres, args.noise, np.random.default_rng([args.seed, 99]))
        exclude = None
        data = {"source": "synthetic", "rows": args.n, "dim": args.dim, "clusters": args.clusters,
                "noise": args.noise, "vectors_s": time.perf_counter() - t0}
    base = args.out / tag
    base.mkdir(parents=True, exist_ok=True)
    qpath = base / f"queries-{len(queries)}.npy"
    np.save(qpath, queries)
    t0 = time.perf_counter()
    _truth(base / f"truth-k{args.k}-q{len(queries)}", shards_dir, queries, args.k, exclude)
    truth_path = base / f"truth-k{args.k}-q{len(queries)}" / "truth.npy"
    print(f"[{tag}] exact top-{args.k} of {len(queries):,} queries: {time.perf_counter() - t0:.0f}s", flush=True)
    rows_path = None
    if exclude is not None:  # queries are gallery rows: the search must skip their own row too
        rows_path = base / f"queries-{len(queries)}-rows.npy"
        np.save(rows_path, exclude)
    rows = []
    for kind in [v.strip() for v in args.kinds.split(";") if v.strip()]:
        name = kind if kind != "auto" else f"auto-{args.max_memory}"
        idx_dir = base / f"index-{name.replace(',', '_')}"
        result = base / f"result-{name.replace(',', '_')}.json"
        if result.is_file():
            row = json.loads(result.read_text())
        else:
            built = base / f"build-{name.replace(',', '_')}.json"
            if built.is_file() and idx_dir.is_dir():
                b = json.loads(built.read_text())
            else:
                print(f"[{tag}] building {name} ...", flush=True)
                b = _run_stage("build", shards=shards_dir, index=idx_dir, kind=kind, max_memory=args.max_memory,
                               target_recall=args.target_recall, threads=args.threads, seed=args.seed)
                built.write_text(json.dumps(b, indent=1))
            sr = _run_stage("search", index=idx_dir, queries=qpath, truth=truth_path, k=args.k,
                            latency_queries=args.latency_queries, threads=args.threads,
                            rows=rows_path)
            row = {"name": name, "kind_requested": kind, **data, "build": b, "search": sr}
            result.write_text(json.dumps(row, indent=1))
        rows.append(row)
        s, b = row["search"], row["build"]
        print(f"[{tag}] {b['factory']:>22} build {b['build_s']:8.1f}s  index.faiss "
              f"{b['files']['index.faiss'] / 2**20:9.1f} MiB  peak RSS build {b['peak_rss_build'] / 2**30:5.2f} GiB  "
              f"search RSS after load {s['rss_after_load'] / 2**20:7.1f} MiB  p50 {s['p50_ms']:.3f} ms  "
              f"p95 {s['p95_ms']:.3f} ms  recall@{args.k} {s[f'recall@{args.k}']:.3f}", flush=True)
    print(scale_markdown(rows, args.k))
    print(f"total {time.perf_counter() - t_all:.0f}s; faiss {faiss.__version__}; OpenMP threads {args.threads}")


def scale_markdown(rows: list[dict], k: int) -> str:
    head = (f"| N | index (chosen for) | build (s) | index.faiss (MiB) | items (MiB) | peak RSS build (GiB) | "
            f"RSS after load (MiB) | peak RSS search (GiB) | nprobe / efSearch | p50 (ms) | p95 (ms) | "
            f"recall@{k} | build's own recall@{k} |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n")
    body = ""
    for r in rows:
        b, s = r["build"], r["search"]
        tuned = (b.get("build") or {}).get("autotune") or {}
        param = ", ".join(f"{kk} {v}" for kk, v in (tuned.get("search_param") or {}).items()) or "-"
        chosen = f" ({r['name']})" if r["kind_requested"] == "auto" else ""
        own = tuned.get(f"recall@{k}")
        body += (f"| {r['rows']:,} | `{b['factory']}`{chosen} | {b['build_s']:.0f} | "
                 f"{b['files']['index.faiss'] / 2**20:.1f} | {b['files'].get('items.jsonl', 0) / 2**20:.1f} | "
                 f"{b['peak_rss_build'] / 2**30:.2f} | {s['rss_after_load'] / 2**20:.0f} | {s['peak_rss'] / 2**30:.2f} | "
                 f"{param} | {s['p50_ms']:.3f} | {s['p95_ms']:.3f} | {s[f'recall@{k}']:.3f} | "
                 f"{own if own is not None else '-'} |\n")
    return head + body


def stage_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["build", "search"])
    for flag in ("--shards", "--index", "--queries", "--truth", "--rows"):
        ap.add_argument(flag, type=Path)
    ap.add_argument("--kind")
    ap.add_argument("--max-memory")
    ap.add_argument("--target-recall", type=float)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--latency-queries", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.stage == "build":
        _stage_build(args)
    else:
        _stage_search(args)


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "scale":
        scale_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "scale-stage":
        stage_main(sys.argv[2:])
    else:
        main()
