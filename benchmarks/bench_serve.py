"""Load test of ``sbirkit serve``: latency and throughput at 1, 8, 32 and 128 concurrent clients,
with and without request batching, against a 100k-photo index.

The index holds random unit vectors with realistic ids and class names (the vectors' values do
not change the cost of an exact search); the model is a real trained run, so every query pays
the real preprocessing (rasterising strokes, the ink check) and embedding. Queries are JSON
strokes of synthetic sketches on a 512-pixel canvas, what the drawing page sends. The server is
``sbirkit serve`` in a subprocess on 127.0.0.1 (a free port); the client is a minimal asyncio
HTTP/1.1 keep-alive client (one connection per simulated user). Only 127.0.0.1 is ever contacted; each level is bounded in requests and in seconds.

    OMP_NUM_THREADS=1 python benchmarks/bench_serve.py --run runs/demo/run --json bench_serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


def build_index(run: Path, out: Path, n: int, seed: int = 0) -> dict:
    """An exact index of ``n`` random unit vectors with the run's model_info and photo-like ids."""
    from sbirkit.index import GalleryIndex
    from sbirkit.serve.state import load_model

    model = load_model(run, "best")
    dim = model.info["embed_dim"]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    classes = ["arrow", "bell", "boat", "car", "cloud", "cup", "fish", "flower", "heart", "house", "key", "moon",
               "star", "sun", "tree", "umbrella"]
    items = [{"id": f"photos/{classes[i % 16]}/IMG_{i:06d}.jpg", "class_name": classes[i % 16]} for i in range(n)]
    GalleryIndex.build(x, items, model.info, factory="Flat", progress=False).save(out)
    return model.info


def sketch_bodies(count: int) -> list[bytes]:
    """JSON bodies of ``count`` synthetic sketches as the page sends them (512-pixel canvas)."""
    from sbirkit.data.synthetic.dataset import SyntheticSBIR

    data = SyntheticSBIR(num_classes=16, photos_per_class=max(1, count // 16 + 1), image_size=32, seed=3)
    bodies = []
    for sample in data.sketches()[:count]:
        strokes = [[np.round(s[:, 0] * 512, 1).tolist(), np.round(s[:, 1] * 512, 1).tolist()]
                   for s in data.read(sample).strokes]
        bodies.append(json.dumps({"strokes": strokes, "canvas": [512, 512], "stroke_width": 16}).encode())
    return bodies


class Server:
    """``sbirkit serve`` in a subprocess on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self, index: Path, wait_ms: float, max_batch: int, threads: int):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sbirkit", "serve", "--index", str(index), "--host", "127.0.0.1", "--port", "0",
             "--batch-wait-ms", str(wait_ms), "--max-batch", str(max_batch), "--threads", str(threads),
             "--no-access-log", "--log-level", "warning", "--max-k", "100"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        line, seen = "", []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            seen.append(line)
            if not line or line.startswith("sbirkit serve: http://"):
                break
        if not line.startswith("sbirkit serve: http://127.0.0.1:"):
            self.stop()
            raise SystemExit("the server did not start:\n" + "".join(seen))
        self.url = line.split()[2].rstrip("/")

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used (Linux /proc), to tell its own cost from
        the machine's load."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1 over asyncio streams: a client far cheaper
    than httpx per request, so on a small machine the load generator does not starve the server."""

    def __init__(self, host: str, port: int):
        assert host == "127.0.0.1", host
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"", ctype: str = "application/json") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def load(url: str, bodies: list[bytes], clients: int, requests: int, seconds: float, k: int) -> dict:
    """``clients`` concurrent connections sharing a budget of ``requests`` (stopping after ``seconds``)."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", url
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    stop_at = time.perf_counter() + seconds
    async def batching() -> dict:
        probe = Connection(parts.hostname, parts.port)  # fresh: an idle keep-alive one is closed after 5 s
        try:
            status, data = await probe.request("GET", "/info")
        finally:
            await probe.close()
        return json.loads(data)["batching"]

    async def worker(w: int) -> None:
        nonlocal issued
        conn = Connection(parts.hostname, parts.port)
        try:
            while issued < requests and time.perf_counter() < stop_at:
                body = bodies[(issued + w) % len(bodies)]
                issued += 1
                t0 = time.perf_counter()
                try:
                    status, data = await conn.request("POST", f"/search?k={k}", body)
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    await conn.close()
                    continue
                if status != 200 or not data.startswith(b'{"results":'):
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)
        finally:
            await conn.close()

    before = await batching()
    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    wall = time.perf_counter() - started
    after = await batching()
    lat = np.array(latencies) * 1000
    return {
        "clients": clients, "requests": issued, "ok": len(latencies), "errors": sum(errors.values()),
        "error_kinds": errors, "wall_s": round(wall, 2), "throughput_rps": round(len(latencies) / wall, 1),
        **{f"p{q}_ms": round(float(np.percentile(lat, q)), 1) if len(lat) else None for q in (50, 95, 99)},
        "batches": after["batches"] - before["batches"],
        "mean_batch": round((after["queries"] - before["queries"]) / max(1, after["batches"] - before["batches"]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo/run"), help="a trained run (./dev demo makes one)")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--requests", type=int, default=600, help="requests per level (1 client: a third)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time cap per level")
    parser.add_argument("--k", type=int, default=24, help="results per query (the page asks for 24)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not (args.run / "config.yaml").is_file():
        raise SystemExit(f"--run {args.run}: expected a trained run folder (./dev demo writes runs/demo/run)")
    levels = [int(c) for c in args.clients.split(",")]
    modes = [("batching (5 ms, up to 32)", 5.0, 32), ("no batching", 0.0, 1)]
    bodies = sketch_bodies(64)
    results = {"machine": platform.platform(), "python": platform.python_version(), "items": args.items,
               "threads": args.threads, "k": args.k, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        t0 = time.perf_counter()
        info = build_index(args.run, Path(tmp) / "index", args.items)
        results["index_build_s"] = round(time.perf_counter() - t0, 1)
        results["model"] = {k: info[k] for k in ("backbone", "embed_dim", "image_size", "fingerprint")}
        for name, wait_ms, max_batch in modes:
            server = Server(Path(tmp) / "index", wait_ms, max_batch, args.threads)
            try:
                asyncio.run(load(server.url, bodies, 4, 40, 30, args.k))  # warm-up
                rows = []
                for clients in levels:
                    budget = args.requests // 3 if clients == 1 else args.requests
                    cpu = server.cpu_seconds()
                    row = asyncio.run(load(server.url, bodies, clients, budget, args.seconds, args.k))
                    row["server_cpu_ms_per_query"] = round((server.cpu_seconds() - cpu) * 1000 / max(1, row["ok"]), 2)
                    rows.append(row)
                    print(f"{name:>26}  {clients:>3} clients: {row['ok']:>4} ok, {row['errors']} errors, "
                          f"{row['throughput_rps']:>6} req/s, p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, "
                          f"p99 {row['p99_ms']} ms, mean batch {row['mean_batch']}, server CPU "
                          f"{row['server_cpu_ms_per_query']} ms/query", flush=True)
                results["modes"][name] = rows
            finally:
                server.stop()
    print()
    print("| mode | clients | requests | errors | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | mean batch "
          "| server CPU (ms/query) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in results["modes"].items():
        for r in rows:
            print(f"| {name} | {r['clients']} | {r['ok']} | {r['errors']} | {r['throughput_rps']} | {r['p50_ms']} | "
                  f"{r['p95_ms']} | {r['p99_ms']} | {r['mean_batch']} | {r['server_cpu_ms_per_query']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
