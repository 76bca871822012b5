"""The digits MLP written the ordinary way (an ``nn.Module`` subclass with ``fc1, fc2,
fc3`` and ``forward``) gets exact L∞ margins and certified L2 lower bounds with the
default ``exact = "auto"``, and the summary reports certified robust accuracy and the
bracket width."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmargin
from mmargin.summary import summarize

torch.set_num_threads(1)


class DigitsMlp(nn.Module):
    """64-32-32-10 ReLU MLP for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


@pytest.fixture(scope="module")
def digits() -> tuple[DigitsMlp, np.ndarray, np.ndarray]:
    """The MLP trained deterministically (full-batch Adam, about a second) and 20 test
    images ``(N, 1, 8, 8)`` in ``[0, 1]`` with their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    torch.manual_seed(0)
    model = DigitsMlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.as_tensor(x[:1400]), torch.as_tensor(y[:1400])
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    return model, x[1400:1420], y[1400:1420]


def _run(model: nn.Module, x: np.ndarray, y: np.ndarray, dist: str) -> list:
    return mmargin.evaluate(model, x, y, distance=dist, space="box", budget=300,
                            space_options={"lower": 0.0, "upper": 1.0})  # fmt: skip


@pytest.mark.slow
def test_exact_auto_gives_exact_linf_margins(digits) -> None:  # type: ignore[no-untyped-def]
    model, x, y = digits
    results = _run(model, x, y, "linf")
    flipped = [r for r in results if r.status == "flipped"]
    assert len(flipped) >= 15
    exact = [r for r in flipped if r.exact]
    assert len(exact) >= 0.95 * len(flipped)
    assert all(r.bound_method in ("milp", "crown") for r in exact)
    assert all(r.lower_bound is not None and r.lower_bound <= r.margin for r in flipped)
    summary = summarize(results)
    assert summary.bracket_ratio_median is not None
    assert summary.bracket_ratio_median == pytest.approx(1.0, abs=1e-3)
    for eps, certified in summary.certified_robust_accuracy.items():
        assert certified <= summary.robust_accuracy[eps]


def test_l2_gets_certified_lower_bounds_below_the_margin(digits) -> None:  # type: ignore[no-untyped-def]
    model, x, y = digits
    results = _run(model, x, y, "l2")
    flipped = [r for r in results if r.status == "flipped"]
    assert flipped and all(r.bound_method == "crown" for r in flipped)
    assert all(0 < r.lower_bound <= r.margin for r in flipped)  # type: ignore[operator]
    summary = summarize(results)
    ratio = summary.bracket_ratio_median
    assert ratio is not None and 1.0 <= ratio < math.inf
    assert summary.to_json()["certified_robust_accuracy"]
