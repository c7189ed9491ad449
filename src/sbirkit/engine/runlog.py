"""What a run writes beside its checkpoints: ``meta.json`` (seed, versions, device, times) and the
``metrics.jsonl`` log (one JSON object per line), optionally mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
import platform
import sys
import time
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "timm", "numpy", "sbirkit")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_metadata(seed: int, device: str) -> dict[str, Any]:
    """Seed, package versions, Python, platform, device, torch's CPU thread count and start time
    of a run."""
    import torch

    versions = {p: _version(p) for p in PACKAGES}
    versions["python"] = sys.version.split()[0]
    detail = device
    if device.startswith("cuda"):
        detail = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {"seed": int(seed), "versions": versions, "platform": platform.platform(), "device": detail,
            "torch_threads": torch.get_num_threads(), "started": now_iso(), "resumed": []}


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class MetricsLog:
    """Appends records to ``metrics.jsonl`` (flushed per line); mirrors numbers to TensorBoard."""

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None):
        self.path = Path(path)
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                warnings.warn("train.tensorboard: the tensorboard package is not installed; logging to "
                              f"{self.path.name} only", stacklevel=2)

    def truncate_after(self, step: int) -> int:
        """Drop records logged after ``step`` (a resumed run redoes them); returns how many went."""
        if not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                dropped += 1
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
                dropped += 1
                continue
            kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept))
        return dropped

    def write(self, record: Mapping[str, Any]) -> None:
        rec = {k: _plain(v) for k, v in record.items()}
        rec.setdefault("time", round(time.time(), 3))
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None and isinstance(rec.get("step"), int):
            prefix = rec.get("split", "train")
            for k, v in rec.items():
                if k not in ("step", "time", "split", "event") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{prefix}/{k}", v, rec["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
