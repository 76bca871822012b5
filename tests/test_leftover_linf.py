"""The L∞ leftover (:func:`mmargin.engine.leftover.spend_unspent`): the steps the
probes' early exits left go to a refinement of the best flip toward the runner-up class,
checked against the closed-form minimal L∞ flip of a linear model (the box out of reach:
``min_j (z_y − z_j) / ‖w_y − w_j‖₁``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from engine_fakes import (
    closed_form_flips,
    copy_state,
    exact_flip,
    far_box,
    linear_search,
    random_linear,
)
from torch import Tensor
from torch.nn import Linear

from mmargin.distances import lp
from mmargin.engine.epsball import epsball_run
from mmargin.engine.leftover import REFINE_MIN_STEPS, spend_unspent
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState
from mmargin.goals import Untargeted

ON = GradientConfig(unspent_refine=True, next_class=False, stretch_refine=False)
"""The refinement alone: with ``next_class`` (on by default) the ``next`` probe takes the
steps of the samples that have a class left to try (``tests/test_leftover_next_linf.py``),
and with ``stretch_refine`` (on by default, gated) the last planned refinement takes the
probes' unspent steps before the leftover (``tests/test_stretch_linf.py``)."""
OFF = GradientConfig(next_class=False, stretch_refine=False)


def _far_flips(
    seed: int, d: int, k: int, n: int, dtype: torch.dtype = torch.float32
) -> tuple[Linear, Tensor, Tensor, Tensor, SearchState]:
    """A :func:`random_linear` model, its points, their labels, each point's closed-form
    flips into every class (:func:`closed_form_flips`, L∞) and a state whose best flips lie
    in each point's farthest class, 2× that class's own minimum (the nearest class is
    another one). Float64 for the bit-for-bit comparisons of a batch with its rows alone:
    in float32 a matrix product's last bit may depend on the batch size (BLAS kernels)."""
    model, x = random_linear(seed, d, k, n)
    model, x = model.to(dtype), x.to(dtype)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    per = closed_form_flips(model, x, labels, 1.0)
    far = per.masked_fill(torch.isinf(per), -1.0).argmax(dim=1)
    assert bool((far != per.argmin(dim=1)).all())
    state = SearchState.empty(x)
    w = model.weight.detach()
    direction = -(w[labels] - w[far]).sign()  # the L∞ flip toward the far class
    start = direction * 2 * per.gather(1, far[:, None])
    state.best_norm = start.abs().amax(dim=1)
    state.best_delta = start.clone()
    state.best_class = far.clone()
    return model, x, labels, per, state


def test_switched_off_by_default_the_exits_leave_their_steps() -> None:
    assert GradientConfig().unspent_refine is False
    model, x = random_linear(0, 24, 6, 12)
    off = linear_search(model, x, OFF, "linf")
    assert bool((off.queries < 990).any())  # the probes' exits left steps unspent


@pytest.mark.parametrize("seed", [0, 1])
def test_the_leftover_spends_the_exits_steps_and_stays_on_the_closed_form(seed: int) -> None:
    """Every planned run is the same with the leftover on, so no sample ends worse; the
    samples with a flip and at least REFINE_MIN_STEPS left spend every step, the others keep
    their passes and flips; no flip below the exact minimum nor above 1.01× it."""
    model, x = random_linear(seed, 24, 6, 12)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    exact = exact_flip(model, x, labels, 1.0)
    # every probe runs (to its exit): the leftover is what the exits leave
    off = linear_search(model, x, dataclasses.replace(OFF, skip_far_probes=False), "linf")
    on = linear_search(model, x, dataclasses.replace(ON, skip_far_probes=False), "linf")
    assert bool((on.queries <= 1000).all())
    full = int(on.queries.max())
    left = torch.div(full - off.queries, 2, rounding_mode="floor")
    spent = (left >= REFINE_MIN_STEPS) & torch.isfinite(off.best_norm)
    assert bool(spent.any())
    assert bool((on.queries[spent] == full).all())
    assert torch.equal(on.queries[~spent], off.queries[~spent])
    assert torch.equal(on.best_norm[~spent], off.best_norm[~spent])
    assert bool((on.best_norm <= off.best_norm).all())
    assert bool((on.best_norm >= exact * (1 - 1e-5)).all())
    assert bool((on.best_norm <= exact * 1.01).all()), (on.best_norm / exact).tolist()


def test_a_refinement_from_a_far_flip_reaches_the_runner_up_class_minimum() -> None:
    """A state whose best flips lie in each point's farthest class, 2× that class's own
    minimum: refining them toward the nearest class (``epsball_run(only=...)``, the leftover's
    run) ends within 1 % of that class's closed-form minimum, never below the overall one;
    the rows outside ``only`` are not touched."""
    model, x, labels, per, state = _far_flips(3, 16, 5, 8)
    near = per.argmin(dim=1)
    start = state.best_delta.clone()
    only = torch.ones(len(x), dtype=torch.bool)
    only[5] = False
    problem = Problem(model, far_box(), lp("linf"), Untargeted(), x, labels)
    epsball_run(problem, 100, GradientConfig(), state.best_delta.clone(), state, near, check=False,
                only=only)  # fmt: skip
    exact = per.min(dim=1).values
    ran = only.nonzero().squeeze(1)
    assert state.queries.tolist() == [200 if bool(o) else 0 for o in only]
    assert float(state.best_norm[5]) == float(start[5].abs().amax())
    assert bool((state.best_norm[ran] >= exact[ran] * (1 - 1e-5)).all())
    assert bool((state.best_norm[ran] <= exact[ran] * 1.01).all()), (
        state.best_norm[ran] / exact[ran]
    ).tolist()


def test_samples_of_different_lengths_share_one_run_as_if_each_ran_alone() -> None:
    """``epsball_run(lengths=...)``, the L∞ leftover's one batched run: each sample spends
    exactly its own steps (``steps`` = the longest) and ends bit for bit where a run of
    exactly that length, on it alone, ends (ε and the step anneal over its own length),
    however long the others are; ``only`` leaves the other samples untouched. The lengths
    matter: a run of the longest length ends elsewhere for some samples."""
    model, x, labels, per, start = _far_flips(5, 16, 5, 12, torch.float64)
    near = per.argmin(dim=1)
    lengths = torch.tensor([8, 40, 9, 23, 40, 12, 8, 31, 17, 40, 0, 26])
    only = torch.ones(len(x), dtype=torch.bool)
    only[4] = False
    state = copy_state(start)
    problem = Problem(model, far_box(), lp("linf"), Untargeted(), x, labels)
    epsball_run(problem, 40, GradientConfig(), state.best_delta, state, near, check=False,
                only=only, lengths=lengths)  # fmt: skip
    ran = only & (lengths > 0)
    want = [2 * int(m) if bool(r) else 0 for m, r in zip(lengths, ran, strict=True)]
    assert state.queries.tolist() == want
    assert torch.equal(state.best_delta[~ran], start.best_delta[~ran])
    differs = 0
    for i in ran.nonzero().squeeze(1).tolist():
        row = slice(i, i + 1)
        for length in (int(lengths[i]), 40):
            alone = copy_state(start, row)
            problem = Problem(model, far_box(), lp("linf"), Untargeted(), x[row], labels[row])
            epsball_run(problem, length, GradientConfig(), alone.best_delta, alone, near[row],
                        check=False)  # fmt: skip
            if length == 40 and int(lengths[i]) < 40:
                differs += not torch.equal(alone.best_delta[0], state.best_delta[i])
                continue
            assert int(alone.queries[0]) == int(state.queries[i])
            assert torch.equal(alone.best_norm[0], state.best_norm[i])
            assert torch.equal(alone.best_delta[0], state.best_delta[i])
            assert int(alone.best_class[0]) == int(state.best_class[i])
    assert differs >= 3


def test_only_every_row_is_the_plain_run() -> None:
    """``only`` with every row set is the run without it (same flips, same passes)."""
    model, x = random_linear(4, 12, 4, 6)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    states = []
    for only in (None, torch.ones(len(x), dtype=torch.bool)):
        state = SearchState.empty(x)
        problem = Problem(model, far_box(), lp("linf"), Untargeted(), x, labels)
        epsball_run(problem, 40, GradientConfig(), torch.zeros_like(x), state, only=only)
        states.append(state)
    assert torch.equal(states[0].queries, states[1].queries)
    assert torch.allclose(states[0].best_norm, states[1].best_norm, rtol=1e-6)
    assert torch.allclose(states[0].best_delta, states[1].best_delta, atol=1e-7)


def test_each_sample_with_a_flip_and_enough_steps_left_refines_for_exactly_those_steps() -> None:
    """``spend_unspent`` on L∞: the samples with a flip and at least REFINE_MIN_STEPS left
    spend exactly their own steps in one run toward the runner-up class (the nearest ranked
    class but their best flip's), ending bit for bit where a run of that length on each
    alone ends; the others, and every sample with the switch off or without a ranking, are
    untouched."""
    model, x, labels, per, start = _far_flips(6, 16, 5, 6, torch.float64)
    start.best_norm[2] = float("inf")  # no flip
    left = torch.tensor([30, 12, 30, REFINE_MIN_STEPS - 1, 30, 0])
    start.queries = 2 * (100 - left)
    before = torch.zeros_like(start.queries)
    ranked = per.argsort(dim=1)[:, :-1]  # nearest first, the label's inf last, dropped
    for config, given in ((OFF, ranked), (ON, None)):
        state = copy_state(start)
        problem = Problem(model, far_box(), lp("linf"), Untargeted(), x, labels)
        spend_unspent(problem, 100, before, state, config, given)
        assert torch.equal(state.queries, start.queries)
    state = copy_state(start)
    problem = Problem(model, far_box(), lp("linf"), Untargeted(), x, labels)
    spend_unspent(problem, 100, before, state, ON, ranked)
    spent = torch.tensor([True, True, False, False, True, False])
    assert state.queries.tolist() == torch.where(spent, 200, start.queries).tolist()
    assert torch.equal(state.best_delta[~spent], start.best_delta[~spent])
    near = per.argmin(dim=1)
    for i in spent.nonzero().squeeze(1).tolist():
        row = slice(i, i + 1)
        alone = copy_state(start, row)
        problem = Problem(model, far_box(), lp("linf"), Untargeted(), x[row], labels[row])
        epsball_run(problem, int(left[i]), GradientConfig(), alone.best_delta, alone, near[row],
                    check=False)  # fmt: skip
        assert torch.equal(alone.best_delta[0], state.best_delta[i])
        assert torch.equal(alone.queries[0], state.queries[i])


def test_a_non_boolean_switch_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="unspent_refine"):
        dataclasses.replace(GradientConfig(), unspent_refine=1)  # type: ignore[arg-type]
