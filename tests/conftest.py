"""Shared test fixtures. Tests that read ../shared/data skip when it is absent (a fresh clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_SHARED = Path(os.environ.get("SBIRKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real sample data (../shared/data); skips the test when it is not there."""
    if not _SHARED.is_dir():
        pytest.skip(f"real sample data not found at {_SHARED} (set SBIRKIT_SHARED_DATA)")
    return _SHARED
