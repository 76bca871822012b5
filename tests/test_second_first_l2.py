"""The second first run of a long L2 search (``second_first_l2``,
:func:`mmargin.engine.passes.second_first`): a share of the first ε-ball run's steps goes to
another run from the clean input whose ε factor starts at ``second_gamma_l2``
(:func:`mmargin.engine.short_first.second_config`); short plans and the share 0 keep one
first run."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch
from engine_fakes import exact_flip, linear_search, random_linear, spy_runs

from mmargin.engine.lagrangian_plan import lagrangian_steps, second_steps
from mmargin.engine.passes import Leg, search_legs
from mmargin.engine.short_first import second_config
from mmargin.engine.spec import GradientConfig

ON = GradientConfig(second_first_l2=0.5)


def _spent(steps: int, config: GradientConfig) -> int:
    """The steps of a long L2 plan's two Lagrangian runs."""
    lagrange = lagrangian_steps(steps, 2.0, config)
    return lagrange + second_steps(steps, 2.0, config)


def test_a_long_l2_plan_splits_its_first_run() -> None:
    off = replace(ON, second_first_l2=0.0)
    for steps in (ON.short_steps, 495, 2000):
        one = search_legs(steps, 2.0, off, _spent(steps, off))
        two = search_legs(steps, 2.0, ON, _spent(steps, ON))
        first = one[0].steps
        kept = int(first * (1 - ON.second_first_l2))
        assert two[:2] == [Leg("first", kept), Leg("second", first - kept)]
        assert two[2:] == one[1:]  # the probes and refinements as they were
        assert "second" not in [leg.kind for leg in one]
    # a short L2 plan (under 800 passes) keeps one first run
    for steps in (ON.short_steps - 1, 120):
        assert "second" not in [leg.kind for leg in search_legs(steps, 2.0, ON)]


def test_the_second_run_takes_its_own_eps_factor_per_distance() -> None:
    config = replace(ON, second_gamma_l2=0.2, second_gamma_linf=0.4)
    assert second_config(2.0, config) == replace(config, gamma_init=0.2)
    assert second_config(1.0, config) == replace(config, l1_slow_after=0)
    assert second_config(math.inf, config) == replace(config, gamma_init=0.4)
    assert second_config(0.0, config) == config


def test_the_options_are_checked() -> None:
    with pytest.raises(ValueError, match="second_first_l2"):
        GradientConfig(second_first_l2=0.95)
    with pytest.raises(ValueError, match="second_gamma_l2"):
        GradientConfig(second_gamma_l2=0.0)


@pytest.mark.parametrize("share", [0.5, 0.0])
def test_the_search_runs_it_from_the_clean_input(monkeypatch: Any, share: float) -> None:
    """A 1000-pass L2 search: the first ε-ball run, then (with the share) the second from
    the clean input toward no chosen class with the ε factor ``second_gamma_l2``, each for
    its own share of the steps; without it one first run and every run at ``gamma_init``."""
    calls = spy_runs(monkeypatch, lambda c: c.gamma_init)
    model, x = random_linear(3, 12, 4, 4)
    config = replace(ON, second_first_l2=share, second_gamma_l2=0.2)
    state = linear_search(model, x, config, passes=1000, norm="l2")
    assert bool((state.queries <= 1000).all())
    steps = 1000 // 2 - 2  # the plan's steps after the ranking (3 classes: 4 passes)
    plan = search_legs(steps, 2.0, config, _spent(steps, config))
    gamma = config.gamma_init
    if share:
        assert calls[:2] == [(plan[0].steps, True, True, gamma), (plan[1].steps, True, True, 0.2)]
        assert all(g == gamma for *_, g in calls[2:])
    else:
        assert calls[0] == (plan[0].steps, True, True, gamma)
        assert all(g == gamma for *_, g in calls)


def test_the_linear_models_l2_flips_stay_at_the_closed_form() -> None:
    """On a linear model in a far box the 1000-pass L2 search with the split ends within
    1 % of the minimal L2 flip (:func:`engine_fakes.exact_flip`), never below it."""
    model, x = random_linear(5, 12, 4, 6)
    state = linear_search(model, x, ON, norm="l2")
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    ratio = state.best_norm / exact_flip(model, x, labels)
    assert bool((ratio >= 1 - 1e-6).all())
    assert float(ratio.max()) <= 1.01
