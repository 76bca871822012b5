"""The L1 ε-ball run's own schedule start (:func:`mmargin.engine.epsball.schedule_start`):
a shorter first step share α and a larger ε factor γ than on the other distances, so a
short run neither replaces its perturbation by one box-clipped gradient at each step nor
stays at a first flip several times the minimum (measured on the robust tuning CNN:
``bench/test_l1_start.py``). Off by default (the same numbers as the other distances')."""

from __future__ import annotations

import math

import pytest
import torch

from mmargin.engine.epsball import _Anneal, schedule_start
from mmargin.engine.spec import GradientConfig


def test_the_l1_start_is_off_by_default() -> None:
    config = GradientConfig()
    assert schedule_start(1.0, config) == schedule_start(2.0, config)


def test_l1_runs_start_from_their_own_alpha_and_gamma() -> None:
    config = GradientConfig(alpha_init_l1=0.5, gamma_init_l1=0.3)
    assert schedule_start(1.0, config) == (config.alpha_init_l1, config.gamma_init_l1)
    for p in (2.0, math.inf, 0.0):
        assert schedule_start(p, config) == (config.alpha_init, config.gamma_init)
    x = torch.zeros(2, 3)
    up, down, alpha = _Anneal(20, config, None, x, 1.0).at(0, slice(None))
    assert (up, down, alpha) == pytest.approx(
        (1 + config.gamma_init_l1, 1 - config.gamma_init_l1, config.alpha_init_l1)
    )
    up, down, alpha = _Anneal(20, config, None, x, 2.0).at(0, slice(None))
    assert (up, down, alpha) == pytest.approx(
        (1 + config.gamma_init, 1 - config.gamma_init, config.alpha_init)
    )
    # both still end where every distance ends
    end = _Anneal(20, config, None, x, 1.0).at(20, slice(None))
    final = (1 + config.gamma_final, 1 - config.gamma_final, config.alpha_final)
    assert end == pytest.approx(final)


@pytest.mark.parametrize("value", [-0.1, math.nan])
def test_the_l1_start_is_validated(value: float) -> None:
    with pytest.raises(ValueError, match="alpha_init_l1"):
        GradientConfig(alpha_init_l1=value)
    with pytest.raises(ValueError, match="gamma_init_l1"):
        GradientConfig(gamma_init_l1=value)
    with pytest.raises(ValueError, match="gamma_init_l1"):
        GradientConfig(gamma_init_l1=1.0)  # ε would shrink to 0
