"""The L∞ stretch of the last refinement (:mod:`mmargin.engine.stretch`): the steps the
probes' early exits and skips left go to the last refinement of the best flip, each sample
for its own steps, checked against the closed-form minimal L∞ flip of a linear model (the
box out of reach: ``min_j (z_y − z_j) / ‖w_y − w_j‖₁``)."""

from __future__ import annotations

import math

import pytest
import torch
from engine_fakes import exact_flip, linear_search, random_linear

from mmargin.engine.passes import Leg
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState
from mmargin.engine.stretch import stretch_steps

OFF = GradientConfig(stretch_refine=False)
ON = GradientConfig(stretch_refine=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_probes_unspent_steps_go_to_the_last_refinement(seed: int) -> None:
    """Without the stretch the probes' exits leave steps unspent; with it (off by default: .stretch)
    every sample but those a probe left stalled spends the whole search (the ranking and
    every planned step), and its flip stays between the exact minimum and 1.01× it."""
    assert GradientConfig().stretch_refine is False
    model, x = random_linear(seed, 24, 6, 12)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    exact = exact_flip(model, x, labels, 1.0)
    off = linear_search(model, x, OFF, "linf")
    on = linear_search(model, x, ON, "linf")
    full = int(on.queries.max())
    assert full <= 1000
    short = off.queries < full - 20
    assert bool(short.any())  # the exits left steps unspent
    # a sample a probe left stalled keeps its steps for the leftover's walk: the same
    # search as without the stretch; every other one spends all of its steps
    stuck = on.queries < full
    assert bool((short & ~stuck).any())
    assert torch.equal(on.queries[stuck], off.queries[stuck])
    assert torch.equal(on.best_norm[stuck], off.best_norm[stuck])
    assert bool((on.best_norm >= exact * (1 - 1e-5)).all())
    assert bool((on.best_norm <= exact * 1.01).all()), (on.best_norm / exact).tolist()


def test_the_stretch_is_each_samples_unspent_planned_steps_but_the_stuck_ones() -> None:
    """Per sample the planned steps of the legs before the refinement less the steps it
    took (never below 0), 0 where a probe left it stalled (its steps are the leftover's
    walk's); nothing off L∞, with the switch off, or where no sample has any."""
    plan = [Leg("first", 40), Leg("probe", 10, 0), Leg("probe", 0, 1), Leg("probe", 10, 1),
            Leg("refine", 30)]  # fmt: skip
    state = SearchState.empty(torch.zeros(4, 3))
    before = torch.tensor([10, 10, 10, 10])
    took = torch.tensor([60, 52, 45, 61])  # steps since ``before``
    state.queries = before + 2 * took
    stuck = torch.tensor([False, False, True, False])
    extra = stretch_steps(math.inf, ON, plan, 4, before, state, stuck)
    assert extra is not None
    assert extra.tolist() == [0, 8, 0, 0]
    assert stretch_steps(2.0, ON, plan, 4, before, state, stuck) is None
    assert stretch_steps(1.0, ON, plan, 4, before, state, stuck) is None
    assert stretch_steps(math.inf, OFF, plan, 4, before, state, stuck) is None
    state.queries = before + 2 * torch.tensor([60, 60, 45, 60])
    assert stretch_steps(math.inf, ON, plan, 4, before, state, stuck) is None
