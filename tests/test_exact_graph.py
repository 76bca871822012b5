"""Exact margins and certified lower bounds for models written as ``nn.Module`` subclasses.

Oracles: the module's own forward (tracing), sampled points of the input set (bounds are
sound), the MILP (lower ≤ exact ≤ the engine's verified margin, CROWN ≥ interval) and a
dense grid on a 2-D toy (the MILP margin is the brute-force one).
"""

from __future__ import annotations

import copy
import math
import warnings
from itertools import product

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmargin
from mmargin.exact.certify import certified_radius
from mmargin.exact.crown import BoundConfig, Region, propagator
from mmargin.exact.graph import UnsupportedModel
from mmargin.exact.milp import net_margin
from mmargin.exact.problem import ExactModel, feature_constraints
from mmargin.exact.rules import argmax_rule
from mmargin.exact.tracing import trace

torch.set_num_threads(1)
INF = math.inf


class Mlp(nn.Module):
    """The ordinary way of writing a network: named layers and a forward."""

    def __init__(self, d: int = 12, h: int = 10, k: int = 3) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.size(0), -1)
        return self.fc3(torch.relu(self.fc2(F.relu(self.fc1(x)))))


class SmallCnn(nn.Module):
    """Conv, batch norm, a residual block, max- and average pooling, a constant shift."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(kernel_size=(1, 1))
        self.fc = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv1((x - 0.5) * 2.0)))
        h = h + F.relu(self.conv2(h))
        h = self.avg(self.pool(h))
        return self.fc(torch.flatten(h, 1))


def _cnn(seed: int = 0) -> SmallCnn:
    torch.manual_seed(seed)
    m = SmallCnn().double().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.3, 0.3)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


def _mlp(seed: int = 0) -> Mlp:
    torch.manual_seed(seed)
    return Mlp().double().eval()


def test_traced_graph_computes_what_the_module_computes() -> None:
    for module, shape in ((_mlp(), (12,)), (_cnn(), (1, 4, 4))):
        mean, std = np.full(int(np.prod(shape)), 0.2), np.full(int(np.prod(shape)), 0.5)
        graph = trace(module, shape, mean, std)
        x = torch.rand(7, *shape, dtype=torch.float64)
        with torch.no_grad():
            expected = module((x - 0.2) / 0.5)
        np.testing.assert_allclose(graph.forward(x)[-1].numpy(), expected.numpy(), atol=1e-12)
    kinds = [n.kind for n in trace(_cnn(), (1, 4, 4)).nodes]
    assert {"add", "maxpool", "relu", "affine"} <= set(kinds)


class _Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.sigmoid(8.0 * (x - 0.5)))


def test_an_unsupported_operation_is_named_and_the_search_still_runs() -> None:
    torch.manual_seed(0)
    with pytest.raises(UnsupportedModel, match="sigmoid"):
        trace(_Sigmoid(), (4,))
    x = np.random.default_rng(0).uniform(0.2, 0.8, size=(3, 4)).astype(np.float32)
    model = _Sigmoid()
    labels = model(torch.as_tensor(x)).argmax(1).numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = mmargin.evaluate(model, x, labels, distance="linf", space="box",
                               space_options={"lower": 0.0, "upper": 1.0}, budget=200)  # fmt: skip
    assert any("sigmoid" in str(w.message) for w in caught)
    assert all(r.status != "error" and r.lower_bound is None for r in res)
    assert any(r.status == "flipped" for r in res)


def _region(x: np.ndarray, eps: float, p: float) -> Region:
    b, d = x.shape
    t = torch.as_tensor(x)
    return Region(t, torch.zeros(b, d, dtype=torch.float64), torch.ones(b, d, dtype=torch.float64),
                  torch.full((b,), eps, dtype=torch.float64), p,
                  torch.ones(d, dtype=torch.float64))  # fmt: skip


@pytest.mark.parametrize(("p", "eps"), [(INF, 0.05), (2.0, 0.3), (1.0, 0.8)])
def test_bounds_hold_on_sampled_points_and_crown_is_tighter(p: float, eps: float) -> None:
    graph = trace(_cnn(1), (1, 4, 4))
    prop = propagator(graph)
    x = np.random.default_rng(1).uniform(0.1, 0.9, size=(3, 16))
    region = _region(x, eps, p)
    with torch.no_grad():
        crown = prop.bounds(region, "crown", crown_budget=1 << 60, output=True)
        ival = prop.bounds(region, "interval")
    gen = torch.Generator().manual_seed(2)
    d = torch.randn(3000, 3, 16, generator=gen, dtype=torch.float64)
    if p == INF:
        d = d.sign()
    d = d / torch.linalg.vector_norm(d, ord=p, dim=-1, keepdim=True) * eps
    d = d * torch.rand(3000, 3, 1, generator=gen, dtype=torch.float64)
    pts = (torch.as_tensor(x) + d).clamp(0, 1).reshape(-1, 1, 4, 4)
    with torch.no_grad():
        values = graph.forward(pts)
    for v, (lc, uc), (li, ui) in zip(values, crown, ival, strict=True):
        v = v.reshape(3000, 3, -1)
        lc, uc, li, ui = (a.reshape(1, 3, -1) for a in (lc, uc, li, ui))
        assert torch.all(v >= lc - 1e-9) and torch.all(v <= uc + 1e-9)
        assert torch.all(lc >= li - 1e-9) and torch.all(uc <= ui + 1e-9)
    widths = sum(float((u - lo).sum()) for lo, u in crown[1:])
    assert widths < sum(float((u - lo).sum()) for lo, u in ival[1:])


def _engine(module: nn.Module, x: np.ndarray, labels: np.ndarray, dist: str) -> list:
    model = copy.deepcopy(module).float()
    return mmargin.evaluate(model, x, labels, distance=dist, space="box", budget=400,
                            space_options={"lower": 0.0, "upper": 1.0}, exact="never")  # fmt: skip


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_lower_bound_below_milp_below_engine(which: str) -> None:
    module = _mlp(2) if which == "mlp" else _cnn(2)
    shape = (12,) if which == "mlp" else (1, 4, 4)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 0.8, size=(3, *shape))
    with torch.no_grad():
        labels = module(torch.as_tensor(x)).argmax(1).numpy()
    form = ExactModel("logits", module=module).for_input(shape)
    graph = form.network()
    assert graph is not None
    net = form.layers if form.layers is not None else form.graph
    assert net is not None
    rules = [argmax_rule(3, int(lab), None) for lab in labels]
    flat = x.reshape(3, -1)
    for dist, p in (("linf", INF), ("l1", 1.0), ("l2", 2.0)):
        found = _engine(module, x.astype(np.float32), labels, dist)
        radii = {}
        for method in ("crown", "interval"):
            radii[method] = certified_radius(graph, flat, rules, p, lower=0.0, upper=1.0,
                                             config=BoundConfig(method=method))  # fmt: skip
        assert np.all(radii["crown"] >= radii["interval"])
        for i, r in enumerate(found):
            upper = r.margin * (1 + 1e-4) + 1e-6
            assert radii["crown"][i] <= upper
            if p == 2.0:
                continue
            cons = feature_constraints(flat[i], p, lower=0.0, upper=1.0)
            exact = net_margin(net, rules[i], cons, upper_bound=r.margin,
                               lower_hint=float(radii["crown"][i]))  # fmt: skip
            assert exact.optimal
            assert radii["crown"][i] <= exact.margin * (1 + 1e-6) + 1e-9 <= upper


class Toy2d(nn.Module):
    """Two inputs, a residual ReLU block and a max over pairs of units."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(2, 8)
        self.res = nn.Linear(8, 8)
        self.pool = nn.MaxPool1d(2)
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(x))
        h = h + F.relu(self.res(h))
        return self.out(self.pool(h[:, None, :]).flatten(1))


@pytest.mark.parametrize("p", [INF, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_milp_margin_on_a_2d_toy_is_the_brute_force_one(p: float, seed: int) -> None:
    torch.manual_seed(seed)
    module = Toy2d().double().eval()
    x = np.random.default_rng(seed).uniform(0.3, 0.7, size=2)
    graph = trace(module, (2,))
    assert [n.kind for n in graph.nodes].count("maxpool") == 1
    label = int(np.argmax(graph.logits(x)))
    rule = argmax_rule(3, label, None)
    found = net_margin(graph, rule, feature_constraints(x, p, lower=0.0, upper=1.0))
    axes = [np.linspace(0.0, 1.0, 401)] * 2
    grid = np.array(list(product(*axes)))
    with torch.no_grad():
        labels = module(torch.as_tensor(grid)).argmax(1).numpy()
    flips = grid[labels != label]
    if not math.isfinite(found.margin):
        assert flips.size == 0
        return
    assert found.optimal and found.adversarial is not None
    assert rule.holds(graph.logits(found.adversarial))
    brute = np.linalg.norm(flips - x, ord=p, axis=1).min()
    step = 1.0 / 400 * (2 if p == 1.0 else 1)
    assert found.margin <= brute + 1e-9
    assert found.margin >= brute - step


def test_alpha_crown_is_at_least_crown_and_never_above_the_milp() -> None:
    module = _mlp(4)
    x = np.random.default_rng(5).uniform(0.2, 0.8, size=(3, 12))
    graph = trace(module, (12,))
    layers = ExactModel("logits", module=module).for_input((12,)).layers
    assert layers is not None
    labels = [int(np.argmax(graph.logits(row))) for row in x]
    rules = [argmax_rule(3, lab, None) for lab in labels]
    radii = {
        m: certified_radius(graph, x, rules, INF, lower=0.0, upper=1.0,
                            config=BoundConfig(method=m, alpha_steps=10))
        for m in ("crown", "alpha-crown")
    }  # fmt: skip
    assert np.all(radii["alpha-crown"] >= radii["crown"] * (1 - 1e-3))
    for i, rule in enumerate(rules):
        exact = net_margin(layers, rule, feature_constraints(x[i], INF, lower=0.0, upper=1.0))
        assert exact.optimal and radii["alpha-crown"][i] <= exact.margin * (1 + 1e-6) + 1e-9
