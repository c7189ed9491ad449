"""What a generating ``crossx_dfl`` run's estimators make, drawn for people: a grid of generated
(photo | sketch) pairs, one row per class (the teachers' pseudo-label, most confident first), the
poster's "qualitative reconstructions", with the synthesis diagnostics of the pairs
(:mod:`~sbirkit.methods.crossx_dfl.diagnostics`).

Pure functions of a method whose teachers are loaded; ``sbirkit dfl samples``
(:mod:`sbirkit.cli.dfl_samples`) loads the run and its teachers and writes the files.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ConfigError, UsageError
from .diagnostics import synthesis_metrics
from .options import VALIDATION_SEED


def check_grid_args(per_class: int, n: int, scale: int) -> None:
    for flag, value in (("--per-class", per_class), ("--n", n), ("--scale", scale)):
        if value < 1:
            raise UsageError(f"{flag}: expected a positive integer, got {value}")


def samples_grid(method: Any, per_class: int = 4, n: int = 256, seed: int = VALIDATION_SEED, scale: int = 2,
                 where: str = "run"):
    """``(PIL image, diagnostics)`` of ``n`` pairs generated from held-out noise ``seed`` by a
    generating method (teachers loaded, in eval mode), ``per_class`` pairs a row, each image
    ``scale`` times its size."""
    from PIL import Image, ImageDraw

    samples = method.generate_samples(n, torch.device("cpu"), seed=seed)
    qp, qs = ((samples[k] * 255).round() / 255 for k in ("photo", "sketch"))
    diagnostics = synthesis_metrics(method, qp, qs)
    side = method.options.image_size * scale
    rows = []
    for t, name in enumerate(method.space.targets):
        idx = (samples["label"] == t).nonzero().flatten()
        if len(idx):
            idx = idx[samples["confidence"][idx].argsort(descending=True)][:per_class]
            rows.append((name, idx.tolist()))
    if not rows:
        raise ConfigError(f"{where}: no generated pair was labelled; nothing to draw")
    label_w, gap = 96, 4
    sheet = Image.new("RGB", (label_w + per_class * (2 * side + gap), len(rows) * (side + gap)), "white")
    draw = ImageDraw.Draw(sheet)

    def tile(x: torch.Tensor) -> Image.Image:
        arr = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        return Image.fromarray(arr).resize((side, side), Image.Resampling.NEAREST)

    for r, (name, idx) in enumerate(rows):
        y = r * (side + gap)
        draw.text((4, y + side // 2 - 6), name[:14], fill="black")
        for c, i in enumerate(idx):
            x = label_w + c * (2 * side + gap)
            sheet.paste(tile(samples["photo"][i]), (x, y))
            sheet.paste(tile(samples["sketch"][i]), (x + side, y))
    return sheet, diagnostics
