"""Shared test setup: one torch thread (2-core machines), small models built in-test, and
the tests folder importable for its helper modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# test helpers beside the tests (``engine_fakes``) import by name under --import-mode=importlib
sys.path.insert(0, str(Path(__file__).parent))

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
