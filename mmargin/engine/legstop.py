"""Per-sample exits from one run (leg) of a class-aware search: wall time at equal budget.

A leg (:mod:`mmargin.engine.passes`) is a whole annealed run, but not every sample needs
all of it. Two per-sample rules let a sample leave a leg early, so that the rows still
searching make the forward and backward passes smaller (the saving is in wall time, not
only in counted passes):

- **hopeless** (probes only, on by default: ``GradientConfig.hopeless``): after
  :data:`MARK` of a probe's steps, a probe whose own smallest flip is more than
  ``hopeless`` times the sample's best norm leaves: its class is not where the nearest
  boundary is; after twice that share, one more than halfway to ``hopeless``'s allowance
  (1.25 for 1.5) leaves; on L∞ so does one more than ``GradientConfig.late_hopeless``
  (1.1) times the best whose own flip has not fallen at all since the first test (its
  steps go to the leftover's ``next`` probe, :mod:`mmargin.engine.leftover`). A probe that has not
  flipped yet keeps searching (on L1, robust models' probes flip late and then win).
- **converged** (every leg, off by default: ``GradientConfig.leg_window``): in the second
  half of a leg, every ``window`` steps, a sample whose smallest flip in this leg did not
  fall by more than ``rtol`` (relative) since the previous check leaves the leg. On the
  adversarially trained tuning models the late, small steps still shrink the flips, so
  this rule lowered L1 / L2 optimality there; it is kept as an option.

A probe long enough for the hopeless test may also not run at all (:func:`out_of_reach`,
with the same ``hopeless`` allowance; on L∞, ``GradientConfig.skip_far_probes``): where
the first-order distance of its class at the clean input is more than ``hopeless`` times
both the sample's best norm and the first-order distance of the class its best flip lies
in. On L∞ at 1000 passes (200 images), with the line search's boundary rung
(:func:`mmargin.engine.finish.line_search`), the tuning models spent 918 → 887, 942 → 932
and 965 → 927 passes per sample at optimality within 0.0001 (also at 990 and 1010
passes, within 0.0002); probes too short for the hopeless test (under 16 steps) are never
skipped: at 250 passes a skip lost one flip of 200 by 3.5 % on tune_cnn_fgsm_short.

The window and the mark are shares of the leg's own steps: the rules follow the number of
steps, never the model. A sample's best flip is never touched by leaving (the state keeps
it), and every decision reads that sample's own values only, so a result never depends on
the other samples of its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mmargin.engine.state import SearchState

__all__ = ["LegStop", "first_mark", "out_of_reach"]

MARK = 0.3
"""The share of a probe's steps after which the hopeless test is first made (and again,
with half the allowance, after twice this share)."""


@dataclass
class LegStop:
    """The exit rules for one leg of ``steps`` steps; ``window == 0`` turns the
    convergence rule off, ``mark == 0`` the hopeless rule."""

    steps: int
    window: int
    rtol: float
    mark: int
    hopeless: float
    checked: Tensor
    """This leg's smallest flip per sample at the last convergence check."""
    run_best: Tensor
    """The smallest flip this leg has seen per sample (``inf``: none yet)."""
    stalled: float = 0.0
    """At the second hopeless test, a probe whose own flip is more than this times the best
    norm and has not fallen at all since the first test leaves too (0: no such test)."""
    marked: Tensor | None = None
    """This leg's smallest flip per sample at the first hopeless test."""
    gave_up: Tensor | None = None
    """Per sample, whether it left at the ``stalled`` test (``None``: the test has not run)."""

    @classmethod
    def for_leg(cls, kind: str, steps: int, share: float, rtol: float, hopeless: float,
                state: SearchState, stalled: float = 0.0) -> LegStop | None:  # fmt: skip
        """The rules for a leg of ``kind`` (``first``, ``probe``, ``refine``): convergence
        checked every ``share`` of its steps (at least 8 steps apart; the first check only
        records, so a leg gets the rule only if a second check falls in it), the hopeless
        test after :data:`MARK` of a probe of at least 16 steps. None when neither
        rule applies."""
        window = max(int(steps * share), 8) if share > 0 else 0
        window = window if 2 * window < steps else 0  # the first check only records
        mark = first_mark(kind, steps, hopeless)
        if window == 0 and mark == 0:
            return None
        none = torch.full_like(state.best_norm, math.inf)
        return cls(steps, window, rtol, mark, hopeless, none.clone(), none, stalled)

    def seen(self, idx: Tensor | slice, norms: Tensor, flips: Tensor) -> None:
        """The rows ``idx`` reached sizes ``norms``; ``flips`` says which flipped."""
        mine = self.run_best[idx]
        self.run_best[idx] = torch.where(flips & (norms < mine), norms, mine)

    def after(self, k: int, state: SearchState, active: Tensor) -> None:
        """After step ``k`` (0-based): clear ``active`` for the samples that leave."""
        done = k + 1
        if done >= self.steps:
            return
        mine = self.run_best
        if self.window and done % self.window == 0 and 2 * done >= self.steps:
            stalled = torch.isfinite(mine) & (mine >= self.checked * (1 - self.rtol))
            active &= ~stalled
            self.checked = mine.clone()
        if self.mark and done in (self.mark, 2 * self.mark):
            allowed = self.hopeless if done == self.mark else (1 + self.hopeless) / 2
            out = torch.isfinite(mine) & (mine > state.best_norm * allowed)
            if done == self.mark:
                self.marked = mine.clone()
            elif self.stalled and self.marked is not None:
                stuck = (torch.isfinite(mine) & (mine > state.best_norm * self.stalled)
                         & (mine >= self.marked) & active)  # fmt: skip
                self.gave_up = stuck
                out |= stuck
            active &= ~out


def first_mark(kind: str, steps: int, hopeless: float) -> int:
    """The step of a leg's first hopeless test (0: the leg has none): :data:`MARK` of a
    probe of at least 16 steps, when ``hopeless`` is on."""
    return int(steps * MARK) if kind == "probe" and hopeless > 0 and steps >= 16 else 0


def out_of_reach(ranked: Tensor, reach: Tensor, against: Tensor, state: SearchState,
                 hopeless: float) -> Tensor:  # fmt: skip
    """Per sample, whether a probe toward class ``against`` is not worth running: the class's
    first-order distance at the clean input (``reach``, per ``ranked`` class) is more than
    ``hopeless`` times the larger of the best norm so far and the first-order distance of
    the best flip's own class. That second term scales the test by how far first-order
    distances overshoot the flips really found for this sample (on adversarially trained
    models their flat gradients at the input make every class look far): the probe is
    skipped only where its class is far both in absolute terms and relative to the class
    that won. On a linear model the first-order distance of a class is a lower bound on
    any flip into it, so a skipped probe could never have won. False where there is no
    flip yet, and everywhere when ``hopeless`` is 0."""
    if hopeless <= 0:
        return torch.zeros_like(state.best_norm, dtype=torch.bool)
    mine = reach.gather(1, (ranked == against.unsqueeze(1)).int().argmax(dim=1, keepdim=True))
    won = ranked == state.best_class.unsqueeze(1)
    theirs = reach.gather(1, won.int().argmax(dim=1, keepdim=True)).squeeze(1)
    theirs = torch.where(won.any(dim=1), theirs, torch.zeros_like(theirs))
    ref = torch.maximum(state.best_norm, theirs)
    return torch.isfinite(state.best_norm) & (mine.squeeze(1) > hopeless * ref)
