"""How a search of few passes is split (:func:`mmargin.engine.passes.split_steps`,
:func:`~mmargin.engine.passes.is_short`, :func:`~mmargin.engine.passes.search_legs` and
the Lagrangian run's share): pinned by behaviour, on every step count and distance."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from engine_fakes import random_linear

import mmargin.engine.gradient as gradient
import mmargin.engine.reach as reach
from mmargin.distances import lp
from mmargin.engine.lagrangian_plan import MIN_STEPS, lagrangian_steps
from mmargin.engine.passes import Leg, is_short, legs, search_legs, second_first, split_steps
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import Streams
from mmargin.goals import Targeted, Untargeted
from mmargin.spaces import box

NORMS = [2.0, 1.0, math.inf, 0.0]


def _plan(steps: int, p: float, config: GradientConfig) -> tuple[int, list[Leg]]:
    """What ``_class_aware`` runs for ``steps`` steps left after ranking: the Lagrangian
    run's steps and the ε-ball runs."""
    lagrange = lagrangian_steps(steps, p, config)
    return lagrange, search_legs(steps, p, config, lagrange)


@pytest.mark.parametrize("p", NORMS)
def test_the_runs_spend_exactly_the_steps_and_each_is_long_enough_to_anneal(p: float) -> None:
    config = GradientConfig()
    for steps in range(max(split_steps(p, config), 2), 1500):
        lagrange, plan = _plan(steps, p, config)
        assert lagrange + sum(leg.steps for leg in plan) == steps, (p, steps)
        assert lagrange == 0 or lagrange >= MIN_STEPS
        assert all(leg.steps >= 8 for leg in plan if leg.kind == "probe"), (p, steps)
        if p in (1.0, 2.0):  # split only when every run can anneal
            assert all(leg.steps >= 8 for leg in plan), (p, steps, plan)


def test_l2_and_l1_searches_of_few_steps_are_one_run_and_linf_stays_split() -> None:
    config = GradientConfig()
    assert split_steps(2.0, config) == config.split_min_l2 > 0
    assert split_steps(1.0, config) == config.split_min_l1 > 0
    assert split_steps(math.inf, config) == split_steps(0.0, config) == config.split_min == 0
    raised = GradientConfig(split_min=500)
    assert all(split_steps(p, raised) == 500 for p in NORMS)


def test_only_short_l2_searches_follow_the_short_plan() -> None:
    config = GradientConfig()
    for steps in (config.split_min_l2, 120, config.short_steps - 1):
        assert is_short(steps, 2.0, config)
        assert lagrangian_steps(steps, 2.0, config) == int(steps * config.short_lagrangian)
        probes = [leg for leg in _plan(steps, 2.0, config)[1] if leg.kind == "probe"]
        assert len(probes) <= config.short_probes
    for steps in (config.short_steps, 495, 5000):
        assert not is_short(steps, 2.0, config)
    assert not any(is_short(120, p, config) for p in (1.0, math.inf, 0.0))


def test_short_l1_searches_give_the_steps_of_the_dropped_probes_to_the_refinements() -> None:
    """Below ``short_steps`` an L1 search has ``short_probes_l1`` probes (of the usual
    share) and its refinements get what the other probes would have had; from there on,
    and on every other distance at every length, the plan is the one with every probe."""
    config = GradientConfig()
    every = dataclasses.replace(config, short_probes_l1=config.probes)
    assert 0 < config.short_steps < 495  # 1000 passes keep the full plan
    for steps in range(split_steps(1.0, config), 1000):
        lagrange, plan = _plan(steps, 1.0, config)
        lagrange_all, plan_all = _plan(steps, 1.0, every)
        assert lagrange == lagrange_all
        if steps >= config.short_steps:
            assert plan == plan_all, steps
            continue
        kinds = [leg.kind for leg in plan]
        assert kinds.count("probe") <= config.short_probes_l1
        first = [leg.steps for leg in plan if leg.kind == "first"]
        assert first == [leg.steps for leg in plan_all if leg.kind == "first"]
        refine = sum(leg.steps for leg in plan if leg.kind == "refine")
        dropped = sum(leg.steps for leg in plan_all if leg.kind == "probe") - sum(
            leg.steps for leg in plan if leg.kind == "probe"
        )
        assert refine == sum(leg.steps for leg in plan_all if leg.kind == "refine") + dropped
    for p in (2.0, math.inf, 0.0):
        for steps in range(2, 1000, 7):
            assert _plan(steps, p, config) == _plan(steps, p, every), (p, steps)


def test_short_l1_probes_never_exceed_the_configured_probes() -> None:
    """``short_probes_l1`` is a cap: a user's ``probes = 0`` (or 1) keeps that many probes
    in short L1 searches too, with no error about the short field."""
    for probes in (0, 1):
        config = GradientConfig(probes=probes)
        _, plan = _plan(200, 1.0, config)
        assert [leg.kind for leg in plan].count("probe") == probes


@pytest.mark.parametrize("seed", [0, 1])
def test_a_short_l1_search_ends_on_the_closed_form_minimum(seed: int) -> None:
    """250 and 500 passes, L1, bias-free linear models with the box out of reach: the
    search with fewer probes ends within 1 % of the exact minimal L1 flip
    ``min_j (z_y − z_j) / ‖w_y − w_j‖_∞``, never below it, within the budget, and no
    sample ends worse than the plan with every probe by more than that 1 %."""
    model, x, labels = _linear(seed, 24, 6)
    with torch.no_grad():
        z = model(x)
    w = model.weight.detach()
    gaps = z.gather(1, labels[:, None]) - z
    ratio = gaps / (w[labels][:, None, :] - w[None, :, :]).abs().amax(dim=2).clamp(min=1e-12)
    ratio[torch.arange(len(x)), labels] = float("inf")
    exact = ratio.min(dim=1).values
    for passes in (250, 500):
        found = []
        for config in (GradientConfig(), GradientConfig(short_probes_l1=3)):
            streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
            problem = Problem(model, box(-1e3, 1e3), lp("l1"), Untargeted(), x, labels)
            state = gradient.gradient_search(problem, passes, config, streams, 6)
            assert bool((state.queries <= passes).all())
            assert bool((state.best_norm >= exact * (1 - 1e-5)).all())
            assert bool((state.best_norm <= exact * 1.01).all()), (passes, state.best_norm / exact)
            found.append(state.best_norm)
        assert bool((found[0] <= found[1] * 1.01).all())


@pytest.mark.parametrize("p", NORMS)
def test_long_searches_keep_the_plan_they_had(p: float) -> None:
    """1000 passes (495 steps after ranking) and more: the plan before the short plan
    existed, the Lagrangian run's share of the steps and legs over the rest (on L1, L2
    and L∞ with its first run split in two, :func:`mmargin.engine.passes.second_first`,
    :func:`mmargin.engine.passes.second_share`)."""
    config = GradientConfig()
    share = {2.0: config.lagrangian, 1.0: config.lagrangian_l1}.get(p, 0.0)
    for steps in (495, 997, 4995):
        before = int(steps * share) if int(steps * share) >= MIN_STEPS else 0
        want = legs(steps - before, config.restarts, config.probes, config.first_share,
                    config.probe_share)  # fmt: skip
        share_first = {1.0: config.second_first_l1, 2.0: config.second_first_l2,
                       math.inf: config.second_first_linf}.get(p)  # fmt: skip
        if share_first is not None:
            want = second_first(want, share_first)
        assert _plan(steps, p, config) == (before, want)


def _linear(seed: int, d: int, k: int) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    model, x = random_linear(seed, d, k, 5)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    return model, x, labels


def _search(seed: int, d: int, k: int, p: float, passes: int) -> torch.Tensor:
    model, x, labels = _linear(seed, d, k)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    distance = lp({2.0: "l2", 1.0: "l1", math.inf: "linf"}[p])
    problem = Problem(model, box(-10.0, 10.0), distance, Untargeted(), x, labels)
    state = gradient.gradient_search(problem, passes, GradientConfig(hopeless=0.0), streams, k)
    return state.queries


@pytest.mark.parametrize("p", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("passes", [100, 500])
def test_the_plan_depends_on_the_passes_and_the_distance_not_the_model(
    p: float, passes: int
) -> None:
    """Two models of different sizes (as many classes: the ranking's cost counts them)
    spend the same passes per sample (without the probes' per-sample exits, which are
    the one thing that may end a run early)."""
    a = _search(1, 12, 7, p, passes)
    b = _search(2, 30, 7, p, passes)
    assert bool((a == b).all()) and bool((a <= passes).all())


@pytest.mark.parametrize("p", [2.0, 1.0])
def test_a_search_below_the_split_ranks_no_classes_and_spends_every_pass(
    p: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = split_steps(p, GradientConfig()) - 1

    def refuse(*args: object) -> torch.Tensor:
        raise AssertionError("a one-run search ranked classes")

    monkeypatch.setattr(gradient, "rank_reach", refuse)
    monkeypatch.setattr(reach, "rank_classes", refuse)
    monkeypatch.setattr(reach, "rank_reach", refuse)
    assert bool((_search(3, 12, 4, p, 2 * steps) == 2 * steps).all())


def test_targeted_searches_are_not_cut_to_one_run() -> None:
    """The split only concerns untargeted searches; targeted restarts stay as they were."""
    model, x, labels = _linear(4, 12, 4)
    goal = Targeted(target=3)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    seen: list[int] = []
    run_once = gradient.epsball_run

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(1)
        run_once(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gradient, "epsball_run", spy)
        problem = Problem(model, box(-10.0, 10.0), lp("l2"), goal, x, labels,
                          goal.targets_for(labels))  # fmt: skip
        gradient.gradient_search(problem, 100, GradientConfig(), streams, 4)
    assert len(seen) == GradientConfig().restarts + 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"split_min_l2": -1}, "gradient.split_min_l2: expected"),
        ({"split_min_l1": 10**9}, "gradient.split_min_l1: expected"),
        ({"short_lagrangian": 0.95}, "gradient.short_lagrangian: expected"),
        ({"short_probes": 5, "short_probe_share": 0.3}, "short_probes \\* short_probe_share"),
        ({"short_probes_l1": -1}, "gradient.short_probes_l1: expected"),
        ({"plain_gamma_l2": 1.0}, "gradient.plain_gamma_l2: expected"),
    ],
)
def test_absurd_short_plans_are_refused_naming_the_field(
    values: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        GradientConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("p", [2.0, 1.0, math.inf])
def test_the_plain_l2_run_starts_with_its_own_eps_factor(p: float) -> None:
    """Below the split an L2 search's one run shrinks ε by ``plain_gamma_l2`` at first, not
    by the split plan's ``gamma_init``; on L1 and L∞, and in split searches, the runs keep
    ``gamma_init`` (but a short L2 plan's first run: ``tests/test_short_first.py``)."""
    model, x, labels = _linear(5, 12, 4)
    distance = lp({2.0: "l2", 1.0: "l1", math.inf: "linf"}[p])
    config = GradientConfig()
    assert config.plain_gamma_l2 != config.gamma_init
    assert 2 * split_steps(2.0, config) > 100 and 2 * split_steps(1.0, config) > 100
    run_once = gradient.epsball_run
    seen: list[float] = []

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(args[2].gamma_init)  # type: ignore[attr-defined]
        run_once(*args, **kwargs)  # type: ignore[arg-type]

    for passes in (100, 500):
        seen.clear()
        streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
        problem = Problem(model, box(-10.0, 10.0), distance, Untargeted(), x, labels)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(gradient, "epsball_run", spy)
            gradient.gradient_search(problem, passes, config, streams, 4)
        plain = p == 2.0 and passes < 2 * split_steps(p, config)
        want = config.plain_gamma_l2 if plain else config.gamma_init
        if p == 2.0 and not plain:  # the short L2 plan's first run (.short_first)
            assert seen[0] == config.short_first_gamma_l2, (p, passes, seen)
            seen = seen[1:]
        assert seen and all(g == want for g in seen), (p, passes, seen)
