"""Bad samples and bad models never sink a run: they become per-sample statuses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmargin.adapters import TorchAdapter
from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.spec import SearchSpec
from mmargin.errors import InvalidInputError
from mmargin.results import Status
from mmargin.spaces import box
from mmargin.testing import linear_model


class Flaky(torch.nn.Module):
    """Raises whenever a batch contains an input whose first feature is 99 (a poisoned row)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = linear_model(5, 3, seed=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] == 99).any()):
            raise RuntimeError("poisoned input")
        return self.inner(x)


class NaNOnNegative(torch.nn.Module):
    """Returns NaN scores for inputs whose first feature is negative."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = linear_model(5, 3, seed=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        bad = (x[:, 0] < -5).unsqueeze(1)
        return torch.where(bad, torch.full_like(out, math.nan), out)


def _data(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(0)).numpy()
    labels = linear_model(5, 3, seed=0)(torch.as_tensor(x)).argmax(1).numpy()
    return x, labels


def test_a_model_that_raises_on_one_sample_marks_only_that_sample() -> None:
    x, labels = _data()
    x[3, 0] = 99.0
    results = minimal_flip(TorchAdapter(Flaky()), box(), lp("l2"), x, labels,
                           spec=SearchSpec(batch_size=8))  # fmt: skip
    assert results[3].status is Status.ERROR
    assert "poisoned input" in results[3].message
    others = [r for i, r in enumerate(results) if i != 3]
    assert all(r.status is Status.FLIPPED and r.verified for r in others)


def test_nan_scores_are_an_error_for_that_sample() -> None:
    x, labels = _data()
    x[2, 0] = -10.0
    results = minimal_flip(TorchAdapter(NaNOnNegative()), box(), lp("linf"), x, labels)
    assert results[2].status is Status.ERROR and "NaN" in results[2].message
    assert sum(r.status is Status.FLIPPED for r in results) == len(results) - 1


def test_misclassified_samples_get_margin_zero() -> None:
    x, labels = _data()
    wrong = labels.copy()
    wrong[[1, 4]] = (labels[[1, 4]] + 1) % 3
    results = minimal_flip(TorchAdapter(linear_model(5, 3, seed=0)), box(), lp("l2"), x, wrong)
    for i in (1, 4):
        assert results[i].status is Status.MISCLASSIFIED
        assert results[i].margin == 0.0 and results[i].adv_label == labels[i]
    assert all(results[i].status is Status.FLIPPED for i in (0, 2, 3, 5, 6, 7))


def test_nan_and_out_of_bounds_inputs_are_rejected_before_search() -> None:
    x, labels = _data()
    x = np.clip(x, -1, 1)
    x[0, 1] = np.nan
    x[5, 2] = 3.0
    results = minimal_flip(TorchAdapter(linear_model(5, 3, seed=0)), box(-1.0, 1.0), lp("l2"),
                           x, labels)  # fmt: skip
    assert results[0].status is Status.ERROR and "NaN" in results[0].message
    assert results[5].status is Status.ERROR and "outside the bounds" in results[5].message
    assert results[5].queries == 0  # rejected before any model call


def test_wrong_shape_is_rejected_for_the_whole_batch() -> None:
    space = box(sample_shape=(5,))
    with pytest.raises(InvalidInputError, match=r"expected samples of shape \(5,\)"):
        minimal_flip(TorchAdapter(linear_model(5, 3, seed=0)), space, lp("l2"),
                     np.zeros((4, 6), dtype=np.float32), np.zeros(4))  # fmt: skip


def test_no_flip_within_bounds_reports_not_flipped_with_inf() -> None:
    """The only useful feature is frozen: nothing can flip, and nothing is invented."""
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.5, 0.0]))
    x = np.zeros((2, 3), dtype=np.float32)
    space = box(-1.0, 1.0, mask=np.array([0.0, 1.0, 1.0]))
    results = minimal_flip(TorchAdapter(model), space, lp("l2"), x, np.zeros(2), exact=None,
                           spec=SearchSpec(budget=100))  # fmt: skip
    assert all(r.status is Status.NOT_FLIPPED and math.isinf(r.margin) for r in results)
    assert all(r.adversarial is None for r in results)


def test_every_reported_flip_is_adversarial_for_the_model() -> None:
    """Independent re-check of the runner's verification on its own outputs."""
    model = linear_model(12, 4, seed=9)
    x = torch.randn(20, 12, generator=torch.Generator().manual_seed(4)).numpy()
    labels = model(torch.as_tensor(x)).argmax(1).numpy()
    for name in ("l0", "l1", "l2", "linf"):
        results = minimal_flip(TorchAdapter(model), box(), lp(name), x, labels)
        for i, r in enumerate(results):
            adv = torch.as_tensor(r.adversarial)[None]
            assert int(model(adv).argmax()) != labels[i]
            assert float(lp(name).norm(adv - torch.as_tensor(x[i])[None])[0]) == pytest.approx(
                r.margin, rel=1e-5, abs=1e-6
            )
