"""The model an index is built and searched with: a run's encoder, its image size, and the
``model_info`` the index records (run, fingerprint, checkpoint, backbone, embed_dim,
image_size). Built here only, for the command line (``embed``, ``index build``, ``search``) and
the server alike, so what one writes the other checks the same way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def load_run_encoder(run_dir: str | os.PathLike, which: str = "best") -> tuple[nn.Module, int, dict[str, Any]]:
    """``(encoder in eval mode, image size, model_info)`` of a trained run's ``which`` checkpoint."""
    from ..engine import load_run, model_fingerprint

    run = Path(run_dir)
    method, config = load_run(run, which)
    encoder = method.encoder.eval()
    size = int((config["data"].get("options") or {}).get("image_size", 64))
    info = {"run": str(run.resolve()), "fingerprint": model_fingerprint(run, which), "which": which,
            "backbone": config["model"]["backbone"], "embed_dim": int(encoder.embed_dim), "image_size": size}
    return encoder, size, info
