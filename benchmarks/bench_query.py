"""Time to turn a large raster query sketch into an embedding: ``load_query_sketch`` + a tiny model.

For each size, a synthetic PNG is written first (untimed): a thin black ellipse (3 px line) on a
white page, like a photographed or scanned pen drawing. Then, per repeat, the timed part is what
``sbirkit search`` does with a sketch file: decode, pad to a square, shrink to each of ``--model-sizes`` while
keeping thin lines dark (``load_query_sketch``), and embed it with ``tiny_cnn`` (random
weights, batch of one). Reported: the median and the slowest of ``--repeats`` runs, the darkest
output pixel (thin lines must stay dark: well below 128) and the ink fraction. A size over
``sbirkit.data.dataset.MAX_IMAGE_PIXELS`` is reported with the time it took to be refused.

Then pathological SVG queries (``--svg``, on by default): the issue's 100k arcs in 2 MB, 200k
linetos, a 10,000-segment zigzag across the page, and a large but legitimate 19,000-path file;
each row is the time ``load_query_sketch`` took to load or refuse it, and the error.

    OMP_NUM_THREADS=1 python benchmarks/bench_query.py --sizes 1024x1024,2048x2048,4032x3024 --model-sizes 32,224
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from sbirkit.errors import DataError
from sbirkit.index import load_query_sketch
from sbirkit.models import create_backbone


def ellipse_png(path: Path, width: int, height: int, line: int = 3) -> Path:
    """A white page with a thin black ellipse filling the middle 60 % of it."""
    img = Image.new("L", (width, height), 255)
    box = [width * 0.2, height * 0.2, width * 0.8, height * 0.8]
    ImageDraw.Draw(img).ellipse(box, outline=0, width=line)
    img.save(path, format="PNG", compress_level=1)
    return path


def time_query(path: Path, model: torch.nn.Module, size: int, repeats: int) -> dict:
    times, img = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        img = load_query_sketch(path, size=size)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)[None].float().div_(255)
        with torch.inference_mode():
            z = model(x)
        times.append(time.perf_counter() - t0)
    grey = np.asarray(img.convert("L"))
    return {
        "median_s": statistics.median(times),
        "max_s": max(times),
        "darkest": int(grey.min()),
        "ink_fraction": float((grey < 128).mean()),
        "embed_dim": int(z.shape[1]),
    }


def svg_cases() -> dict[str, str]:
    def doc(body: str) -> str:
        return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">{body}</svg>'

    return {
        "100k arcs": doc('<path d="M0 0 ' + "a1 1 0 0 1 0.001 0 " * 100_000 + '"/>'),
        "200k linetos": doc('<path d="M0 0' + "l0.0001 0.0001" * 200_001 + '"/>'),
        "zigzag 10k": doc('<path d="M0 0' + " L100 100 L0 0" * 5_000 + '"/>'),
        "19k paths": doc('<path d="M10 10 l1 1 l1 1 l1 1"/>' * 19_000),
    }


def time_svgs(tmp: Path, model_size: int) -> list[dict]:
    rows = []
    for name, text in svg_cases().items():
        path = tmp / f"{name.replace(' ', '_')}.svg"
        path.write_text(text)
        t0 = time.perf_counter()
        try:
            load_query_sketch(path, size=model_size)
            error = None
        except DataError as exc:
            error = str(exc).split(": ", 1)[1]
        rows.append({"svg": name, "bytes": len(text), "model_size": model_size,
                     "seconds": time.perf_counter() - t0, "error": error})
        path.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024x1024,2048x2048,4032x3024,8000x6000,12000x12000",
                        help="comma-separated WxH of the synthetic sketches")
    parser.add_argument("--model-sizes", default="32,224",
                        help="comma-separated model input sides (px); 32 is the demo model's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--svg", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the pathological SVG queries")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_backbone("tiny_cnn").eval()
    model_sizes = [int(v) for v in args.model_sizes.split(",")]
    with torch.inference_mode():
        for side in model_sizes:
            model(torch.zeros(1, 3, side, side))  # warm-up
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(info))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes.split(","):
            w, h = (int(v) for v in spec.lower().split("x"))
            path = ellipse_png(Path(tmp) / f"ellipse_{w}x{h}.png", w, h)
            for side in model_sizes:
                row = {"sketch": f"{w}x{h}", "megapixels": round(w * h / 1e6, 1), "model_size": side}
                try:
                    row.update(time_query(path, model, side, args.repeats))
                except DataError as exc:
                    t0 = time.perf_counter()
                    try:
                        load_query_sketch(path, size=side)
                    except DataError:
                        pass
                    row.update({"refused_s": time.perf_counter() - t0, "error": str(exc)})
                rows.append(row)
                print(json.dumps(row), flush=True)
            path.unlink()
        if args.svg:
            for row in time_svgs(Path(tmp), max(model_sizes)):
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
