"""Shared setup of the text plugin's tests: one torch thread, small shared fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cnn() -> object:
    """The committed MR CNN behind the text adapter."""
    from mmargin_text.adapters import adapt_text_model
    from mmargin_text.models import mr_cnn

    return adapt_text_model(mr_cnn())


@pytest.fixture(scope="session")
def mr_test() -> object:
    """The MR test split."""
    from mmargin_text.data import load_mr

    return load_mr("test")
