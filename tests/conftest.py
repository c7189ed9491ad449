"""Shared test fixtures. Tests that read ../shared/data skip when it is absent (a fresh clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

_SHARED = Path(os.environ.get("SBIRKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real sample data (../shared/data); skips the test when it is not there."""
    if not _SHARED.is_dir():
        pytest.skip(f"real sample data not found at {_SHARED} (set SBIRKIT_SHARED_DATA)")
    return _SHARED


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one thread (restored afterwards): on a busy 2-core machine, two
    spinning OpenMP threads per process make tiny convolutions ~5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
