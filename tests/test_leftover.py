"""The steps a sample's runs left unspent (:mod:`mmargin.engine.leftover`): the second L2
Lagrangian run and the L1 polish, against the closed-form minimum of a linear model (with
the box out of reach: ``min_j (z_y − z_j) / ‖w_y − w_j‖_q``, q the dual norm)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from engine_fakes import random_linear

from mmargin.distances import lp
from mmargin.engine.gradient import gradient_search
from mmargin.engine.lagrangian import LR_INIT, MIN_STEPS, lagrangian_lr
from mmargin.engine.leftover import spend_unspent, unspent_steps
from mmargin.engine.polish import POLISH_MIN_STEPS
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Untargeted
from mmargin.spaces import ContinuousSpace, box


def _space() -> ContinuousSpace:
    """A box out of reach of every flip (a fresh one: a box caches its tensors)."""
    return box(-1e3, 1e3)


def _exact_l2(model: torch.nn.Linear, x: torch.Tensor, labels: torch.Tensor,
              dual: float = 2.0) -> torch.Tensor:  # fmt: skip
    """The smallest L2 flip of each point of a bias-free linear model (no box in reach);
    with ``dual=inf`` the smallest L1 flip."""
    with torch.no_grad():
        z = model(x)
    w = model.weight.detach()
    gaps = z.gather(1, labels[:, None]) - z  # (n, k): z_y − z_j
    dist = (w[labels][:, None, :] - w[None, :, :]).norm(p=dual, dim=2)  # ‖w_y − w_j‖_q
    ratio = gaps / dist.clamp(min=1e-12)
    ratio[torch.arange(len(x)), labels] = float("inf")
    return ratio.min(dim=1).values


def _search(model: torch.nn.Linear, x: torch.Tensor, config: GradientConfig,
            norm: str = "l2") -> SearchState:  # fmt: skip
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    k = model.weight.shape[0]
    return gradient_search(model, _space(), lp(norm), Untargeted(), x, labels, None, 1000,
                           config, streams, k)  # fmt: skip


def test_unspent_steps_count_what_each_sample_has_left() -> None:
    x = torch.zeros(3, 4)
    state = SearchState.empty(x)
    before = torch.tensor([5, 5, 0])
    state.queries = torch.tensor([5 + 20, 5 + 21, 200])
    assert unspent_steps(100, before, state).tolist() == [90, 90, 0]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_search_spends_the_probes_leftover_and_stays_on_the_closed_form(seed: int) -> None:
    """The probes leave early on a linear model (the hopeless rule), so without the second
    run samples finish with steps unspent; with it every sample with a flip ends with
    fewer than MIN_STEPS steps unspent, within the budget, and no flip below the exact
    minimum nor above 1.01× it."""
    model, x = random_linear(seed, 24, 6, 12)
    with torch.no_grad():
        exact = _exact_l2(model, x, model(x).argmax(dim=1))
    off = _search(model, x, GradientConfig(unspent_lr=0.0))
    assert bool((off.queries < 1000 - 2 * MIN_STEPS).any())  # the rule has work to do
    on = _search(model, x, GradientConfig())
    assert bool((on.queries <= 1000).all())
    assert bool((on.queries[torch.isfinite(on.best_norm)] > 1000 - 2 * MIN_STEPS - 12).all())
    assert bool((on.best_norm <= off.best_norm).all())  # only adds flips
    assert bool((on.best_norm >= exact * (1 - 1e-5)).all())
    assert bool((on.best_norm <= exact * 1.01).all()), (on.best_norm / exact).tolist()


def test_the_second_run_walks_from_the_clean_input_to_the_exact_flip() -> None:
    """A state whose only flips are 3× the minimum: the run, started from the clean input
    with the larger first step, gets every sample to within 2 % of the closed form; a
    sample without a flip, or with fewer than MIN_STEPS steps left, is not touched."""
    model, x = random_linear(3, 16, 5, 8)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    exact = _exact_l2(model, x, labels)
    state = SearchState.empty(x)
    state.best_norm = exact * 3
    before = torch.zeros_like(state.queries)
    state.queries[6] = 2 * (400 - MIN_STEPS + 1)  # fewer than MIN_STEPS steps left
    state.best_norm[7] = float("inf")  # no flip yet
    spend_unspent(model, _space(), lp("l2"), Untargeted(), x, labels, 400, before, state,
                  GradientConfig())  # fmt: skip
    ran = torch.arange(6)
    assert bool((state.queries[ran] == 800).all())
    assert int(state.queries[6]) == 2 * (400 - MIN_STEPS + 1) and int(state.queries[7]) == 0
    assert bool((state.best_norm[ran] >= exact[ran] * (1 - 1e-5)).all())
    assert bool((state.best_norm[ran] <= exact[ran] * 1.02).all())
    assert float(state.best_norm[6]) == pytest.approx(float(exact[6] * 3))


@pytest.mark.parametrize("p", ["linf", "l0"])
def test_other_distances_and_switched_off_runs_spend_nothing(p: str) -> None:
    """Samples with flips and every step left: L∞/L0, L2 with ``unspent_lr=0`` and L1 with
    ``unspent_polish=False`` spend none of them."""
    model, x = random_linear(4, 8, 3, 4)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    for distance, config in ((lp(p), GradientConfig()),
                             (lp("l2"), GradientConfig(unspent_lr=0)),
                             (lp("l1"), GradientConfig(unspent_polish=False))):  # fmt: skip
        state = SearchState.empty(x)
        state.best_norm = torch.ones(len(x))  # a flip each (never looked at: nothing runs)
        spend_unspent(model, _space(), distance, Untargeted(), x, labels, 100,
                      torch.zeros_like(state.queries), state, config)  # fmt: skip
        assert int(state.queries.sum()) == 0


def test_a_sample_gets_the_same_result_alone_as_in_its_batch() -> None:
    model, x = random_linear(5, 16, 5, 6)
    together = _search(model, x, GradientConfig())
    for i in range(len(x)):
        alone = _search(model, x[i : i + 1], GradientConfig())
        assert int(alone.queries[0]) == int(together.queries[i])
        assert float(alone.best_norm[0]) == pytest.approx(float(together.best_norm[i]), rel=1e-4)


def test_a_negative_step_size_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="unspent_lr"):
        dataclasses.replace(GradientConfig(), unspent_lr=-0.1)


def test_only_a_short_l2_search_starts_its_lagrangian_run_with_the_larger_step() -> None:
    config = GradientConfig()
    assert lagrangian_lr(120, 2.0, config) == config.short_lagrangian_lr != LR_INIT
    assert lagrangian_lr(config.short_steps, 2.0, config) == LR_INIT
    assert lagrangian_lr(120, 1.0, config) == lagrangian_lr(480, 1.0, config) == LR_INIT
    assert lagrangian_lr(120, 2.0, GradientConfig(short_lagrangian_lr=0.05)) == 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_a_250_pass_search_reaches_the_closed_form(seed: int) -> None:
    """The short plan (larger first step for its Lagrangian run) still ends on the exact
    minimal L2 flip of a linear model: never below it, within 1 % of it."""
    model, x = random_linear(seed, 24, 6, 12)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
        exact = _exact_l2(model, x, labels)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    state = gradient_search(model, _space(), lp("l2"), Untargeted(), x, labels, None, 250,
                            GradientConfig(), streams, 6)  # fmt: skip
    assert bool((state.queries <= 250).all())
    assert bool((state.best_norm >= exact * (1 - 1e-5)).all())
    assert bool((state.best_norm <= exact * 1.01).all()), (state.best_norm / exact).tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_the_l1_polish_on_the_leftover_only_ever_improves_a_search(seed: int) -> None:
    """L1, 1000 passes on a linear model: with the polish every planned run is the same
    (same flips before it), so no sample ends worse than without it, none below the
    closed-form L1 minimum, all within the budget; and the samples that had steps left
    end within 1.001× of the closed form."""
    model, x = random_linear(seed, 24, 6, 12)
    with torch.no_grad():
        exact = _exact_l2(model, x, model(x).argmax(dim=1), dual=float("inf"))
    off = _search(model, x, GradientConfig(unspent_polish=False), "l1")
    on = _search(model, x, GradientConfig(), "l1")
    left = 1000 - off.queries
    assert bool((left >= 2 * POLISH_MIN_STEPS).any())  # the polish has steps to spend
    assert bool((on.queries <= 1000).all())
    assert bool((on.best_norm <= off.best_norm).all())
    assert bool((on.best_norm >= exact * (1 - 1e-5)).all())
    polished = left >= 2 * POLISH_MIN_STEPS
    assert bool((on.best_norm[polished] <= exact[polished] * 1.001).all()), (on.best_norm / exact)[
        polished
    ].tolist()
