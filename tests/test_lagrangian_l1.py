"""The Lagrangian run on L1 (:mod:`mmargin.engine.lagrangian`) against a closed form: on a
linear model in a box the smallest L1 flip toward class ``j`` moves the coordinates with
the largest weight differences first, each as far as the box lets it (a fractional
knapsack), and the untargeted flip is the smallest of those over ``j``."""

from __future__ import annotations

import math

import pytest
import torch

from mmargin.distances import lp
from mmargin.engine.gradient import gradient_search
from mmargin.engine.lagrangian import HORIZON, LR_REDUCTION, decay, lagrangian_run
from mmargin.engine.lagrangian_plan import lagrangian_slot, lagrangian_steps
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Untargeted
from mmargin.spaces import box


def _linear(seed: int, d: int = 16, k: int = 4) -> tuple[torch.nn.Linear, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(d, k)
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, d, generator=gen))
        model.bias.copy_(torch.randn(k, generator=gen))
    x = torch.rand(8, d, generator=gen)
    return model, x


def _greedy_l1(model: torch.nn.Linear, x: torch.Tensor, label: int) -> float:
    """Exact smallest L1 perturbation in the box [0, 1] that makes any other class score at
    least the label's (inf when the box allows none)."""
    w, b = model.weight.detach().double(), model.bias.detach().double()
    xd = x.double()
    z = w @ xd + b
    best = math.inf
    for j in range(len(z)):
        if j == label:
            continue
        a = w[label] - w[j]  # the margin z_label − z_j falls by a·δ's negative
        need = float(z[label] - z[j])
        room = torch.where(a > 0, xd, 1 - xd)  # how far each coordinate may move, downhill
        gain = a.abs() * room
        spent = 0.0
        for i in a.abs().argsort(descending=True).tolist():
            if need <= 0 or float(a[i].abs()) == 0:
                break
            take = min(float(gain[i]), need)
            spent += take / float(a[i].abs())
            need -= take
        if need <= 1e-12:
            best = min(best, spent)
    return best


def _exact(model: torch.nn.Linear, x: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return [_greedy_l1(model, x[i], int(labels[i])) for i in range(len(x))]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_l1_lagrangian_run_reaches_the_exact_flip_of_two_classes(seed: int) -> None:
    """Two classes: one half-space, a convex problem, so the run alone must get there (a
    run of :data:`HORIZON` steps: shorter ones from the clean input explore with larger
    steps and have only their tail to converge, for the refinements to polish)."""
    model, x = _linear(seed, k=2)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    exact = _exact(model, x, labels)
    state = SearchState.empty(x)
    problem = Problem(model, box(0.0, 1.0), lp("l1"), Untargeted(), x, labels)
    lagrangian_run(problem, HORIZON, state)
    assert bool((state.queries == 2 * HORIZON).all())
    inside = state.best_delta + x
    assert bool(inside.ge(-1e-6).all() and inside.le(1 + 1e-6).all())
    for i, e in enumerate(exact):
        found = float(state.best_norm[i])
        if not math.isfinite(e):
            assert not math.isfinite(found)
            continue
        assert found >= e * (1 - 1e-5)  # never below the exact minimum
        assert found <= e * 1.02, (i, found, e)


def test_the_l1_run_is_sparse_where_the_subgradient_would_jitter() -> None:
    """The proximal step leaves the coordinates the flip does not need at exactly 0: the
    best flip moves no more coordinates than the exact one plus one (the greedy fills
    the coordinates in order and the last one partly), on every sample."""
    model, x = _linear(4, d=32, k=2)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    state = SearchState.empty(x)
    problem = Problem(model, box(0.0, 1.0), lp("l1"), Untargeted(), x, labels)
    lagrangian_run(problem, HORIZON, state)
    w = (model.weight[0] - model.weight[1]).detach().abs()
    for i, e in enumerate(_exact(model, x, labels)):
        if not math.isfinite(e):
            continue
        moved = int((state.best_delta[i].abs() > 1e-6).sum())
        # the exact flip's support: the fewest largest-|w| coordinates that can pay the margin
        z = model(x[i]).detach()
        need = float((z[int(labels[i])] - z[1 - int(labels[i])]).abs())
        sign = model.weight[int(labels[i])] - model.weight[1 - int(labels[i])]
        room = torch.where(sign.detach() > 0, x[i], 1 - x[i])
        gains = (w * room)[w.argsort(descending=True)].cumsum(0)
        support = int((gains < need).sum()) + 1
        assert moved <= support + 1, (i, moved, support)


@pytest.mark.parametrize(("seed", "share"), [(2, 0.0), (3, 0.0), (2, 0.15), (3, 0.15), (2, 0.3)])
def test_the_whole_l1_search_reaches_the_exact_flip_within_budget(seed: int, share: float) -> None:
    """Four classes (the union of half-spaces): the search with and without an L1
    Lagrangian run (0.15: the default) lands within 2 % of the exact minimum, never below."""
    model, x = _linear(seed)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    exact = _exact(model, x, labels)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    config = GradientConfig(lagrangian_l1=share)
    problem = Problem(model, box(0.0, 1.0), lp("l1"), Untargeted(), x, labels)
    state = gradient_search(problem, 1000, config, streams, 4)
    assert bool((state.queries <= 1000).all())
    for i, e in enumerate(exact):
        found = float(state.best_norm[i])
        if math.isfinite(e):
            assert e * (1 - 1e-5) <= found <= e * 1.02, (i, found, e)


def test_from_a_far_flip_the_l1_run_walks_the_boundary_to_the_exact_one() -> None:
    """Warm start (as the search starts it on L1): from a flip 2 to 100 times as far as
    needed, with every coordinate moved, the run ends within 2 % of the exact minimum."""
    model, x = _linear(6, k=2)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    exact = _exact(model, x, labels)
    w = (model.weight[1] - model.weight[0]).detach()
    toward = torch.where(labels.unsqueeze(1) == 0, w, -w)  # raises the other class's score
    far = (torch.where(toward > 0, 1 - x, -x) * 0.999).clone()  # every coordinate, downhill
    with torch.no_grad():
        assert bool((model(x + far).argmax(dim=1) != labels).all())  # it is a flip
    state = SearchState.empty(x)
    problem = Problem(model, box(0.0, 1.0), lp("l1"), Untargeted(), x, labels)
    lagrangian_run(problem, 400, state, start=far)
    for i, e in enumerate(exact):
        found = float(state.best_norm[i])
        assert float(far[i].abs().sum()) > 1.5 * e  # the start was far from the minimum
        assert e * (1 - 1e-5) <= found <= e * 1.02, (i, found, e)


def test_the_l1_run_goes_after_the_probes_from_the_best_flip() -> None:
    legs = [("first", 40), ("probe", 10), ("probe", 10), ("probe", 0), ("refine", 30)]
    assert lagrangian_slot(1.0, legs) == (2, True)
    assert lagrangian_slot(2.0, legs) == (0, False)
    assert lagrangian_slot(2.0, [("first", 0), ("probe", 5)]) == (1, False)
    assert lagrangian_slot(1.0, [("refine", 5)]) == (-1, True)


def test_the_lagrangian_share_follows_the_distance() -> None:
    config = GradientConfig(lagrangian=0.3, lagrangian_l1=0.2, short_steps=0)  # no short plan
    assert lagrangian_steps(100, 2.0, config) == 30
    assert lagrangian_steps(100, 1.0, config) == 20
    assert lagrangian_steps(100, math.inf, config) == lagrangian_steps(100, 0.0, config) == 0
    assert lagrangian_steps(30, 1.0, config) == 0  # 6 steps: too short to be worth it


def test_the_run_has_a_constraint_to_follow_with_two_classes() -> None:
    """Two classes (L2, no box in reach): the constraint must not be the margin over
    itself (±1 everywhere); the run reaches the closed form |z_0 − z_1| / ‖w_0 − w_1‖."""
    model, x = _linear(5, k=2)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
        z = model(x)
    w = (model.weight[0] - model.weight[1]).detach().norm()
    exact = ((z[:, 0] - z[:, 1]).abs() / w).tolist()
    state = SearchState.empty(x)
    problem = Problem(model, box(-1e3, 1e3), lp("l2"), Untargeted(), x, labels)
    lagrangian_run(problem, HORIZON, state)
    for i, e in enumerate(exact):
        found = float(state.best_norm[i])
        assert e * (1 - 1e-5) <= found <= e * 1.05, (i, found, e)  # as on more classes


def test_a_short_run_from_the_clean_input_decays_at_the_horizon_rate() -> None:
    """From the clean input the step size falls at the same rate per step whatever the
    run's length (a run of ``n`` steps reaches ``LR_REDUCTION ** (n / HORIZON)`` of its
    first before its tail); warm-started, or from :data:`HORIZON` steps on, by
    ``LR_REDUCTION`` over the whole run."""
    assert decay(HORIZON // 2, clean=True) == pytest.approx(LR_REDUCTION**0.5)
    assert decay(HORIZON // 2, clean=True) ** 2 == pytest.approx(decay(HORIZON, clean=True))
    assert decay(2 * HORIZON, clean=True) == decay(40, clean=False) == LR_REDUCTION


@pytest.mark.parametrize("p", ["l2", "l1"])
def test_the_whole_search_polishes_what_a_short_lagrangian_run_leaves(p: str) -> None:
    """Two classes, 1000 passes: the Lagrangian run (from the clean input on L2, warm on L1)
    explores with larger steps than the whole decay would leave, and the refinements after
    it reach the closed-form minimum (L2 |z_0 − z_1| / ‖w_0 − w_1‖ with the box out of reach,
    L1 the fractional knapsack in [0, 1])."""
    model, x = _linear(6, k=2)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
        z = model(x)
    if p == "l2":
        space = box(-1e3, 1e3)
        w = (model.weight[0] - model.weight[1]).detach().norm()
        exact = ((z[:, 0] - z[:, 1]).abs() / w).tolist()
    else:
        space = box(0.0, 1.0)
        exact = _exact(model, x, labels)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    problem = Problem(model, space, lp(p), Untargeted(), x, labels)
    state = gradient_search(problem, 1000, GradientConfig(), streams, 2)
    assert bool((state.queries <= 1000).all())
    for i, e in enumerate(exact):
        found = float(state.best_norm[i])
        if not math.isfinite(e):
            assert not math.isfinite(found)
            continue
        assert e * (1 - 1e-5) <= found <= e * 1.01, (i, found, e)
