"""A short L1 refinement's slow rows (``GradientConfig.alpha_refine_slow_l1``,
:func:`mmargin.engine.gradient.refine_soft`): the rows that the search's first run switched
to the L1 start (no flip after ``l1_slow_after`` steps) and whose loss at the switch was
still above ``refine_slow_kept`` of their first start the refinement's step share at that
value; every other row, and every
search whose refinement is long enough to anneal, keeps its run bit for bit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

import mmargin.engine.gradient as gradient
from mmargin.engine.anneal import Anneal
from mmargin.engine.problem import Problem
from mmargin.engine.soft_refine import refine_soft
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams


def _linear(lead: float, n: int = 8) -> tuple[Problem, torch.Tensor]:
    from engine_fakes import leading_linear

    return leading_linear(lead, n)


def test_only_a_short_l1_refinement_with_switched_rows_softens() -> None:
    config = GradientConfig(alpha_refine_slow_l1=0.3)
    rows = torch.tensor([True, False, True])
    got = refine_soft(42, 1.0, config, [rows])  # 250 passes: a refinement of 42 steps
    assert got is not None and torch.equal(got, rows)
    assert refine_soft(config.refine_short_l1, 1.0, config, [rows]) is None  # 500 / 1000
    assert refine_soft(42, 1.0, config, []) is None  # the first run switched no row
    for p in (2.0, float("inf"), 0.0):
        assert refine_soft(42, p, config, [rows]) is None
    assert refine_soft(42, 1.0, replace(config, alpha_refine_slow_l1=0.0), [rows]) is None
    with pytest.raises(ValueError, match="alpha_refine_slow_l1"):
        GradientConfig(alpha_refine_slow_l1=-1.0)


def test_only_rows_still_far_at_the_switch_are_kept() -> None:
    """:meth:`Anneal.far`: of the switched rows, those whose loss at the switch is above
    ``kept`` times their first (an oracle: the losses themselves); 0 keeps them all."""
    anneal = Anneal(40, GradientConfig(), None, torch.zeros(4, 2), 1.0)
    anneal.first_loss = torch.tensor([1.0, 1.0, 2.0, 2.0])
    anneal.last_loss = torch.tensor([0.9, 0.6, 1.5, 1.3])
    rows = torch.tensor([True, True, True, False])
    assert anneal.far(rows, 0.7).tolist() == [True, False, True, False]
    assert anneal.far(rows, 0.0).tolist() == rows.tolist()
    with pytest.raises(ValueError, match="refine_slow_kept"):
        GradientConfig(refine_slow_kept=1.5)


def test_soft_rows_follow_the_cosine_from_their_own_start() -> None:
    """:meth:`Anneal.soften`: the soft rows' α is that of a schedule starting at the soft
    value (an oracle: a fresh schedule of the run's length from there), their ε factor and
    every other row's values unchanged."""
    config = GradientConfig(alpha_init=0.5)
    x = torch.zeros(3, 4)
    anneal = Anneal(40, config, None, x, 1.0)
    anneal.soft, anneal.soft_alpha = torch.tensor([False, True, False]), 0.3
    oracle = Anneal(40, replace(config, alpha_init=0.3), None, x, 1.0)
    for k in (0, 7, 39):
        up, down, alpha = anneal.soften(k, slice(None), anneal.at(k, slice(None)))
        plain = anneal.at(k, slice(None))
        assert (up, down) == (plain[0], plain[1])
        assert isinstance(alpha, torch.Tensor)
        assert float(alpha[1]) == pytest.approx(float(oracle.at(k, slice(None))[2]))
        assert float(alpha[0]) == float(alpha[2]) == pytest.approx(float(plain[2]))
        # on a subset of the rows (a gathered batch), the rows keep their own values
        sub = anneal.soften(k, torch.tensor([1, 2]), anneal.at(k, torch.tensor([1, 2])))[2]
        assert isinstance(sub, torch.Tensor)
        assert float(sub[0]) == pytest.approx(float(alpha[1]))
        assert float(sub[1]) == pytest.approx(float(alpha[2]))


def test_the_switched_rows_refine_softer_and_the_others_are_untouched(monkeypatch: Any) -> None:
    """The whole L1 search at 250 passes on rows far from the boundary, some of which the
    first run switches: with the rule on, the refinement gets exactly those rows as its soft
    rows, their flips differ from the rule off, every other row's flip is bit for bit the
    same, and the passes are the same. At 500 passes (a refinement long enough to anneal)
    nothing is softened and the search is bit for bit the one without the rule."""
    problem, x = _linear(0.8)
    real = gradient.epsball_run
    switched: list[torch.Tensor] = []
    soft: list[torch.Tensor | None] = []

    def epsball(*args: Any, **kw: Any) -> None:
        out = kw.get("switched")
        real(*args, **kw)
        if out:
            switched.append(out[0].clone())
        soft.append(kw.get("soft"))

    monkeypatch.setattr(gradient, "epsball_run", epsball)

    def search(config: GradientConfig, passes: int = 250) -> SearchState:
        streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
        return gradient.gradient_search(problem, passes, config, streams, 3)

    off = search(GradientConfig(alpha_refine_slow_l1=0.0))
    assert all(s is None for s in soft)
    switched.clear()
    soft.clear()
    on = search(GradientConfig(alpha_refine_slow_l1=0.3))
    assert len(switched) == 1
    rows = switched[0]
    assert bool(rows.any()) and not bool(rows.all()), rows
    given = [s for s in soft if s is not None]
    assert len(given) == 1 and torch.equal(given[0], rows)
    assert torch.equal(on.queries, off.queries)
    assert torch.equal(on.best_norm[~rows], off.best_norm[~rows])
    assert not torch.equal(on.best_norm[rows], off.best_norm[rows])
    assert bool(torch.isfinite(on.best_norm).all())
    # without the loss test every switched row refines softer: more rows than with it
    switched.clear()
    search(GradientConfig(alpha_refine_slow_l1=0.3, refine_slow_kept=0.0))
    assert len(switched) == 1 and bool((switched[0] & ~rows).any())
    assert not bool((rows & ~switched[0]).any())
    soft.clear()
    long_on = search(GradientConfig(alpha_refine_slow_l1=0.3), 500)
    assert all(s is None for s in soft)
    long_off = search(GradientConfig(alpha_refine_slow_l1=0.0), 500)
    assert torch.equal(long_on.best_norm, long_off.best_norm)
    assert torch.equal(long_on.queries, long_off.queries)
