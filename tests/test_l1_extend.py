"""The L1 first run's still-annealing rows (``GradientConfig.l1_slow_extend``,
:func:`mmargin.engine.lagrangian_plan.extended_steps`): a row that the switch to the L1
start picked (no flip after ``l1_slow_after`` steps, its loss still far from the
boundary) runs the Lagrangian run's steps in its first run instead and skips that run;
rows that flipped early keep the split plan bit for bit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

import mmargin.engine.gradient as gradient
from mmargin.engine.anneal import Anneal, Extend
from mmargin.engine.epsball import epsball_run
from mmargin.engine.lagrangian_plan import extended_steps
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams


def _linear(lead: float, n: int = 6) -> tuple[Problem, torch.Tensor]:
    from engine_fakes import leading_linear

    return leading_linear(lead, n)


def test_only_a_short_l1_first_run_extends_and_only_with_the_switch() -> None:
    assert not GradientConfig().l1_slow_extend  # off by default (extended_steps)
    config = GradientConfig(l1_slow_extend=True)
    assert extended_steps(1.0, config, 17, 38) == 17  # 250 passes
    # a first run long enough to anneal back (500 passes: 83 steps) keeps the split plan
    assert extended_steps(1.0, config, 36, config.refine_short_l1) == 0
    assert extended_steps(1.0, config, 36, 83) == 0
    for p in (2.0, float("inf"), 0.0):
        assert extended_steps(p, config, 17, 38) == 0
    assert extended_steps(1.0, replace(config, l1_slow_extend=False), 17, 38) == 0
    assert extended_steps(1.0, replace(config, l1_slow_after=0), 17, 38) == 0
    with pytest.raises(ValueError, match="l1_slow_extend"):
        GradientConfig(l1_slow_extend=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="l1_extend_kept"):
        GradientConfig(l1_extend_kept=1.5)


def test_a_longer_length_follows_the_cosine_over_it() -> None:
    """:meth:`Anneal.relength`: a row's values from then on are those of a run of its new
    length (an oracle: a fresh schedule of that length)."""
    config = GradientConfig()
    x = torch.zeros(3, 4)
    anneal = Anneal(40, config, torch.tensor([20, 20, 20]), x, 1.0)
    anneal.relength(torch.tensor([20, 35, 20]))
    for k in (10, 15, 19):
        got = anneal.at(k, slice(None))
        for length, row in ((20, 0), (35, 1), (20, 2)):
            want = Anneal(length, config, None, x, 1.0).at(k, slice(None))
            assert [float(v[row]) for v in got] == pytest.approx(list(want), abs=1e-7)


def _run(problem: Problem, x: torch.Tensor, extend: Extend | None) -> SearchState:
    state = SearchState.empty(x)
    epsball_run(problem, 30, GradientConfig(), torch.zeros_like(x), state, extend=extend)
    return state


def test_rows_that_flip_early_are_untouched() -> None:
    """Near the boundary every row flips within its first steps: no row is extended, and
    the run is bit for bit the run without the extension."""
    problem, x = _linear(0.0)
    ext = Extend(12)
    new, old = _run(problem, x, ext), _run(problem, x, None)
    assert ext.rows is None or not bool(ext.rows.any())
    assert torch.equal(new.best_norm, old.best_norm)
    assert torch.equal(new.queries, old.queries)


def test_rows_without_a_flip_run_longer() -> None:
    """Far from the boundary rows switch (those whose loss is still above half its first),
    and each of them runs the extension's steps more (two passes a step) and flips; the
    others' runs are bit for bit the runs without the extension."""
    problem, x = _linear(0.5)
    ext = Extend(12)
    new, old = _run(problem, x, ext), _run(problem, x, None)
    assert ext.rows is not None
    rows = ext.rows
    assert bool(rows.any()) and not bool(rows.all())
    assert torch.equal(new.queries, old.queries + 2 * 12 * rows.to(old.queries.dtype))
    assert bool(torch.isfinite(new.best_norm).all())
    assert torch.equal(new.best_norm[~rows], old.best_norm[~rows])


def test_only_rows_still_far_from_a_flip_run_longer(monkeypatch: Any) -> None:
    """Of the rows the switch picks (loss above ``l1_slow_kept`` of its first), only
    those whose loss at the switch is still above ``l1_extend_kept`` of its first run
    longer; the other switched rows run bit for bit as without the extension (an oracle:
    the losses the switch read, recorded at :meth:`Anneal.slow`)."""
    seen: dict[str, torch.Tensor] = {}
    slow = Anneal.slow

    def record(self: Anneal, found: torch.Tensor) -> torch.Tensor:
        rows = slow(self, found)
        assert self.first_loss is not None and self.last_loss is not None
        seen.update(rows=rows.clone(), ratio=self.last_loss / self.first_loss)
        return rows

    monkeypatch.setattr(Anneal, "slow", record)
    kept = GradientConfig().l1_extend_kept
    assert GradientConfig().l1_slow_kept < kept < 1
    problem, x = _linear(0.8, 8)
    ext = Extend(12, kept=kept)
    new = _run(problem, x, ext)
    switched, far = seen["rows"], seen["rows"] & (seen["ratio"] > kept)
    old = _run(problem, x, None)
    assert ext.rows is not None and torch.equal(ext.rows, far)
    near = switched & ~far  # switched, but their loss already fell below ``kept``
    assert bool(far.any()) and bool(near.any())
    assert torch.equal(new.queries, old.queries + 2 * 12 * far.to(old.queries.dtype))
    assert torch.equal(new.best_norm[~far], old.best_norm[~far])
    # without the test (kept 0) the near rows run longer too
    every = Extend(12)
    _run(problem, x, every)
    assert every.rows is not None and torch.equal(every.rows, switched)


def test_the_extended_rows_skip_the_lagrangian_run(monkeypatch: Any) -> None:
    """The whole L1 search at 250 passes on rows far from the boundary, some of which
    switch (their loss still above half its first): their first run takes the Lagrangian
    run's steps, the Lagrangian run runs the other rows only, every sample spends the
    passes it would have spent without the rule (within the budget) and flips, and the
    other rows' flips are bit for bit the split plan's. Without the rule the Lagrangian
    run runs every sample."""
    problem, x = _linear(0.5, 8)
    real_lagrangian, real_epsball = gradient.lagrangian_run, gradient.epsball_run
    seen: list[Any] = []
    extended: list[Extend] = []

    def lagrangian(*args: Any, **kw: Any) -> None:
        only = kw.get("only")
        seen.append(None if only is None else only.clone())
        real_lagrangian(*args, **kw)

    def epsball(*args: Any, **kw: Any) -> None:
        if kw.get("extend") is not None:
            extended.append(kw["extend"])
        real_epsball(*args, **kw)

    monkeypatch.setattr(gradient, "lagrangian_run", lagrangian)
    monkeypatch.setattr(gradient, "epsball_run", epsball)

    def search(config: GradientConfig) -> SearchState:
        streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
        return gradient.gradient_search(problem, 250, config, streams, 3)

    on = search(GradientConfig(l1_slow_extend=True))
    assert len(extended) == 1 and extended[0].rows is not None
    rows = extended[0].rows
    assert bool(rows.any()) and not bool(rows.all()), rows
    assert len(seen) == 1 and seen[0] is not None and torch.equal(seen[0], ~rows)
    seen.clear()
    extended.clear()
    off = search(GradientConfig(l1_slow_extend=False))
    assert seen == [None] and not extended
    assert torch.equal(on.queries, off.queries)
    assert bool((on.queries <= 250).all())
    assert torch.equal(on.best_norm[~rows], off.best_norm[~rows])
    assert not torch.equal(on.best_norm[rows], off.best_norm[rows])
    assert bool(torch.isfinite(on.best_norm).all())
