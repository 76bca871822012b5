"""The engine against exact margins: closed forms on linear models, LP in a boxed space.

Linear models are where the exact minimal perturbation is known for every norm, so the
gradient strategy must land on it (found / exact: median ≤ 1.01, max ≤ 1.05).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmargin.adapters import TorchAdapter
from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.spec import SearchSpec
from mmargin.exact.linear import linear_margin
from mmargin.goals import Targeted
from mmargin.results import Status
from mmargin.spaces import box
from mmargin.testing import closed_form_margin, linear_model

CASES = [(4, 2), (20, 3), (100, 10), (784, 10)]


@pytest.mark.parametrize("name", ["l2", "linf", "l1"])
@pytest.mark.parametrize(("dim", "classes"), CASES)
def test_engine_matches_closed_form_on_linear_models(name: str, dim: int, classes: int) -> None:
    model = linear_model(dim, classes, seed=dim + classes)
    x = torch.randn(40, dim, generator=torch.Generator().manual_seed(1)).numpy()
    labels = model(torch.as_tensor(x)).argmax(1).numpy()
    distance = lp(name)
    results = minimal_flip(TorchAdapter(model), box(), distance, x, labels)
    exact = np.array([closed_form_margin(model, x[i], int(labels[i]), distance.p)
                      for i in range(len(x))])  # fmt: skip
    found = np.array([r.margin for r in results])
    assert all(r.status is Status.FLIPPED and r.verified for r in results)
    ratio = found / exact
    assert np.median(ratio) <= 1.01
    assert ratio.max() <= 1.05
    assert ratio.min() >= 1 - 1e-4  # never below the exact minimum (up to float32 rounding)
    assert all(r.queries <= 1000 for r in results)


@pytest.mark.parametrize("name", ["linf", "l1"])
def test_engine_on_a_boxed_feature_space_matches_the_lp(name: str) -> None:
    """A non-image space: plain feature vectors with per-feature bounds and a frozen feature.

    The box binds, so the closed form is not the answer; the exact LP from
    :func:`linear_margin` is.
    """
    dim, classes = 6, 3
    model = linear_model(dim, classes, seed=7)
    rng = np.random.default_rng(0)
    lower = np.array([-1.0, -0.2, -1.0, 0.0, -0.3, -1.0])
    upper = np.array([1.0, 0.2, 1.0, 0.5, 0.3, 1.0])
    mask = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    x = rng.uniform(lower, upper, size=(30, dim)).astype(np.float32)
    labels = model(torch.as_tensor(x)).argmax(1).numpy()
    space = box(lower, upper, mask=mask)
    distance = lp(name)
    results = minimal_flip(TorchAdapter(model), space, distance, x, labels, exact=None)
    w = model.weight.detach().double().numpy()
    b = model.bias.detach().double().numpy()
    ratios = []
    for i, r in enumerate(results):
        ex = linear_margin(w, b, x[i].astype(np.float64), int(labels[i]), distance.p,
                           lower=lower, upper=upper, mask=mask)  # fmt: skip
        if not math.isfinite(ex.margin):
            assert r.status is Status.NOT_FLIPPED
            continue
        assert r.status is Status.FLIPPED
        adv = np.asarray(r.adversarial, dtype=np.float64)
        assert np.all(adv >= lower - 1e-6) and np.all(adv <= upper + 1e-6)
        assert adv[2] == pytest.approx(float(x[i, 2]))  # the frozen feature never moves
        ratios.append(r.margin / ex.lower)
    assert len(ratios) >= 20
    assert np.median(ratios) <= 1.01
    assert max(ratios) <= 1.05
    assert min(ratios) >= 1 - 1e-4


@pytest.mark.parametrize("name", ["l2", "linf"])
def test_targeted_goal_reaches_the_target_class_at_the_exact_cost(name: str) -> None:
    dim, classes, target = 10, 4, 2
    model = linear_model(dim, classes, seed=3)
    x = torch.randn(30, dim, generator=torch.Generator().manual_seed(5)).numpy()
    labels = model(torch.as_tensor(x)).argmax(1).numpy()
    distance = lp(name)
    results = minimal_flip(TorchAdapter(model), box(), distance, x, labels,
                           goal=Targeted(target))  # fmt: skip
    w = model.weight.detach().double().numpy()
    b = model.bias.detach().double().numpy()
    ratios = []
    for i, r in enumerate(results):
        if labels[i] == target:
            assert r.status is Status.ERROR and "target" in r.message
            continue
        assert r.status is Status.FLIPPED and r.adv_label == target
        ex = linear_margin(w, b, x[i].astype(np.float64), int(labels[i]), distance.p,
                           target=target)  # fmt: skip
        ratios.append(r.margin / ex.lower)
    assert np.median(ratios) <= 1.01 and max(ratios) <= 1.05


def test_l0_finds_the_single_coordinate_flip_of_a_sparse_model() -> None:
    """Only one input feature matters: the L0 margin must be exactly 1."""
    model = torch.nn.Linear(8, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1, 3] = 5.0
        model.bias.copy_(torch.tensor([0.5, 0.0]))
    x = np.zeros((5, 8), dtype=np.float32)
    labels = np.zeros(5, dtype=np.int64)
    results = minimal_flip(TorchAdapter(model), box(-1.0, 1.0), lp("l0"), x, labels)
    assert [r.margin for r in results] == [1.0] * 5
    assert all(np.count_nonzero(r.adversarial) == 1 for r in results)


def test_budget_is_respected_and_counted() -> None:
    model = linear_model(30, 5, seed=0)
    x = torch.randn(10, 30, generator=torch.Generator().manual_seed(2)).numpy()
    labels = model(torch.as_tensor(x)).argmax(1).numpy()
    for budget in (40, 200):
        results = minimal_flip(TorchAdapter(model), box(), lp("l2"), x, labels,
                               spec=SearchSpec(budget=budget))  # fmt: skip
        assert all(0 < r.queries <= budget for r in results)
