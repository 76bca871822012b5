"""The L∞ ``next`` probe of the leftover (:func:`mmargin.engine.leftover.spend_unspent`
with ``untried``): the steps the probes' exits left go to a probe from the clean input
toward the class the next probe would have taken, checked against the closed-form minimal
L∞ flip of a linear model into that class (the box out of reach:
``(z_y − z_j) / ‖w_y − w_j‖₁``); the stalled probes' exit at the second hopeless test on
L∞ (``GradientConfig.late_hopeless``) that hands such steps over."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from engine_fakes import closed_form_flips, copy_state, far_box, linear_search, random_linear

from mmargin.distances import lp
from mmargin.engine.epsball import epsball_run
from mmargin.engine.gradient import late_allowance
from mmargin.engine.leftover import REFINE_MIN_STEPS, spend_unspent
from mmargin.engine.legstop import LegStop
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState
from mmargin.goals import Untargeted


def _far_flips(seed: int) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor,
                                   SearchState]:  # fmt: skip
    """A linear model (float64), its points, labels, closed-form L∞ flips into every class
    and a state whose best flips lie in each point's farthest class at 2× that class's
    own minimum (so the nearest class is another one)."""
    model, x = random_linear(seed, 16, 5, 8)
    model, x = model.double(), x.double()
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    per = closed_form_flips(model, x, labels, 1.0)
    far = per.masked_fill(torch.isinf(per), -1.0).argmax(dim=1)
    w = model.weight.detach()
    start = -(w[labels] - w[far]).sign() * 2 * per.gather(1, far[:, None])
    state = SearchState.empty(x)
    state.best_norm = start.abs().amax(dim=1)
    state.best_delta = start.clone()
    state.best_class = far.clone()
    return model, x, labels, per, state


@pytest.mark.parametrize("seed", [0, 1])
def test_the_next_probe_reaches_the_untried_classes_closed_form_minimum(seed: int) -> None:
    """Each sample with a class to try and at least REFINE_MIN_STEPS left probes it from the
    clean input for exactly its own steps and ends in that class within 1 % above its
    closed-form minimum (never below); a sample without one (``-1``) or with too few steps
    is untouched; toward a second-nearest class instead it would end higher."""
    model, x, labels, per, start = _far_flips(seed)
    near = per.argmin(dim=1)
    left = torch.tensor([40, 30, 40, REFINE_MIN_STEPS - 1, 40, 24, 40, 40])
    start.queries = 2 * (100 - left)
    before = torch.zeros_like(start.queries)
    untried = near.clone()
    untried[4] = -1
    state = copy_state(start)
    problem = Problem(model, far_box(), lp("linf"), Untargeted(), x, labels)
    spend_unspent(problem, 100, before, state, GradientConfig(), per.argsort(dim=1)[:, :-1],
                  untried)  # fmt: skip
    ran = torch.ones(len(x), dtype=torch.bool)
    ran[3] = ran[4] = False
    assert state.queries.tolist() == torch.where(ran, 200, start.queries).tolist()
    assert torch.equal(state.best_delta[~ran], start.best_delta[~ran])
    exact = per.gather(1, near[:, None]).squeeze(1)
    second = per.sort(dim=1).values[:, 1]
    for i in ran.nonzero().squeeze(1).tolist():
        assert int(state.best_class[i]) == int(near[i])
        assert exact[i] * (1 - 1e-6) <= state.best_norm[i] <= exact[i] * 1.01
        assert bool(state.best_norm[i] < second[i] * (1 - 1e-6))  # the right class
        # the probe starts at the clean input: a run of its length from there, alone (to
        # rounding: the batched run's rows are gathered)
        alone = copy_state(start, slice(i, i + 1))
        one = Problem(model, far_box(), lp("linf"), Untargeted(), x[i : i + 1], labels[i : i + 1])
        epsball_run(one, int(left[i]), GradientConfig(), torch.zeros_like(x[i : i + 1]), alone,
                    near[i : i + 1], check=False)  # fmt: skip
        assert torch.allclose(alone.best_delta[0], state.best_delta[i], rtol=1e-6, atol=1e-9)


def test_without_a_class_to_try_the_steps_stay_unspent() -> None:
    model, x, labels, per, start = _far_flips(2)
    start.queries = torch.full_like(labels, 120)
    state = copy_state(start)
    problem = Problem(model, far_box(), lp("linf"), Untargeted(), x, labels)
    ranked = per.argsort(dim=1)[:, :-1]
    spend_unspent(problem, 100, torch.zeros_like(labels), state, GradientConfig(), ranked)
    assert torch.equal(state.queries, start.queries)
    spend_unspent(problem, 100, torch.zeros_like(labels), state, GradientConfig(), ranked,
                  torch.full_like(labels, -1))  # fmt: skip
    assert torch.equal(state.queries, start.queries)
    assert torch.equal(state.best_delta, start.best_delta)


def test_a_stalled_probe_above_the_late_allowance_leaves_at_the_second_test_on_linf() -> None:
    """At a probe's second hopeless test, with ``stalled`` 1.1 (``late_hopeless`` on L∞): a
    probe at 1.2× the best whose flip has not fallen since the first test leaves; one that
    fell to 1.2× from 1.3× stays, and so does one stalled at 1.05×; without it (0, the
    other distances) all three stay under the halfway allowance (1.25 for 1.5). The probe
    that left so is marked ``gave_up`` (its sample's unspent steps go to the ``next`` probe);
    a row already out of the leg is not, even where its flip would qualify."""
    config = GradientConfig()
    assert late_allowance(math.inf, config) == config.late_hopeless == 1.1
    assert late_allowance(1.0, config) == late_allowance(2.0, config) == 0.0
    state = SearchState.empty(torch.zeros(3, 3))
    state.best_norm = torch.tensor([1.0, 1.0, 1.0])
    flips = torch.tensor([True, True, True])
    for stalled, want in ((0.0, [True, True, True]), (1.1, [False, True, True])):
        stop = LegStop.for_leg("probe", 40, 0.0, 1e-3, 1.5, state, stalled)
        assert stop is not None
        active = torch.ones(3, dtype=torch.bool)
        for k in range(2 * stop.mark):
            falling = 1.3 if k < stop.mark else 1.2
            stop.seen(slice(None), torch.tensor([1.2, falling, 1.05]), flips)
            stop.after(k, state, active)
            if k + 1 < 2 * stop.mark:
                assert active.tolist() == [True, True, True]
        assert active.tolist() == want
        gave_up = None if stop.gave_up is None else stop.gave_up.tolist()
        assert gave_up == (None if stalled == 0.0 else [True, False, False])
    # a row that left the leg before (``active`` cleared by another rule) is not marked
    stop = LegStop.for_leg("probe", 40, 0.0, 1e-3, 1.5, state, 1.1)
    assert stop is not None
    active = torch.tensor([False, True, True])
    for k in range(2 * stop.mark):
        stop.seen(slice(None), torch.tensor([1.2, 1.2, 1.05]), flips)
        stop.after(k, state, active)
    assert stop.gave_up is not None
    assert stop.gave_up.tolist() == [False, True, False]


def test_a_late_allowance_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="late_hopeless"):
        dataclasses.replace(GradientConfig(), late_hopeless=0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_only_samples_a_probe_left_stalled_walk(seed: int) -> None:
    """A 1000-pass L∞ search of a linear model: most samples end with more than
    REFINE_MIN_STEPS unspent, but with ``next_class`` only one, whose probe toward a far
    class sat at its own minimum, walks (a walk for every sample with spare steps would
    spend them all); every other sample's search is the same as without ``next_class``,
    and the walker ends no worse."""
    model, x = random_linear(seed, 24, 6, 12)
    # (without the stretch of the last refinement, which takes the other samples' unspent
    # steps: tests/test_stretch_linf.py)
    plain = GradientConfig(stretch_refine=False)
    on = linear_search(model, x, plain, "linf")
    off = linear_search(model, x, dataclasses.replace(plain, next_class=False), "linf")
    assert int(((1000 - off.queries) // 2 >= REFINE_MIN_STEPS).sum()) > len(x) // 2
    walked = on.queries != off.queries
    assert int(walked.sum()) == 1
    assert bool((on.queries[walked] > off.queries[walked]).all())
    assert torch.equal(on.best_norm[~walked], off.best_norm[~walked])
    assert bool((on.best_norm <= off.best_norm).all())
