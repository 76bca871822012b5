"""The steps a sample's runs left unspent (:mod:`mmargin.engine.leftover`): the second L2
Lagrangian run and the L1 polish, against the closed-form minimum of a linear model (with
the box out of reach: ``min_j (z_y − z_j) / ‖w_y − w_j‖_q``, q the dual norm)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from engine_fakes import copy_state, exact_flip, far_box, linear_search, random_linear, relu_flips
from torch import Tensor, nn

from mmargin.distances import lp
from mmargin.engine.exchange import KINDS, ROUND, exchange_run, reserved_steps
from mmargin.engine.gradient import gradient_search
from mmargin.engine.lagrangian import LR_INIT, l1_weights, lagrangian_run
from mmargin.engine.lagrangian_plan import MIN_STEPS, lagrangian_lr
from mmargin.engine.leftover import SECOND_MIN_STEPS, spend_unspent, unspent_steps
from mmargin.engine.polish import POLISH_MAX_STEPS, POLISH_MIN_STEPS, polish_run
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Untargeted
from mmargin.spaces import box


def test_unspent_steps_count_what_each_sample_has_left() -> None:
    x = torch.zeros(3, 4)
    state = SearchState.empty(x)
    before = torch.tensor([5, 5, 0])
    state.queries = torch.tensor([5 + 20, 5 + 21, 200])
    assert unspent_steps(100, before, state).tolist() == [90, 90, 0]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_search_spends_the_probes_leftover_and_stays_on_the_closed_form(seed: int) -> None:
    """The probes leave early on a linear model (the hopeless rule), so without the second
    run samples finish with steps unspent; with it every sample with a flip and at least
    SECOND_MIN_STEPS unspent spends them all, the others (fewer left) keep their passes and
    flips, all within the budget, and no flip below the exact minimum nor above 1.01× it.
    (Without the planned second run, whose shorter probes leave too few steps unspent.)"""
    model, x = random_linear(seed, 24, 6, 12)
    with torch.no_grad():
        exact = exact_flip(model, x, model(x).argmax(dim=1))
    # every probe runs (to its exit): the leftover is what the exits leave
    off = linear_search(model, x, GradientConfig(unspent_lr=0.0, lagrangian_second=0.0,
                                                 skip_far_probes=False))  # fmt: skip
    on = linear_search(model, x, GradientConfig(lagrangian_second=0.0, skip_far_probes=False))
    assert bool((on.queries <= 1000).all())
    full = int(on.queries.max())  # every step spent (1000, or 999 after an odd ranking cost)
    left = torch.div(full - off.queries, 2, rounding_mode="floor")
    long = (left >= SECOND_MIN_STEPS) & torch.isfinite(off.best_norm)
    short = (left >= MIN_STEPS) & ~long & torch.isfinite(off.best_norm)
    assert bool(long.any()) and bool(short.any())  # both sides of the rule are met
    assert bool((on.queries[long] == full).all())
    assert torch.equal(on.queries[~long], off.queries[~long])
    assert torch.equal(on.best_norm[~long], off.best_norm[~long])
    assert bool((on.best_norm <= off.best_norm).all())  # only adds flips
    assert bool((on.best_norm >= exact * (1 - 1e-5)).all())
    assert bool((on.best_norm <= exact * 1.01).all()), (on.best_norm / exact).tolist()


def test_the_second_run_walks_from_the_clean_input_to_the_exact_flip() -> None:
    """A state whose only flips are 3× the minimum: the run, started from the clean input
    with the larger first step, gets every sample to within 2 % of the closed form; a
    sample without a flip, or with fewer than SECOND_MIN_STEPS steps left, is not touched."""
    model, x = random_linear(3, 16, 5, 8)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    exact = exact_flip(model, x, labels)
    state = SearchState.empty(x)
    state.best_norm = exact * 3
    before = torch.zeros_like(state.queries)
    state.queries[6] = 2 * (400 - SECOND_MIN_STEPS + 1)  # fewer than SECOND_MIN_STEPS left
    state.best_norm[7] = float("inf")  # no flip yet
    problem = Problem(model, far_box(), lp("l2"), Untargeted(), x, labels)
    spend_unspent(problem, 400, before, state, GradientConfig())
    ran = torch.arange(6)
    assert bool((state.queries[ran] == 800).all())
    assert int(state.queries[6]) == 2 * (400 - SECOND_MIN_STEPS + 1)
    assert int(state.queries[7]) == 0
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
        problem = Problem(model, far_box(), distance, Untargeted(), x, labels)
        spend_unspent(problem, 100, torch.zeros_like(state.queries), state, config)
        assert int(state.queries.sum()) == 0


def test_a_sample_gets_the_same_result_alone_as_in_its_batch() -> None:
    model, x = random_linear(5, 16, 5, 6)
    together = linear_search(model, x, GradientConfig())
    for i in range(len(x)):
        alone = linear_search(model, x[i : i + 1], GradientConfig())
        assert int(alone.queries[0]) == int(together.queries[i])
        assert float(alone.best_norm[0]) == pytest.approx(float(together.best_norm[i]), rel=1e-4)


def test_samples_of_different_lengths_share_one_run_as_if_each_ran_alone() -> None:
    """``lagrangian_run(lengths=...)``, the leftover's one batched run: each sample spends
    exactly its own steps (``steps`` = the longest) and ends where a run of exactly that
    length, on it alone, ends (its own decay schedule), however short the others are;
    ``only`` still leaves the other samples untouched."""
    model, x = random_linear(7, 12, 5, 10)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    lengths = torch.tensor([8, 40, 9, 23, 40, 12, 8, 31, 17, 40])
    only = torch.ones(len(x), dtype=torch.bool)
    only[4] = False
    state = SearchState.empty(x)
    problem = Problem(model, far_box(), lp("l2"), Untargeted(), x, labels)
    lagrangian_run(problem, 40, state, only=only, lr_init=0.2, lengths=lengths)
    assert state.queries.tolist() == [2 * int(m) if i != 4 else 0 for i, m in enumerate(lengths)]
    assert not bool(torch.isfinite(state.best_norm[4]))
    for i in [0, 1, 2, 3, 5, 7, 8]:
        alone = SearchState.empty(x[i : i + 1])
        problem = Problem(model, far_box(), lp("l2"), Untargeted(), x[i : i + 1], labels[i : i + 1])
        lagrangian_run(problem, int(lengths[i]), alone, lr_init=0.2)
        assert int(alone.queries[0]) == int(state.queries[i])
        assert torch.isfinite(alone.best_norm[0])
        assert float(state.best_norm[i]) == pytest.approx(float(alone.best_norm[0]), rel=1e-5)
        assert torch.allclose(state.best_delta[i], alone.best_delta[0], atol=1e-6)


def test_a_negative_step_size_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="unspent_lr"):
        dataclasses.replace(GradientConfig(), unspent_lr=-0.1)


def test_only_a_short_l2_search_starts_its_lagrangian_run_with_its_own_step() -> None:
    # (the default short step equals LR_INIT since the short plan's run is hastened,
    # lagrangian_plan.lagrangian_hasten; another value shows which plan reads it)
    config = GradientConfig(short_lagrangian_lr=0.3)
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
        exact = exact_flip(model, x, labels)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    problem = Problem(model, far_box(), lp("l2"), Untargeted(), x, labels)
    state = gradient_search(problem, 250, GradientConfig(), streams, 6)
    assert bool((state.queries <= 250).all())
    assert bool((state.best_norm >= exact * (1 - 1e-5)).all())
    assert bool((state.best_norm <= exact * 1.01).all()), (state.best_norm / exact).tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_the_l1_polish_on_the_leftover_only_ever_improves_alinear_search(seed: int) -> None:
    """L1, 1000 passes on a linear model: with the polish (and the exchange after it)
    every planned run is the same (same flips before it), so no sample ends worse than
    without it, none below the closed-form L1 minimum, all within the budget; and the
    samples that had steps left end within 1.001× of the closed form. With the exchange's
    reserve (``exchange_reserve``: its steps come out of the last refinement, so that run
    is shorter, and it runs before the polish), or the sparse flips' (``exchange_sparse``,
    the default), no sample ends more than 0.1 % worse."""
    model, x = random_linear(seed, 24, 6, 12)
    with torch.no_grad():
        exact = exact_flip(model, x, model(x).argmax(dim=1), dual=float("inf"))
    off = linear_search(model, x, GradientConfig(unspent_polish=False, exchange_sparse=0), "l1")
    on = linear_search(model, x, GradientConfig(exchange_sparse=0), "l1")
    left = 1000 - off.queries
    assert bool((left >= 2 * POLISH_MIN_STEPS).any())  # the polish has steps to spend
    assert bool((on.queries <= 1000).all())
    assert bool((on.best_norm <= off.best_norm).all())
    assert bool((on.best_norm >= exact * (1 - 1e-5)).all())
    polished = left >= 2 * POLISH_MIN_STEPS
    assert bool((on.best_norm[polished] <= exact[polished] * 1.001).all()), (on.best_norm / exact)[
        polished
    ].tolist()
    for config in (GradientConfig(exchange_reserve=True), GradientConfig()):
        kept = linear_search(model, x, config, "l1")
        assert bool((kept.queries <= 1000).all())
        assert bool((kept.best_norm <= off.best_norm * 1.001).all())
        assert bool((kept.best_norm >= exact * (1 - 1e-5)).all())


def _l1_leftover_case() -> tuple[nn.Module, Tensor, Tensor, SearchState, Tensor]:
    """The L1 leftover tests' case: 36 flips on a ReLU network and each sample's unspent
    steps of a 100-step search (``queries`` set to match)."""
    net, x, labels, start = relu_flips(11, 36)
    left = torch.tensor([3, 4, 5, 9, 16, 30, 7, 12, 6, 40, 33, 45] * 3)  # unspent steps
    start.queries = 2 * (100 - left)
    return net, x, labels, start, left


def test_the_l1_leftover_polishes_every_sample_for_exactly_its_own_unspent_steps() -> None:
    """L1: one batched polish ends, bit for bit, where one polish per distinct number of
    unspent steps ends (each sample's steps capped at POLISH_MAX_STEPS, those with fewer
    than POLISH_MIN_STEPS untouched), on a ReLU network where the polish's steps differ;
    then the exchange (:mod:`mmargin.engine.exchange`) spends what the polish left.
    Float64: in float32 a matrix product of 3 rows can differ in the last bit from the same
    rows in a larger batch (BLAS kernels by size), which would blur "bit for bit"; in
    float64 it can too, in the last bit (2 of 36 samples at 1e-16 once the exchange left
    the batched polish other rows than before), so the flips agree to 1e-12."""
    net, x, labels, start, left = _l1_leftover_case()
    steps, before = 100, torch.zeros_like(start.queries)
    space, distance = box(0.0, 1.0), lp("l1")

    batched = copy_state(start)
    problem = Problem(net, space, distance, Untargeted(), x, labels)
    spend_unspent(problem, steps, before, batched, GradientConfig())
    grouped = copy_state(start)  # the oracle: one polish_run per distinct count, as before
    found = torch.isfinite(start.best_norm)
    capped = left.clamp(max=POLISH_MAX_STEPS)
    ready = (capped >= POLISH_MIN_STEPS) & found
    for length in sorted(set(capped[ready].tolist())):
        problem = Problem(net, space, distance, Untargeted(), x, labels)
        polish_run(problem, int(length), grouped, l1_weights(distance, x),
                   only=ready & (capped == length))  # fmt: skip
    # then the exchange on the steps the polish left (a short search reserves none)
    assert reserved_steps(steps, 1.0, GradientConfig()) == 0
    exchange_run(problem, grouped, l1_weights(distance, x),
                 unspent_steps(steps, before, grouped), None, only=found,
                 kinds=(*KINDS, "keep"))  # fmt: skip
    assert int(ready.sum()) >= 20 and len(set(capped[ready].tolist())) >= 5
    assert bool((grouped.queries > start.queries + 2 * capped * ready).any())  # it exchanged
    for name in ("best_class", "queries"):
        assert torch.equal(getattr(batched, name), getattr(grouped, name)), name
    for name in ("best_norm", "best_delta"):  # to the last bits of float64 (see above)
        assert torch.allclose(getattr(batched, name), getattr(grouped, name), rtol=1e-12,
                              atol=1e-14), name  # fmt: skip
    assert bool((batched.best_norm < start.best_norm).any())  # it does polish


def test_the_l1_leftover_walks_toward_the_untried_class_first_where_the_steps_pay() -> None:
    """L1 with ``untried``: a sample whose unspent steps pay for the ``next`` round and still
    leave the polish its fewest walks toward its untried class first, then polishes and
    exchanges on what is left (the same as those three calls in turn); a sample with fewer
    steps, or none to walk toward (``-1``), ends as without ``untried``; none spends more
    than its steps."""
    net, x, labels, start, left = _l1_leftover_case()
    steps, before = 100, torch.zeros_like(start.queries)
    space, distance = box(0.0, 1.0), lp("l1")
    found = torch.isfinite(start.best_norm)
    # the class neither the label nor the best flip's (three classes), none for every fifth
    untried = torch.where(found, 3 - labels - start.best_class, torch.full_like(labels, -1))
    untried[::5] = -1
    problem = Problem(net, space, distance, Untargeted(), x, labels)
    walked = copy_state(start)
    spend_unspent(problem, steps, before, walked, GradientConfig(), untried=untried)
    plain = copy_state(start)
    spend_unspent(problem, steps, before, plain, GradientConfig())
    oracle = copy_state(start)  # the three calls in turn
    weights = l1_weights(distance, x)
    exchange_run(problem, oracle, weights, left - POLISH_MIN_STEPS, None, only=found,
                 kinds=("next",), untried=untried)  # fmt: skip
    rest = unspent_steps(steps, before, oracle).clamp(max=POLISH_MAX_STEPS)
    polish_run(problem, int(rest.max()), oracle, weights, only=found, lengths=rest)
    exchange_run(problem, oracle, weights, unspent_steps(steps, before, oracle), None,
                 only=found, kinds=(*KINDS, "keep"))  # fmt: skip
    ran = found & (untried >= 0) & (untried != start.best_class) & (left >= ROUND + 4)
    assert POLISH_MIN_STEPS == 4 and int(ran.sum()) >= 12
    assert bool((walked.queries <= 2 * steps).all())
    assert torch.equal(walked.queries, oracle.queries)
    assert torch.allclose(walked.best_norm, oracle.best_norm, rtol=1e-12, atol=1e-14)
    assert torch.equal(walked.queries[~ran], plain.queries[~ran])
    # (to the last bits of float64: the batches hold other rows, see the test above)
    assert torch.allclose(walked.best_norm[~ran], plain.best_norm[~ran], rtol=1e-12, atol=1e-14)
    assert not torch.equal(walked.queries[ran], plain.queries[ran])
