"""Fallback to the decision-based strategy for samples whose gradients are unusable.

A model can hide its gradients — an input quantisation (``torch.round``), a step or
comparison, probabilities saturated to exactly 0 and 1, a NaN somewhere in the graph — and
a gradient search then never moves. The gradient strategy stops such samples at their
first step (flag ``zero_gradients``); this module hands each of them, with the passes it
has left, to the decision-based search (:func:`~mmargin.engine.decision.decision_search`),
which needs only the model's decisions, and merges what it finds back into the state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmargin.engine.decision import decision_search
from mmargin.engine.problem import Problem
from mmargin.engine.spec import SearchSpec
from mmargin.engine.state import SearchState, Streams

FELL_BACK = "decision_fallback"
"""The state flag of samples that the decision strategy searched in place of gradients."""
MESSAGE = ("gradients unusable (zero, NaN or unavailable): searched with the decision-based "
           "strategy instead")  # fmt: skip
"""What a result that fell back says."""


def decision_fallback(
    problem: Problem, passes: int, state: SearchState, spec: SearchSpec, streams: Streams,
    pool: Tensor | None,
) -> SearchState:  # fmt: skip
    """Search with decisions the samples of ``state`` flagged ``zero_gradients`` that have no
    flip yet, each within the ``passes`` it was given less what it spent; returns ``state``
    with their flips, passes and the flag :data:`FELL_BACK` added."""
    dead = state.flags.get("zero_gradients")
    if dead is None:
        return state
    rows = (dead & ~torch.isfinite(state.best_norm)).nonzero().squeeze(1)
    if rows.numel() == 0:
        return state
    left = (passes - state.queries[rows]).clamp(min=0)
    sub = decision_search(problem.rows(rows), left, spec, streams.subset(rows), pool)
    state.queries[rows] += sub.queries
    state.best_delta[rows] = sub.best_delta
    state.best_norm[rows] = sub.best_norm
    state.best_class[rows] = sub.best_class
    state.flag(FELL_BACK, rows)
    return state
