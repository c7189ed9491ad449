"""The process a run trains in: seeds, the device, the autocast dtype, deterministic algorithms."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from ..errors import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"train.device: expected auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {spec!r} requested but CUDA is not available on this machine "
                          "(use train.device=cpu or auto)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.device: expected auto, cpu, cuda or cuda:N, got {spec!r}")
    return device


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """bf16/fp16 autocast on CUDA; always None (full precision) on CPU."""
    if amp not in ("auto", "bf16", "fp16", "none"):
        raise ConfigError(f"train.amp: expected auto, bf16, fp16 or none, got {amp!r}")
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


@contextlib.contextmanager
def deterministic(enabled: bool):
    """``torch.use_deterministic_algorithms`` (and the cuBLAS workspace it needs) for the block
    only: the process's settings and environment are restored afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    env_before = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        if env_before is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = env_before
