"""The L∞ probes' unspent steps go to the last refinement of the best flip (its own length).

A class probe lets a sample leave early once the probe's class is hopeless
(:mod:`mmargin.engine.legstop`), and on L∞ a probe whose class is out of first-order reach
is not run at all (:func:`mmargin.engine.legstop.out_of_reach`). The steps a sample saves
this way are known before its last refinement starts, so that refinement can take them:
each sample refines its best flip for the refinement's planned steps plus the probe steps
it has not spent, its ε-ball schedules annealing over its own length
(``epsball_run(lengths=...)``: one batched run, each sample ends where a run of its own
length on it alone ends). A sample that a probe left stalled keeps its steps for the
leftover's walk toward the next class (:mod:`mmargin.engine.leftover`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmargin.engine.passes import Leg
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState

__all__ = ["stretch_steps"]


def stretch_steps(
    p: float, config: GradientConfig, plan: list[Leg], n: int, before: Tensor,
    state: SearchState, stuck: Tensor,
) -> Tensor | None:  # fmt: skip
    """Per sample, the steps the runs before leg ``n`` of ``plan`` left unspent (their
    planned steps less the steps the sample took since its queries were ``before``), 0 for
    the ``stuck`` samples; ``None`` where the rule is off (``config.stretch_refine``, L∞
    only) or no sample has any."""
    if p != math.inf or not config.stretch_refine:
        return None
    planned = sum(leg.steps for leg in plan[:n] if leg.steps >= 1)
    spent = torch.div(state.queries - before, 2, rounding_mode="floor")
    extra = (planned - spent).clamp(min=0)
    extra = torch.where(stuck, torch.zeros_like(extra), extra)
    return extra if bool(extra.any()) else None
