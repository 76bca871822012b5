"""The probes a sample skips in a short L2 plan when its Lagrangian run beat its first
ε-ball run (:func:`mmargin.engine.passes.won_probes`): which plans, where the steps go,
and the budget."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from engine_fakes import exact_flip, far_box, mlp, random_linear

import mmargin.engine.gradient as gradient
from mmargin.distances import lp
from mmargin.engine.lagrangian_plan import lagrangian_steps
from mmargin.engine.passes import search_legs, won_probes
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Untargeted
from mmargin.spaces import box


def _plan(steps: int, p: float, config: GradientConfig) -> list[Any]:
    return search_legs(steps, p, config, lagrangian_steps(steps, p, config))


def test_only_a_short_l2_plan_whose_probes_have_no_exit_skips_probes() -> None:
    config = GradientConfig(won_probes=1)
    assert won_probes(113, 2.0, config, _plan(113, 2.0, config)) == 1  # 250 passes
    # 500 passes: probes of 17 steps, long enough for the hopeless exit (.legstop)
    assert won_probes(238, 2.0, config, _plan(238, 2.0, config)) == 0
    no_exit = GradientConfig(won_probes=1, hopeless=0.0)
    assert won_probes(238, 2.0, no_exit, _plan(238, 2.0, no_exit)) == 1
    for steps in (config.short_steps, 488, 2000):  # the long plan keeps every probe
        assert won_probes(steps, 2.0, config, _plan(steps, 2.0, config)) == 0
        assert won_probes(steps, 2.0, no_exit, _plan(steps, 2.0, no_exit)) == 0
    for p in (1.0, math.inf, 0.0):
        assert won_probes(113, p, config, _plan(113, p, config)) == 0
    off = GradientConfig(won_probes=0)
    assert won_probes(113, 2.0, off, _plan(113, 2.0, off)) == 0
    no_refine = [leg for leg in _plan(113, 2.0, config) if leg.kind != "refine"]
    assert won_probes(113, 2.0, config, no_refine) == 0
    with pytest.raises(ValueError, match="won_probes"):
        GradientConfig(won_probes=-1)


def _search(model: torch.nn.Module, x: torch.Tensor, passes: int, config: GradientConfig,
            classes: int) -> SearchState:  # fmt: skip
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    problem = Problem(model, far_box(), lp("l2"), Untargeted(), x, labels)
    return gradient.gradient_search(problem, passes, config, streams, classes)


@pytest.mark.parametrize("drop", [1, 2])
def test_the_skipped_probes_steps_go_to_the_refinement_of_the_samples_that_won(
    monkeypatch: Any, drop: int
) -> None:
    """250 passes: the Lagrangian run is made to "win" on the even samples (their best norm
    halved after it). Those skip the last ``drop`` probes and their last refinement runs
    for its own steps plus the skipped probes'; the odd samples run every probe and the
    planned refinement; every sample spends the same passes, within the budget."""
    real_lagrangian, real_epsball = gradient.lagrangian_run, gradient.epsball_run
    calls: list[dict[str, Any]] = []

    def lagrangian(problem: Problem, steps: int, state: SearchState, **kw: Any) -> None:
        real_lagrangian(problem, steps, state, **kw)
        state.best_norm[::2] *= 0.5  # the even samples' Lagrangian run "won"

    def epsball(*args: Any, **kw: Any) -> None:
        only, lengths = kw.get("only"), kw.get("lengths")
        calls.append({"steps": args[1], "against": args[5] if len(args) > 5 else None,
                      "only": None if only is None else only.clone(),
                      "lengths": None if lengths is None else lengths.clone()})  # fmt: skip
        real_epsball(*args, **kw)

    monkeypatch.setattr(gradient, "lagrangian_run", lagrangian)
    monkeypatch.setattr(gradient, "epsball_run", epsball)
    model, x = random_linear(0, 12, 5, 8)
    config = GradientConfig(won_probes=drop)
    state = _search(model, x, 250, config, 5)
    steps = 250 // 2 - 3  # the ranking of 4 classes costs 5 passes
    plan = _plan(steps, 2.0, config)
    probes = [leg for leg in plan if leg.kind == "probe"]
    (refine,) = [leg for leg in plan if leg.kind == "refine"]
    assert len(probes) == 2 and len(calls) == 1 + len(probes) + 1
    even = torch.arange(len(x)) % 2 == 0
    for leg, call in zip(probes, calls[1:-1], strict=True):
        skipped = leg.index >= len(probes) - drop
        assert call["steps"] == leg.steps
        assert bool((call["only"] == ~(even & skipped)).all()), (leg, call["only"])
    handed = sum(leg.steps for leg in probes[len(probes) - drop :])
    last = calls[-1]
    assert last["steps"] == refine.steps + handed
    want = torch.where(even, refine.steps + handed, refine.steps)
    assert torch.equal(last["lengths"], want)
    assert bool((state.queries == state.queries[0]).all()), state.queries.tolist()
    assert bool((state.queries <= 250).all())


def test_nothing_changes_where_no_lagrangian_run_won(monkeypatch: Any) -> None:
    """A linear model, whose first ε-ball run already ends on the exact minimum: the
    Lagrangian run never beats it, so the search with the rule on gives the same flips and
    passes as without it."""
    model, x = random_linear(1, 16, 5, 10)
    # the first run as it was (ε factor from gamma_init: .short_first): with 0.3, one
    # sample's first run ended 4e-4 above the minimum and the Lagrangian run won there
    on = _search(model, x, 250, GradientConfig(won_probes=2, short_first_gamma_l2=0.0), 5)
    off = _search(model, x, 250, GradientConfig(won_probes=0, short_first_gamma_l2=0.0), 5)
    assert torch.equal(on.best_norm, off.best_norm)
    assert torch.equal(on.queries, off.queries)


@pytest.mark.parametrize("drop", [1, 2])
def test_the_budget_holds_and_flips_stay_real_at_every_short_budget(drop: int) -> None:
    """An MLP whose Lagrangian runs win on some samples and a linear model, at budgets of
    the short plan and the long one: no sample spends more than the budget, and on the
    linear model no flip is below the closed-form minimum."""
    net = mlp(3, d=8, k=4)
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(24, 8, generator=gen)
    with torch.no_grad():
        labels = net(x).argmax(dim=1)
    config = GradientConfig(won_probes=drop)
    model, xl = random_linear(2, 16, 5, 10)
    with torch.no_grad():
        exact = exact_flip(model, xl, model(xl).argmax(dim=1))
    for passes in (160, 250, 400, 500, 700, 1000):
        streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
        problem = Problem(net, box(0.0, 1.0), lp("l2"), Untargeted(), x, labels)
        state = gradient.gradient_search(problem, passes, config, streams, 4)
        assert bool((state.queries <= passes).all()), (passes, state.queries.max())
        linear = _search(model, xl, passes, config, 5)
        assert bool((linear.queries <= passes).all())
        assert bool((linear.best_norm >= exact * (1 - 1e-5)).all())
