"""Engine tests run torch on one thread: on a busy 2-core machine, two spinning OpenMP threads
per process make tiny convolutions ~5x slower. Restored after each module."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
