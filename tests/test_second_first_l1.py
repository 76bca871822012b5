"""The second first run of a long L1 search (:func:`mmargin.engine.passes.second_first`): a
share of the first run's steps goes to another run from the clean input, right after the
first, with every row on the L1 start; short plans, other distances and the share 0 keep one
first run."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from engine_fakes import exact_flip, linear_search, random_linear, spy_runs

from mmargin.engine.lagrangian_plan import lagrangian_steps
from mmargin.engine.passes import ANNEAL_STEPS, Leg, search_legs, second_first
from mmargin.engine.spec import GradientConfig


def test_a_long_l1_plan_splits_its_first_run() -> None:
    config = GradientConfig()
    for steps in (config.short_steps, 495, 2000):
        one = search_legs(steps, 1.0, GradientConfig(second_first_l1=0.0))
        two = search_legs(steps, 1.0, config)
        first = one[0].steps
        kept = int(first * (1 - config.second_first_l1))
        assert two[:2] == [Leg("first", kept), Leg("second", first - kept)]
        assert two[2:] == one[1:]  # the probes and refinements as they were
    # a short L1 plan (500 passes) and L0 keep one first run (L2 and L∞ split theirs:
    # tests/test_second_first_l2.py, tests/test_second_first_linf.py)
    for steps, p in ((config.short_steps - 1, 1.0), (495, 0.0)):
        assert [leg.kind for leg in search_legs(steps, p, config)].count("second") == 0


def test_runs_too_short_to_anneal_are_not_split() -> None:
    plan = [Leg("first", 2 * ANNEAL_STEPS - 1), Leg("refine", 30)]
    assert second_first(plan, 0.5) == plan
    assert second_first([Leg("first", 2 * ANNEAL_STEPS), Leg("refine", 30)], 0.5)[:2] == [
        Leg("first", ANNEAL_STEPS),
        Leg("second", ANNEAL_STEPS),
    ]
    assert second_first(plan, 0.0) == plan


def test_the_share_is_checked() -> None:
    with pytest.raises(ValueError, match="second_first_l1"):
        GradientConfig(second_first_l1=0.95)


@pytest.mark.parametrize("passes", [1000, 500])
def test_the_search_runs_it_from_the_clean_input_on_the_l1_start(
    monkeypatch: Any, passes: int
) -> None:
    """A 1000-pass L1 search: the first ε-ball run (rows switch to the L1 start after
    ``l1_slow_after`` steps), then the second from the clean input toward no chosen class
    with every row on the L1 start, each for its own share; a 500-pass search has one."""
    calls = spy_runs(monkeypatch, lambda c: c.l1_slow_after)
    model, x = random_linear(3, 12, 4, 4)
    config = GradientConfig()
    state = linear_search(model, x, config, passes=passes, norm="l1")
    assert bool((state.queries <= passes).all())
    steps = passes // 2 - 2  # the plan's steps after the ranking (3 classes: 4 passes)
    plan = search_legs(steps, 1.0, config, lagrangian_steps(steps, 1.0, config))
    slow = config.l1_slow_after
    if passes == 1000:
        assert calls[:2] == [(plan[0].steps, True, True, slow), (plan[1].steps, True, True, 0)]
        assert plan[1].kind == "second"
    else:
        assert calls[0] == (plan[0].steps, True, True, slow)
        assert all(not (zero and free and after == 0) for _, zero, free, after in calls[1:])


def test_the_linear_models_l1_flips_stay_at_the_closed_form() -> None:
    """On a linear model in a far box the 1000-pass L1 search ends within 1 % of the minimal
    L1 flip (:func:`engine_fakes.exact_flip`, dual norm L∞), never below it."""
    model, x = random_linear(5, 12, 4, 6)
    state = linear_search(model, x, GradientConfig(), norm="l1")
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    ratio = state.best_norm / exact_flip(model, x, labels, dual=math.inf)
    assert bool((ratio >= 1 - 1e-6).all())
    assert float(ratio.max()) <= 1.01
