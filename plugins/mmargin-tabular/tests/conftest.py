"""Shared fixtures of the tabular plugin's tests: one torch thread, the fraud schema and
data, and helpers to pick the transactions a model flags."""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

from mmargin_tabular.data import fraud_split
from mmargin_tabular.schema import Schema, load_schema

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def schema() -> Schema:
    return load_schema("fraud")


@pytest.fixture(scope="session")
def test_rows() -> tuple[np.ndarray, np.ndarray]:
    return fraud_split("test")


def _flagged(proba: np.ndarray, y: np.ndarray, threshold: float = 0.3, n: int = 20) -> np.ndarray:
    """Indices of the first ``n`` true frauds whose fraud probability is >= threshold."""
    return np.flatnonzero((proba >= threshold) & (y == 1))[:n]


@pytest.fixture(scope="session")
def flagged() -> Callable[..., np.ndarray]:
    """``flagged(proba, y, threshold=0.3, n=20)``: the flagged true frauds' indices."""
    return _flagged
