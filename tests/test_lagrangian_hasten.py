"""The L2 plans' hastened Lagrangian runs
(:func:`mmargin.engine.lagrangian_plan.lagrangian_hasten`): which plans have it, which samples
it touches (those without a flip after its first steps), per-sample independence and the
budget."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch
from engine_fakes import exact_flip, far_box, linear_search, mlp, random_linear

import mmargin.engine.gradient as gradient
from mmargin.distances import lp
from mmargin.engine.lagrangian import lagrangian_run
from mmargin.engine.lagrangian_plan import lagrangian_hasten
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Untargeted
from mmargin.spaces import box


def test_only_l2_plans_hasten_their_lagrangian_runs() -> None:
    """Short L2 plans with ``short_hasten``, long ones with ``long_hasten``, each off at 1;
    no other distance."""
    config = GradientConfig(long_hasten=0.5)
    hasten = (config.hasten_after, config.short_hasten)
    assert lagrangian_hasten(120, 2.0, config) == hasten  # 250 passes
    assert lagrangian_hasten(config.short_steps - 1, 2.0, config) == hasten
    long = (config.hasten_after, 0.5)
    assert lagrangian_hasten(config.short_steps, 2.0, config) == long  # the long plan
    assert lagrangian_hasten(498, 2.0, config) == long  # 1000 passes
    for p in (1.0, math.inf, 0.0):
        assert lagrangian_hasten(120, p, config) is None
        assert lagrangian_hasten(498, p, config) is None
    short_off = GradientConfig(short_hasten=1.0)
    assert lagrangian_hasten(120, 2.0, short_off) is None
    assert lagrangian_hasten(498, 2.0, short_off) is not None
    long_off = GradientConfig(long_hasten=1.0)
    assert lagrangian_hasten(120, 2.0, long_off) is not None
    assert lagrangian_hasten(498, 2.0, long_off) is None
    for bad in ({"short_hasten": 0.0}, {"short_hasten": 1.5}, {"hasten_after": -1},
                {"long_hasten": 0.0}, {"long_hasten": 1.5}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            GradientConfig(**bad)


class _Watch:
    """The model, noting before every call which samples have a flip on record."""

    def __init__(self, model: torch.nn.Module, state: SearchState) -> None:
        self.model, self.state = model, state
        self.seen: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.isfinite(self.state.best_norm).clone())
        return self.model(x)

    def first_flips(self) -> list[int]:
        """Per sample, after how many steps its first flip was on record."""
        seen = torch.stack([*self.seen[1:], torch.isfinite(self.state.best_norm)])
        assert bool(seen[-1].all())
        return seen.int().argmax(dim=0).add(1).tolist()


def _near_and_far() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """A linear model whose class 0 has a large bias: points well inside class 0 are far
    from its boundary in the constraint's terms (its spread-normalised loss barely moves),
    so a plain run takes over 8 steps to flip them; the first three points are moved 97 %
    of the way to their nearest boundary and flip at once."""
    model, x = random_linear(3, 12, 5, 6)
    with torch.no_grad():
        model.bias[0] = 20.0
        labels = model(x).argmax(dim=1)
        assert bool((labels == 0).all())
        w = model.weight
        z = model(x)
        gaps = z[:, :1] - z  # z_y − z_j
        dist = (w[:1] - w).norm(dim=1).clamp(min=1e-12)
        ratio = gaps / dist
        ratio[:, 0] = float("inf")
        j = ratio.argmin(dim=1)
        toward = (w[j] - w[0]) / dist[j].unsqueeze(1)
        x[:3] += 0.97 * ratio.min(dim=1).values[:3].unsqueeze(1) * toward[:3]
    return model, x, labels


def _run(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor,
         hasten: tuple[int, float] | None) -> tuple[SearchState, list[int]]:  # fmt: skip
    state = SearchState.empty(x)
    watch = _Watch(model, state)
    problem = Problem(watch, far_box(), lp("l2"), Untargeted(), x, labels)
    lagrangian_run(problem, 60, state, lr_init=0.1, hasten=hasten)
    return state, watch.first_flips()


def test_only_the_samples_without_a_flip_after_its_first_steps_are_hastened() -> None:
    """A sample that flipped within the first ``after`` steps runs exactly as without the
    rule (the same flip, bit for bit); one that had not flips sooner, and every flip is
    above the closed-form minimum."""
    model, x, labels = _near_and_far()
    plain, plain_first = _run(model, x, labels, None)
    fast, fast_first = _run(model, x, labels, (8, 0.3))
    assert max(plain_first[:3]) <= 8 < min(plain_first[3:])
    assert fast_first[:3] == plain_first[:3]
    assert torch.equal(fast.best_delta[:3], plain.best_delta[:3])
    assert torch.equal(fast.best_norm[:3], plain.best_norm[:3])
    assert all(f < p for f, p in zip(fast_first[3:], plain_first[3:], strict=True))
    assert bool((fast.best_norm >= exact_flip(model, x, labels) * (1 - 1e-5)).all())
    assert fast.queries.tolist() == plain.queries.tolist() == [120] * len(x)


def test_a_hastened_sample_gets_the_same_result_alone_as_in_its_batch() -> None:
    """Each sample's first flip comes at the same step alone as in its batch, and the
    hastened (far) samples end at the same flip. (The near ones, which flip in the first
    steps right at their boundary, end up to 0.6 % apart alone and in the batch with or
    without the rule: the batch shape's rounding, amplified there.)"""
    model, x, labels = _near_and_far()
    together, first = _run(model, x, labels, (8, 0.3))
    for i in range(len(x)):
        alone, own = _run(model, x[i : i + 1], labels[i : i + 1], (8, 0.3))
        assert own == [first[i]]
        assert int(alone.queries[0]) == int(together.queries[i])
        if i >= 3:
            assert float(alone.best_norm[0]) == pytest.approx(float(together.best_norm[i]),
                                                              rel=1e-5)  # fmt: skip


def test_the_search_hastens_each_of_its_lagrangian_runs(monkeypatch: Any) -> None:
    """The long plan's two runs with ``long_hasten`` (none with it 1), the short plan's one
    with ``short_hasten``."""
    calls: list[tuple[int, Any]] = []

    def spy(*args: Any, **kw: Any) -> None:
        calls.append((args[1], kw.get("hasten")))
        lagrangian_run(*args, **kw)

    monkeypatch.setattr(gradient, "lagrangian_run", spy)
    model, x = random_linear(2, 12, 4, 4)
    config = GradientConfig(unspent_lr=0.0)
    state = linear_search(model, x, config)  # 1000 passes: the long plan, two runs
    assert bool((state.queries <= 1000).all())
    assert [h for _, h in calls] == [(config.hasten_after, config.long_hasten)] * 2
    calls.clear()
    linear_search(model, x, replace(config, long_hasten=1.0))
    assert len(calls) == 2 and all(h is None for _, h in calls)
    calls.clear()
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    problem = Problem(model, far_box(), lp("l2"), Untargeted(), x, labels)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    gradient.gradient_search(problem, 250, config, streams, 4)
    assert [h for _, h in calls] == [(config.hasten_after, config.short_hasten)]


@pytest.mark.parametrize("passes", [160, 200, 240, 250, 260, 300, 500, 700, 1000])
def test_no_sample_spends_more_than_its_passes(passes: int) -> None:
    net = mlp(5, d=8, k=4)
    x = torch.rand(12, 8, generator=torch.Generator().manual_seed(passes))
    with torch.no_grad():
        labels = net(x).argmax(dim=1)
    problem = Problem(net, box(0.0, 1.0), lp("l2"), Untargeted(), x, labels)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    state = gradient.gradient_search(problem, passes, GradientConfig(), streams, 4)
    assert bool((state.queries <= passes).all())
    assert bool((state.queries > passes // 2).all())
