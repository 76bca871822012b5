"""The second first run of a long L∞ search (:func:`mmargin.engine.passes.second_first`,
``GradientConfig.second_first_linf``): a share of the first run's steps goes to another run
from the clean input right after the first, with its own ε factor ``second_gamma_linf``;
short plans (500 passes) keep one first run."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from engine_fakes import exact_flip, linear_search, random_linear, spy_runs

from mmargin.engine.passes import Leg, search_legs
from mmargin.engine.spec import GradientConfig


def test_a_long_linf_plan_splits_its_first_run() -> None:
    config = GradientConfig()
    assert config.second_first_linf > 0
    for steps in (config.short_steps, 495, 2000):
        one = search_legs(steps, math.inf, GradientConfig(second_first_linf=0.0))
        two = search_legs(steps, math.inf, config)
        first = one[0].steps
        kept = int(first * (1 - config.second_first_linf))
        assert two[:2] == [Leg("first", kept), Leg("second", first - kept)]
        assert two[2:] == one[1:]  # the probes and the refinement as they were
    # a short L∞ plan (500 passes) keeps one first run
    steps = config.short_steps - 1
    assert [leg.kind for leg in search_legs(steps, math.inf, config)].count("second") == 0
    # L1 and L2 keep their own shares (tests/test_second_first_l1.py, _l2.py)
    for p in (1.0, 2.0):
        assert search_legs(495, p, config) == search_legs(
            495, p, GradientConfig(second_first_linf=0.0)
        )


def test_the_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="second_first_linf"):
        GradientConfig(second_first_linf=0.95)
    with pytest.raises(ValueError, match="second_gamma_linf"):
        GradientConfig(second_gamma_linf=0.0)


@pytest.mark.parametrize("passes", [1000, 500])
def test_the_search_runs_it_from_the_clean_input_with_its_own_factor(
    monkeypatch: Any, passes: int
) -> None:
    """A 1000-pass L∞ search: the first ε-ball run, then the second from the clean input
    toward no chosen class with γ ``second_gamma_linf``; a 500-pass search has one."""
    calls = spy_runs(monkeypatch, lambda c: c.gamma_init)
    model, x = random_linear(3, 12, 4, 4)
    config = GradientConfig()
    state = linear_search(model, x, config, passes=passes, norm="linf")
    assert bool((state.queries <= passes).all())
    plan = [leg for leg in search_legs(passes // 2 - 2, math.inf, config) if leg.steps]
    gamma, second = config.gamma_init, config.second_gamma_linf
    if passes == 1000:
        assert calls[0] == (plan[0].steps, True, True, gamma)
        assert calls[1] == (plan[1].steps, True, True, second)
    else:
        assert calls[0] == (plan[0].steps, True, True, gamma)
        assert all(g == gamma for *_, g in calls)


def test_the_linear_models_linf_flips_stay_at_the_closed_form() -> None:
    """On a linear model in a far box the 1000-pass L∞ search with the split ends within
    1 % of the minimal L∞ flip (:func:`engine_fakes.exact_flip`, dual norm L1), never below
    it."""
    model, x = random_linear(5, 12, 4, 6)
    state = linear_search(model, x, GradientConfig(), norm="linf")
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    ratio = state.best_norm / exact_flip(model, x, labels, dual=1.0)
    assert bool((ratio >= 1 - 1e-6).all())
    assert float(ratio.max()) <= 1.01
