"""The decision-based strategy against exact margins, and its budget accounting.

Oracles: the closed-form / LP margin of linear models (``linear_margin``) and the tree
MILP (``tree_ensemble_margin``), both under the same box. Budget: a wrapper counts every
row the model sees; the total must equal the passes the results report, and no sample
may exceed the task's budget.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmargin.adapters import CallableAdapter, TorchAdapter
from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.spec import SearchSpec
from mmargin.exact.linear import linear_margin
from mmargin.exact.trees import Tree, TreeEnsemble, tree_ensemble_margin
from mmargin.goals import Targeted
from mmargin.results import Status
from mmargin.spaces import box


class Counting:
    """A numpy linear 3-class model that counts the rows it scores."""

    def __init__(self, d: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(3, d))
        self.b = -self.w @ np.full(d, 0.5) + 0.3 * rng.normal(size=3)
        self.rows = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.rows += x.shape[0]
        return x.astype(np.float64) @ self.w.T + self.b


def _points(d: int, n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, size=(n, d)).astype(np.float32)


@pytest.mark.parametrize(("name", "bound"), [("l1", 1.03), ("l2", 1.25), ("linf", 1.25)])
def test_decision_close_to_exact_linear_margin(name: str, bound: float) -> None:
    model = Counting(20)
    x = _points(20, 24)
    labels = model(x).argmax(axis=1)
    dist = lp(name)
    spec = SearchSpec(budget=1000, strategy="decision", exact="never")
    results = minimal_flip(CallableAdapter(model), box(0.0, 1.0, sample_shape=(20,)), dist, x,
                           labels, spec=spec)  # fmt: skip
    exact = [linear_margin(model.w, model.b, x[i], int(labels[i]), dist.p, lower=0.0, upper=1.0)
             for i in range(len(x))]  # fmt: skip
    ratios = np.array([r.margin / e.margin for r, e in zip(results, exact, strict=True)])
    assert all(r.status is Status.FLIPPED and r.verified for r in results)
    assert np.all(ratios >= 1 - 1e-4)  # never below the proven minimum
    assert np.median(ratios) <= bound


@pytest.mark.parametrize("budget", [60, 400])
def test_budget_is_counted_and_respected(budget: int) -> None:
    model = Counting(8)
    x = _points(8, 10)
    labels = model(x).argmax(axis=1)
    model.rows = 0
    spec = SearchSpec(budget=budget, strategy="decision", exact="never", line_search_steps=5)
    results = minimal_flip(CallableAdapter(model), box(0.0, 1.0, sample_shape=(8,)), lp("l2"), x,
                           labels, spec=spec)  # fmt: skip
    assert model.rows == sum(r.queries for r in results)  # every row is one pass of a sample
    assert max(r.queries for r in results) <= budget
    assert any(r.status is Status.FLIPPED for r in results)


def test_image_shaped_space_with_a_mask_keeps_frozen_pixels() -> None:
    """Any ContinuousSpace: (C, H, W) samples, a mask, a targeted goal."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    mask = np.ones((1, 4, 4))
    mask[0, :2] = 0.0
    space = box(0.0, 1.0, mask=mask, sample_shape=(1, 4, 4))
    x = np.random.default_rng(2).uniform(0.3, 0.7, size=(6, 1, 4, 4)).astype(np.float32)
    adapter = TorchAdapter(net)
    adapter.differentiable = False  # a black box for this test
    with torch.no_grad():
        labels = net(torch.as_tensor(x)).argmax(dim=1).numpy()
    target = int((labels[0] + 1) % 3)
    spec = SearchSpec(budget=500, strategy="decision", exact="never")
    results = minimal_flip(adapter, space, lp("l2"), x, labels, goal=Targeted(target), spec=spec)
    flipped = [r for r in results if r.status is Status.FLIPPED]
    assert flipped
    for r in flipped:
        assert r.adv_label == target
        i = int(r.sample)
        assert np.array_equal(r.adversarial[0, :2], x[i, 0, :2])  # frozen rows untouched
        assert r.adversarial.min() >= 0.0 and r.adversarial.max() <= 1.0


def _forest(seed: int, d: int = 4) -> TreeEnsemble:
    """A random 6-tree binary ensemble (one log-odds output) over [0, 1]^d."""
    rng = np.random.default_rng(seed)
    trees = []
    for _ in range(6):
        n = 15
        feature = np.full(n, -1)
        threshold = np.full(n, -2.0)
        left, right = np.full(n, -1), np.full(n, -1)
        for i in range(7):
            feature[i] = rng.integers(0, d)
            threshold[i] = float(np.round(rng.uniform(0.1, 0.9), 3))
            left[i], right[i] = 2 * i + 1, 2 * i + 2
        trees.append(Tree(feature, threshold, left, right, rng.normal(size=(n, 1))))
    return TreeEnsemble(tuple(trees), d, np.zeros(1), 0.5)


@pytest.mark.parametrize("name", ["l1", "linf"])
def test_decision_on_tree_ensembles_close_to_milp(name: str) -> None:
    ens = _forest(5)

    def scores(x: np.ndarray) -> np.ndarray:
        f = ens.scores(x)[:, 0]
        return np.stack([-f, f], axis=1)

    x = np.random.default_rng(6).uniform(0.05, 0.95, size=(12, 4)).astype(np.float32)
    labels = scores(x).argmax(axis=1)
    dist = lp(name)
    spec = SearchSpec(budget=800, strategy="decision", exact="never")
    results = minimal_flip(CallableAdapter(scores), box(0.0, 1.0, sample_shape=(4,)), dist, x,
                           labels, spec=spec)  # fmt: skip
    ratios = []
    for r, row, label in zip(results, x, labels, strict=True):
        sign = 1.0 if label == 0 else -1.0  # label 0: need f > 0; label 1: need f <= 0
        alt = [(np.array([[sign]]), np.array([1e-9 if label == 0 else 0.0]))]
        e = tree_ensemble_margin(ens, row, alt, dist.p, lower=np.zeros(4), upper=np.ones(4),
                                 free=np.ones(4, dtype=bool))  # fmt: skip
        if math.isfinite(e.margin) and e.margin > 0:
            assert r.status is Status.FLIPPED
            ratios.append(r.margin / e.margin)
    assert ratios and min(ratios) >= 1 - 1e-6
    assert np.median(ratios) <= 1.05


def test_hybrid_on_a_differentiable_model() -> None:
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
    x = np.random.default_rng(3).uniform(0.2, 0.8, size=(8, 6)).astype(np.float32)
    with torch.no_grad():
        labels = net(torch.as_tensor(x)).argmax(dim=1).numpy()
    spec = SearchSpec(budget=300, strategy="hybrid", exact="never")
    results = minimal_flip(TorchAdapter(net), box(0.0, 1.0, sample_shape=(6,)), lp("l2"), x,
                           labels, spec=spec)  # fmt: skip
    grad = minimal_flip(TorchAdapter(net), box(0.0, 1.0, sample_shape=(6,)), lp("l2"), x,
                        labels, spec=SearchSpec(budget=300, exact="never"))  # fmt: skip
    for h, g in zip(results, grad, strict=True):
        assert h.queries <= 300
        if g.status is Status.FLIPPED:
            assert h.status is Status.FLIPPED and h.margin <= g.margin * 1.2
