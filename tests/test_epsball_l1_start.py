"""The L1 ε-ball run's switch to its own schedule start (``GradientConfig.l1_slow_after``,
``alpha_init_l1``, ``gamma_init_l1``; :func:`mmargin.engine.anneal.schedule_start`): every
row starts as on the other distances, and a row without a flip in the run after
``l1_slow_after`` steps goes on with a shorter step share α and a larger ε factor γ (on the
robust tuning CNN: ``bench/test_l1_start.py``); a row that flipped by then is untouched.
On by default with ``l1_slow_kept``: only a row whose loss is still above half its
first-step loss switches (without that test one half of tune_cnn_bn @1000 and of mnist_cnn
@250 lost; :func:`~mmargin.engine.anneal.schedule_start`)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from mmargin.engine.anneal import Anneal, schedule_start
from mmargin.engine.epsball import epsball_run
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState

ON = GradientConfig(alpha_init_l1=0.5, gamma_init_l1=0.3, l1_slow_after=10, l1_slow_kept=0.0)
"""The switch without the loss test (every row without a flip switches)."""
OFF = dict(alpha_init_l1=1.0, gamma_init_l1=0.05, l1_slow_after=0, l1_slow_kept=0.0)
"""No switch: L1 runs as every distance does."""


def test_the_switch_is_on_by_default() -> None:
    config = GradientConfig()
    assert (config.alpha_init_l1, config.gamma_init_l1) == (0.5, 0.3)
    assert (config.l1_slow_after, config.l1_slow_kept) == (10, 0.5)
    # the run starts as every distance's does; only slow rows switch
    x = torch.zeros(2, 3)
    other = Anneal(20, config, None, x, 2.0).at(3, slice(None))
    assert Anneal(20, config, None, x, 1.0).at(3, slice(None)) == pytest.approx(other)


def test_the_l1_start_and_its_switch() -> None:
    config = replace(ON, l1_slow_after=0)  # the L1 start from the first step
    assert schedule_start(1.0, config) == (config.alpha_init_l1, config.gamma_init_l1)
    for p in (2.0, math.inf, 0.0):
        assert schedule_start(p, config) == (config.alpha_init, config.gamma_init)
    x = torch.zeros(3, 4)
    up, down, alpha = Anneal(20, config, None, x, 1.0).at(0, slice(None))
    start = (1 + config.gamma_init_l1, 1 - config.gamma_init_l1, config.alpha_init_l1)
    assert (up, down, alpha) == pytest.approx(start)
    # with the switch: L1 starts as every distance does, and only the slow rows switch
    config = ON
    anneal = Anneal(20, config, None, x, 1.0)
    plain = anneal.at(12, slice(None))
    other = Anneal(20, config, None, x, 2.0).at(12, slice(None))
    assert plain == pytest.approx(other)
    slow = torch.tensor([True, False, True])
    mixed = anneal.switched(12, slice(None), slow, plain)
    l1 = Anneal(20, replace(ON, l1_slow_after=0), None, x, 1.0).at(12, slice(None))
    for value, fast, late in zip(mixed, plain, l1, strict=True):
        assert isinstance(value, torch.Tensor)
        assert value.tolist() == pytest.approx([late, fast, late])
    # and every schedule still ends where every distance ends
    end = anneal.at(20, slice(None))
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
    with pytest.raises(ValueError, match="l1_slow_after"):
        GradientConfig(l1_slow_after=-1)
    with pytest.raises(ValueError, match="l1_slow_kept"):
        GradientConfig(l1_slow_kept=value)


def _linear(lead: float, n: int = 6) -> tuple[Problem, torch.Tensor]:
    from engine_fakes import leading_linear

    return leading_linear(lead, n)


def _best(problem: Problem, x: torch.Tensor, config: GradientConfig) -> torch.Tensor:
    state = SearchState.empty(x)
    epsball_run(problem, 30, config, torch.zeros_like(x), state)
    return state.best_norm


def test_rows_that_flip_early_are_untouched() -> None:
    """Near the boundary every row flips within its first steps: the switch leaves the run
    bit for bit as it was."""
    problem, x = _linear(0.0)
    new = _best(problem, x, ON)
    old = _best(problem, x, GradientConfig(**OFF))
    assert bool(torch.isfinite(new).all())
    assert torch.equal(new, old)
    assert torch.equal(_best(problem, x, GradientConfig()), old)


def test_rows_without_a_flip_switch() -> None:
    """Far from the boundary no row has flipped after ``l1_slow_after`` steps: every row
    goes on with the L1 start, so every row's run differs."""
    problem, x = _linear(0.5)
    new = _best(problem, x, ON)
    old = _best(problem, x, GradientConfig(**OFF))
    assert bool(torch.isfinite(new).all())
    assert bool((new != old).all())


def test_the_loss_test_picks_the_far_rows() -> None:
    """With ``l1_slow_kept`` a row without a flip switches only while its loss is above
    that share of its loss at the run's first step."""
    x = torch.zeros(4, 3)
    anneal = Anneal(20, GradientConfig(l1_slow_after=3, l1_slow_kept=0.5), None, x, 1.0)
    anneal.note(0, slice(None), torch.tensor([4.0, 4.0, 4.0, 4.0]))
    anneal.note(1, slice(None), torch.tensor([0.0, 0.0, 0.0, 0.0]))  # not read
    anneal.note(2, slice(None), torch.tensor([3.0, 1.0, 2.5, 1.9]))
    found = torch.tensor([False, False, True, False])
    assert anneal.slow(found).tolist() == [True, False, False, False]
    # without the test every row without a flip
    plain = Anneal(20, GradientConfig(l1_slow_after=3, l1_slow_kept=0.0), None, x, 1.0)
    assert plain.slow(found).tolist() == [True, True, False, True]


def test_a_switched_row_restarts_its_epsilon_factor_at_a_late_first_flip() -> None:
    """With ``l1_slow_restart`` (the default) a switched row whose first flip in the run
    comes in the second half of the run has its γ start again from ``gamma_init_l1`` there
    and anneal to ``gamma_final`` over the run's steps left; rows not switched, switched
    rows before their flip and switched rows whose first flip came earlier keep the
    switch's values; without it nothing changes."""
    config = GradientConfig()
    assert config.l1_slow_restart
    x = torch.zeros(4, 3)
    anneal = Anneal(30, config, None, x, 1.0)
    slow = torch.tensor([True, True, False, True])
    none = torch.zeros(4, dtype=torch.bool)

    def values(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        up, down, _ = anneal.switched(k, slice(None), slow, anneal.at(k, slice(None)))
        return torch.as_tensor(up), torch.as_tensor(down)

    # step 12 (first half): row 3 flips, and keeps the switch's values from then on
    early = torch.tensor([False, False, False, True])
    up, down = values(12)
    got = anneal.restarted(12, slice(None), slow, none, early, up, down)
    assert torch.equal(torch.as_tensor(got[0]), up)
    assert torch.equal(torch.as_tensor(got[1]), down)
    # step 16 (second half): rows 0 and 2 flip for the first time (row 2 is not switched)
    now = torch.tensor([True, False, True, True])
    up, down = values(16)
    got = anneal.restarted(16, slice(None), slow, early, now, up, down)
    assert isinstance(got[0], torch.Tensor) and isinstance(got[1], torch.Tensor)
    gamma = config.gamma_init_l1
    assert got[0].tolist() == pytest.approx([1 + gamma, *up[1:].tolist()])
    assert got[1].tolist() == pytest.approx([1 - gamma, *down[1:].tolist()])
    # step 23 (half way through row 0's 14 steps left): γ is half way down the cosine
    up, down = values(23)
    got = anneal.restarted(23, slice(None), slow, now, now, up, down)
    assert isinstance(got[0], torch.Tensor) and isinstance(got[1], torch.Tensor)
    half = config.gamma_final + 0.5 * (gamma - config.gamma_final)
    assert float(got[0][0]) == pytest.approx(1 + half)
    assert float(got[1][0]) == pytest.approx(1 - half)
    assert got[0][1:].tolist() == pytest.approx(up[1:].tolist())
    # off: the switch's values, untouched
    off = Anneal(30, replace(config, l1_slow_restart=False), None, x, 1.0)
    assert off.restarted(16, slice(None), slow, early, now, up, down) == (up, down)
