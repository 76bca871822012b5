"""The random-perturbation baseline against oracles: along a random direction a linear
model flips at ``m / |cos(u, w)|`` (so the L2 ratio is ``|cos|``; along random signs σ
the L∞ ratio is ``|w·σ| / ‖w‖₁``); on a discrete problem
whose edits all push one way the smallest flipping prefix of the random edit sequence is
found by brute force. Its passes are counted like every other pass and fit the budget,
and it depends only on the run's seed and the sample's id."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import engine_fakes as F  # the tests folder is on sys.path (conftest.py)
import numpy as np
import pytest
import torch

from mmargin.adapters import TorchAdapter
from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.baseline import random_edits, streams
from mmargin.engine.spec import DiscreteConfig, SearchSpec
from mmargin.protocols import Edit, ProblemBase
from mmargin.results import Status
from mmargin.spaces import box

D = 8


class _Linear(torch.nn.Module):
    """Two classes: score 0 and ``w·x + b``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = torch.randn(D, generator=gen)
        self.b = 0.3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _linear_case(n: int = 6) -> tuple[_Linear, np.ndarray, np.ndarray]:
    net = _Linear()
    x = np.random.default_rng(1).normal(size=(n, D)).astype(np.float32)
    labels = (x @ net.w.numpy() + net.b > 0).astype(np.int64)
    return net, x, labels


def test_linear_random_margin_is_margin_over_cosine() -> None:
    net, x, labels = _linear_case()
    spec = SearchSpec(budget=400, baseline_passes=64, seed=5)
    results = minimal_flip(TorchAdapter(net), box(), lp("l2"), x, labels, spec=spec)
    w = net.w.double()
    space = box()
    for r, xi, gen in zip(results, x, streams(5, [str(i) for i in range(len(x))]), strict=True):
        u = space.random(torch.as_tensor(xi[None]), gen)[0].double()
        cos = abs(float(u @ w)) / float(w.norm())
        exact = abs(float(torch.as_tensor(xi).double() @ w + net.b)) / float(w.norm())
        assert r.status is Status.FLIPPED
        assert r.random_margin is not None and r.random_ratio is not None
        assert math.isclose(r.random_margin, exact / cos, rel_tol=3e-3)
        assert math.isclose(r.random_ratio, r.margin / r.random_margin, rel_tol=1e-9)
        assert math.isclose(r.random_ratio, cos, rel_tol=5e-3)


def test_linf_random_margin_is_along_random_signs() -> None:
    net, x, labels = _linear_case()
    spec = SearchSpec(budget=400, baseline_passes=64, seed=2)
    results = minimal_flip(TorchAdapter(net), box(), lp("linf"), x, labels, spec=spec)
    w = net.w.double()
    for r, xi, gen in zip(results, x, streams(2, [str(i) for i in range(len(x))]), strict=True):
        signs = box().random(torch.as_tensor(xi[None]), gen)[0].double().sign()
        gap = abs(float(torch.as_tensor(xi).double() @ w + net.b))
        assert r.random_margin is not None and r.random_ratio is not None
        assert math.isclose(r.random_margin, gap / abs(float(signs @ w)), rel_tol=3e-3)
        exact_ratio = abs(float(signs @ w)) / float(w.abs().sum())
        assert math.isclose(r.random_ratio, exact_ratio, rel_tol=5e-3)


def test_random_margin_depends_on_seed_and_id_only() -> None:
    net, x, labels = _linear_case()
    ids = [f"s{i}" for i in range(len(x))]

    def margins(**kw: Any) -> list[float | None]:
        spec = SearchSpec(budget=300, baseline_passes=48, **kw)
        out = minimal_flip(TorchAdapter(net), box(), lp("linf"), x, labels, ids, spec=spec)
        return [r.random_margin for r in out]

    one = margins(batch_size=6, strategy="gradient")
    for other in (margins(batch_size=2, strategy="gradient"), margins(strategy="decision")):
        assert all(a is not None and b is not None and math.isclose(a, b, rel_tol=3e-3)
                   for a, b in zip(one, other, strict=True))  # fmt: skip
    assert margins(seed=9) != one


def test_off_by_default_in_the_engine_and_with_zero_passes() -> None:
    net, x, labels = _linear_case(3)
    for spec in (SearchSpec(budget=100), SearchSpec(budget=100, baseline_passes=0)):
        out = minimal_flip(TorchAdapter(net), box(), lp("l2"), x, labels, spec=spec)
        assert all(r.random_margin is None and r.random_ratio is None for r in out)


def _counted_continuous(budget: int, strategy: str, p: str) -> tuple[list[Any], int]:
    net = F.mlp(seed=4)
    x = F.continuous_data(12, seed=3)
    labels = F.labels_of(net, x)
    adapter, counter = F.black_box(net) if strategy == "decision" else F.torch_adapter(net)
    spec = SearchSpec(budget=budget, strategy=strategy, baseline_passes=20, line_search_steps=6)
    out = minimal_flip(adapter, box(0.0, 1.0, sample_shape=(6,)), lp(p), x, labels, spec=spec)
    return out, counter.rows if strategy == "decision" else counter.passes


def _counted_discrete(budget: int, strategy: str, p: str) -> tuple[list[Any], int]:
    x, labels = F.token_cases(10)
    model = F.TokenModel(F.token_weights())
    space = F.TokenSpace(F.groups(), DiscreteConfig(method=strategy))
    spec = SearchSpec(budget=budget, baseline_passes=20)
    return minimal_flip(model, space, F.EditCount(), x, labels, spec=spec), model.rows


@pytest.mark.parametrize("budget", (1, 5, 25, 150))
@pytest.mark.parametrize(
    "run, strategy, p",
    [(_counted_continuous, "gradient", "l2"), (_counted_continuous, "decision", "linf"),
     (_counted_continuous, "gradient", "l0"), (_counted_discrete, "greedy", "")],
)  # fmt: skip
def test_baseline_passes_are_counted_and_fit_the_budget(
    run: Any, strategy: str, p: str, budget: int
) -> None:
    results, counted = run(budget, strategy, p)
    assert sum(r.queries for r in results) == counted
    assert max(r.queries for r in results) <= budget
    measured = [r for r in results if r.random_margin is not None]
    if budget == 150:
        assert measured
    for r in measured:
        assert r.random_margin > 0
        assert 0 < r.extras["random_passes"] <= 20
        if p == "l0" or not p:
            assert math.isinf(r.random_margin) or r.random_margin == int(r.random_margin)


def test_exact_nudges_leave_the_baseline_its_passes() -> None:
    from mmargin.exact.types import ExactMargin

    def never(x: np.ndarray, label: int, target: int | None, upper: float | None) -> Any:
        return ExactMargin(1.0, 0.0, x.copy(), None, "fake", False, plugin="fake")

    net = F.mlp(seed=4)
    x = F.continuous_data(12, seed=3)
    labels = F.labels_of(net, x)
    adapter, counter = F.torch_adapter(net)
    spec = SearchSpec(budget=150, baseline_passes=20, line_search_steps=6)
    out = minimal_flip(adapter, box(0.0, 1.0, sample_shape=(6,)), lp("l2"), x, labels,
                       spec=spec, exact=never)  # fmt: skip
    assert sum(r.queries for r in out) == counter.passes
    searched = [r for r in out if r.status is not Status.MISCLASSIFIED]
    assert searched and all(r.random_margin is not None for r in searched)
    assert all(r.queries <= 150 for r in out)


# -- discrete: edits that all push the score down, so flips grow with the prefix ---------
@dataclass
class _DownProblem(ProblemBase):
    values: tuple[float, ...]
    drops: Sequence[Sequence[float]]

    def positions(self) -> list[int]:
        return list(range(len(self.values)))

    def candidates(self, position: int) -> list[Edit]:
        return [Edit(position, d, 1.0) for d in self.drops[position]]

    def apply(self, edits: Sequence[Edit]) -> tuple[float, ...]:
        out = list(self.values)
        for e in edits:
            out[e.position] -= e.value
        return tuple(out)


@dataclass
class _DownSpace:
    drops: Sequence[Sequence[float]]
    name: str = "down"
    modality: str = "toy"
    search_config: Any = None

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        return [None] * len(inputs)

    def problem(self, model: Any, x: Any) -> _DownProblem:
        return _DownProblem(tuple(x), self.drops)


class _SumModel:
    differentiable = False
    device = torch.device("cpu")

    def __call__(self, batch: Sequence[tuple[float, ...]]) -> torch.Tensor:
        s = torch.tensor([sum(x) for x in batch], dtype=torch.float64)
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_discrete_random_margin_is_the_smallest_flipping_random_prefix() -> None:
    rng = np.random.default_rng(0)
    n, length = 12, 9
    drops = [list(rng.uniform(0.1, 1.0, size=3)) for _ in range(length)]
    x = [tuple(float(v) for v in rng.uniform(0.0, 1.0, size=length)) for _ in range(n)]
    labels = np.ones(n, dtype=np.int64)
    space, model = _DownSpace(drops), _SumModel()
    spec = SearchSpec(budget=2000, baseline_passes=40, exact="only", seed=3)
    results = minimal_flip(model, space, F.EditCount(), x, labels, spec=spec)
    gens = streams(3, [str(i) for i in range(n)])
    for r, xi, gen in zip(results, x, gens, strict=True):
        problem = space.problem(model, xi)
        seq = random_edits(problem, gen)
        flipping = [k for k in range(1, len(seq) + 1) if sum(problem.apply(seq[:k])) < 0]
        brute = float(flipping[0]) if flipping else math.inf
        assert r.random_margin == brute
        if r.status is Status.FLIPPED:  # exhaustive: the proven minimum, never above chance
            assert r.margin <= r.random_margin
            assert r.random_ratio == (0.0 if math.isinf(brute) else r.margin / brute)
