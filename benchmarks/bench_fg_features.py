"""Which frozen features match a sketch to its own photo: stage x pooling, training-free, on QMUL-V1.

Every training-free retrieval (cosine distance, sketch -> edge map, each split its own gallery) of
the ImageNet EfficientNet-Lite0 map after each stage, pooled globally (``avg``) or over a
``g x g`` grid (``grid``: ``model.pool: grid``), at 224 px. It is what motivated the ``-grid``
presets: the **train** split (304 shoe / 200 chair pairs, all of it, as no model is fitted) is the
one to choose on; test is printed beside it for the record and was not used to choose.

    .venv/bin/python benchmarks/bench_fg_features.py --shared ../shared/data --json /tmp/fg_features.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sbirkit.data import SampleDataset, create_dataset
from sbirkit.eval.metrics import accuracy_at_k, true_match_rank
from sbirkit.models import create_backbone
from sbirkit.models.encoders import InputNorm
from sbirkit.models.heads import global_pool

POOLS = [("avg", 1), ("grid", 2), ("grid", 3), ("grid", 4), ("grid", 5), ("grid", 7)]
STAGES = (4, 5, 6, 7, 8)  # the map after this stage index (EfficientNet-Lite0: 9 stages, 0-8)


def stage_maps(backbone, norm, dataset, samples, batch_size: int = 64) -> dict[int, torch.Tensor]:
    loader = torch.utils.data.DataLoader(SampleDataset(dataset, samples), batch_size=batch_size)
    out: dict[int, list[torch.Tensor]] = {s: [] for s in STAGES}
    with torch.no_grad():
        for batch in loader:
            x = norm(batch["image"])
            for stage in range(backbone.num_stages):
                x = backbone.run_stages(x, stage, stage + 1)
                if stage in out:
                    out[stage].append(x)
    return {s: torch.cat(v) for s, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True)
    parser.add_argument("--categories", default="shoes,chairs")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = create_backbone("efficientnet_lite0", pretrained=True).eval()
    norm = InputNorm(*backbone.input_stats)
    rows = []
    for category in args.categories.split(","):
        dataset = create_dataset("qmul-v1", str(args.shared / "qmul_v1"), category=category,
                                 image_size=args.image_size)
        for split in ("train", "test"):
            t0 = time.perf_counter()
            sketches, photos = dataset.sketches(split), dataset.photos(split)
            ids = [s.instance_id for s in photos]
            is_true = torch.tensor([[s.instance_id == i for i in ids] for s in sketches])
            ms, mp = (stage_maps(backbone, norm, dataset, x) for x in (sketches, photos))
            for stage in STAGES:
                for mode, grid in POOLS:
                    q, g = (torch.nn.functional.normalize(global_pool(m[stage], mode, grid=grid), dim=1)
                            for m in (ms, mp))
                    ranks = true_match_rank(1 - q @ g.T, is_true)
                    rows.append({"category": category, "split": split, "stage": stage, "pool": mode, "grid": grid,
                                 "dim": q.shape[1], "acc@1": accuracy_at_k(ranks, 1).mean().item(),
                                 "acc@10": accuracy_at_k(ranks, 10).mean().item()})
            print(f"{category} {split}: {time.perf_counter() - t0:.0f} s", flush=True)
    print("| category | map after stage | pooling | dim | train Acc@1 | train Acc@10 | test Acc@1 | test Acc@10 |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["split"] != "train":
            continue
        t = next(x for x in rows if x["split"] == "test" and all(x[k] == r[k] for k in ("category", "stage", "pool", "grid")))
        pool = "global avg" if r["pool"] == "avg" else f"grid {r['grid']}x{r['grid']}"
        print(f"| {r['category']} | {r['stage']} | {pool} | {r['dim']} | {r['acc@1']:.3f} | {r['acc@10']:.3f} | "
              f"{t['acc@1']:.3f} | {t['acc@10']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"image_size": args.image_size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
