"""The L1 refinements' own first step share (``GradientConfig.alpha_refine_l1``,
:func:`mmargin.engine.gradient.refine_config`): only an L1 refinement shorter than
``refine_short_l1`` steps takes it (250 passes, not 500 or 1000), and only the refinements
(the runs warm-started from the best flip)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from engine_fakes import linear_nearest

import mmargin.engine.gradient as gradient
from mmargin.distances import lp
from mmargin.engine.epsball import epsball_run
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.goals import Untargeted
from mmargin.spaces import box


def test_only_a_short_l1_refinement_has_its_own_step_share() -> None:
    config = GradientConfig()
    short = gradient.refine_config(config.refine_short_l1 - 1, 1.0, config)
    assert short.alpha_init == config.alpha_refine_l1 != config.alpha_init
    assert replace(short, alpha_init=config.alpha_init) == config  # nothing else changes
    assert gradient.refine_config(config.refine_short_l1, 1.0, config) is config
    for p in (2.0, math.inf, 0.0):
        assert gradient.refine_config(100, p, config) is config
    off = replace(config, alpha_refine_l1=0.0)
    assert gradient.refine_config(100, 1.0, off) is off


@pytest.mark.parametrize("budget", [250, 500, 1000])
def test_the_refinements_and_only_they_run_on_the_refine_config(
    budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x, labels, _ = linear_nearest(3, d=12, k=4, n=5)
    problem = Problem(model, box(0.0, 1.0), lp("l1"), Untargeted(), x, labels)
    config = GradientConfig()
    seen: list[tuple[bool, float]] = []

    def spy(problem: Problem, steps: int, run_config: GradientConfig, start: torch.Tensor,
            *args: object, **kwargs: object) -> None:  # fmt: skip
        seen.append((bool((start != 0).any()), run_config.alpha_init))
        epsball_run(problem, steps, run_config, start, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gradient, "epsball_run", spy)
    state = gradient.gradient_search(problem, budget, config, None, 4)  # type: ignore[arg-type]
    assert torch.isfinite(state.best_norm).all()
    warm = [alpha for started, alpha in seen if started]
    cold = [alpha for started, alpha in seen if not started]
    own = config.alpha_refine_l1 if budget == 250 else config.alpha_init  # 42 / 86 / 126 steps
    assert warm and all(a == own for a in warm)
    assert cold and all(a == config.alpha_init for a in cold)
