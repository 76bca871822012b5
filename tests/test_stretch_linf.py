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
ON = GradientConfig(stretch_refine=True, stretch_below=0.0)  # every sample, no gate
GATED = GradientConfig(stretch_refine=True, stretch_below=0.9)


class Bent(torch.nn.Module):
    """A weak linear path (0.05 × :func:`random_linear`'s weights) and ReLU units that are off
    within 0.05 of every point (its coordinates lie in [0.3, 0.7]) and steep past it: at a
    point the model is linear, so the first-order distances are closed forms, but a flip
    that reaches the units lies far below them."""

    def __init__(self, seed: int, d: int, k: int) -> None:
        super().__init__()
        self.lin = random_linear(seed, d, k, 1)[0]
        self.weight = self.lin.weight
        gen = torch.Generator().manual_seed(seed + 100)
        self.up = torch.randn(k, d, generator=gen) * 20

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bent = torch.relu(x - 0.75) + torch.relu(0.25 - x)
        return 0.05 * self.lin(x) + bent @ self.up.T


@pytest.mark.parametrize("seed", [0, 1])
def test_the_probes_unspent_steps_go_to_the_last_refinement(seed: int) -> None:
    """Without the stretch the probes' exits leave steps unspent; with it (off by default: .stretch)
    every sample but those a probe left stalled spends the whole search (the ranking and
    every planned step), and its flip stays between the exact minimum and 1.01× it."""
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
    # the gate: only a flip below 0.9 × its nearest class's first-order distance
    state.best_norm = torch.tensor([1.0, 0.5, 1.0, 0.5])
    near = torch.tensor([1.0, 1.0, 1.0, 0.5])
    gated = stretch_steps(math.inf, GATED, plan, 4, before, state, stuck, near)
    assert gated is not None and gated.tolist() == [0, 8, 0, 0]
    state.best_norm = torch.tensor([1.0, 0.9, 1.0, 0.5])
    assert stretch_steps(math.inf, GATED, plan, 4, before, state, stuck, near) is None
    assert stretch_steps(math.inf, ON, plan, 4, before, state, stuck, near) is not None
    state.queries = before + 2 * torch.tensor([60, 60, 45, 60])
    assert stretch_steps(math.inf, ON, plan, 4, before, state, stuck) is None


def test_the_gate_leaves_a_linear_model_alone() -> None:
    """On a linear model the best flip is never below its first-order distance, so the
    gated stretch (``stretch_below`` 0.9, :func:`~mmargin.engine.stretch.far_below`) gives no
    sample any step: the same search as without the stretch, bit for bit, where the
    ungated one spends the probes' unspent steps."""
    model, x = random_linear(0, 24, 6, 12)
    off = linear_search(model, x, OFF, "linf")
    gated = linear_search(model, x, GATED, "linf")
    ungated = linear_search(model, x, ON, "linf")
    assert bool((ungated.queries > off.queries).any())
    assert torch.equal(gated.queries, off.queries)
    assert torch.equal(gated.best_norm, off.best_norm)


def test_the_gate_stretches_the_samples_whose_flip_the_model_bends_below_first_order() -> None:
    """On :class:`Bent` the samples whose best flip before the refinement lies below 0.9 ×
    the closed-form first-order distance of their nearest class (those whose flip reached the
    steep units) and that have unspent steps take them; every other sample runs as without
    the stretch, bit for bit."""
    model, x = Bent(0, 24, 6), random_linear(0, 24, 6, 12)[1]
    with torch.no_grad():
        scores = model(x)
    labels = scores.argmax(dim=1)
    w = 0.05 * model.weight
    margin = scores.gather(1, labels[:, None]) - scores
    dual = (w[labels][:, None, :] - w[None, :, :]).abs().sum(dim=2)
    near = (margin / dual).scatter(1, labels[:, None], math.inf).min(dim=1).values
    off = linear_search(model, x, OFF, "linf")
    gated = linear_search(model, x, GATED, "linf")
    bent = off.best_norm < 0.9 * near  # (the refinement keeps a flip below it below it)
    stretched = gated.queries > off.queries
    assert bool(stretched.any()) and bool((~bent).any())
    assert bool((stretched <= bent).all())
    assert bool((stretched == (bent & (off.queries < int(gated.queries.max())))).all())
    assert torch.equal(gated.queries[~bent], off.queries[~bent])
    assert torch.equal(gated.best_norm[~bent], off.best_norm[~bent])
