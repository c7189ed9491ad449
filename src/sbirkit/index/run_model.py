"""The model an index is built and searched with: a run's encoder, its image size, and the
``model_info`` the index records (run, fingerprint, checkpoint, backbone, embed_dim,
image_size). Built here only, for the command line (``embed``, ``index build``, ``search``) and
the server alike, and checked here (:func:`check_model`), so what one writes the other checks
the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError

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


class ModelMismatchError(DataError):
    """The index was built with a different model than the one embedding the queries."""


def model_label(info: dict | str | None) -> str:
    if isinstance(info, str):
        return info
    if not info:
        return "<unknown model>"
    for key in ("fingerprint", "run", "backbone"):
        if info.get(key):
            return str(info[key])
    return json.dumps(info, sort_keys=True, default=str)


def check_model(index_model: dict, expect: dict | str, where: str = "index") -> None:
    """Raise :class:`ModelMismatchError` unless ``expect`` is the model the index was built with.

    Fingerprints decide when both sides have one; otherwise ``embed_dim`` and ``backbone`` must agree.
    """
    exp = {"fingerprint": expect} if isinstance(expect, str) else dict(expect)
    have = index_model or {}
    if exp.get("fingerprint") is not None:
        if have.get("fingerprint") is None:
            raise ModelMismatchError(
                f"{where}: model_info.fingerprint: index built with model {model_label(have)} "
                f"(no fingerprint), query model {model_label(exp)}"
            )
        if str(have["fingerprint"]) != str(exp["fingerprint"]):
            raise ModelMismatchError(
                f"{where}: model_info.fingerprint: index built with model {have['fingerprint']}, "
                f"query model {exp['fingerprint']}"
            )
        return
    for key in ("embed_dim", "backbone"):
        if key in exp and key in have and str(exp[key]) != str(have[key]):
            raise ModelMismatchError(
                f"{where}: model_info.{key}: index built with model {model_label(have)} ({key}={have[key]}), "
                f"query model {model_label(exp)} ({key}={exp[key]})"
            )
