"""A short L2 plan's first ε-ball run starts its ε factor at ``short_first_gamma_l2``
(:func:`mmargin.engine.short_first.first_config`)."""

from __future__ import annotations

import math

import pytest
import torch
from engine_fakes import random_linear

import mmargin.engine.gradient as gradient
from mmargin.distances import lp
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import Streams
from mmargin.goals import Untargeted
from mmargin.spaces import box


def _gammas(p: float, passes: int, config: GradientConfig) -> list[tuple[str, float]]:
    """The ε factor each ε-ball run of a search of ``passes`` starts at, with whether it
    ran from the clean input (``clean``) or warm (``warm``)."""
    model, x = random_linear(5, 12, 4, 5)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    run_once = gradient.epsball_run
    seen: list[tuple[str, float]] = []

    def spy(*args: object, **kwargs: object) -> None:
        start = args[3]
        kind = "warm" if bool((start != 0).any()) else "clean"  # type: ignore[operator]
        seen.append((kind, args[2].gamma_init))  # type: ignore[attr-defined]
        run_once(*args, **kwargs)  # type: ignore[arg-type]

    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    distance = lp({2.0: "l2", 1.0: "l1", math.inf: "linf"}[p])
    problem = Problem(model, box(-10.0, 10.0), distance, Untargeted(), x, labels)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gradient, "epsball_run", spy)
        gradient.gradient_search(problem, passes, config, streams, 4)
    return seen


@pytest.mark.parametrize("p", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("passes", [250, 500, 1000])
def test_only_the_first_run_of_a_short_l2_plan_takes_its_own_eps_factor(
    p: float, passes: int
) -> None:
    # distinct from every other factor (a long L2 plan's second first run has its own:
    # tests/test_second_first_l2.py)
    config = GradientConfig(short_first_gamma_l2=0.2, second_first_l2=0.0)
    assert len({config.gamma_init, config.plain_gamma_l2, 0.2}) == 3
    seen = _gammas(p, passes, config)
    short = p == 2.0 and passes < 2 * config.short_steps
    assert seen[0] == ("clean", 0.2 if short else config.gamma_init), (p, passes, seen)
    rest = seen[1:]
    if p == math.inf and passes >= 2 * config.short_steps:  # .passes.second_share
        assert rest[0] == ("clean", config.second_gamma_linf), (p, passes, seen)
        rest = rest[1:]
    assert all(g == config.gamma_init for _, g in rest), (p, passes, seen)


def test_the_first_run_keeps_gamma_init_when_the_rule_is_off() -> None:
    config = GradientConfig(short_first_gamma_l2=0.0)
    assert all(g == config.gamma_init for _, g in _gammas(2.0, 250, config))
