"""The L1 polish (:mod:`mmargin.engine.polish`) against oracles: its knapsack against a
linear program (HiGHS), the polish of a dense flip of a linear model against the closed-form
minimal L1 flip toward that class, and on a ReLU network: never a worse or unverified flip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from engine_fakes import copy_state, knapsack_flip, linear_nearest, random_linear, relu_flips
from scipy.optimize import linprog

from mmargin.distances import lp
from mmargin.engine.lagrangian import l1_weights
from mmargin.engine.polish import POLISH_MIN_STEPS, PREFIX, knapsack, polish_run, shrink
from mmargin.engine.problem import Problem
from mmargin.engine.state import SearchState
from mmargin.goals import Untargeted
from mmargin.spaces import box


def _lp_knapsack(room: np.ndarray, grad: np.ndarray, weights: np.ndarray, need: float) -> float:
    """min Σ wᵢ aᵢ s.t. Σ |gᵢ| aᵢ ≥ need, 0 ≤ aᵢ ≤ roomᵢ (HiGHS); inf if infeasible."""
    bounds = list(zip(np.zeros_like(room), room, strict=True))
    got = linprog(weights, A_ub=-np.abs(grad)[None, :], b_ub=[-need], bounds=bounds,
                  method="highs")  # fmt: skip
    return float(got.fun) if got.status == 0 else math.inf


@pytest.mark.parametrize("seed", range(6))
def test_the_knapsack_is_the_linear_programs_minimum(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    d = 12
    grad = torch.randn(3, d, generator=gen, dtype=torch.float64)
    grad[:, :2] = 0.0  # coordinates without gain never move
    room = torch.rand(3, d, generator=gen, dtype=torch.float64)
    weights = 0.5 + torch.rand(1, d, generator=gen, dtype=torch.float64)
    total = (grad.abs() * room).sum(dim=1)
    need = total * torch.tensor([0.05, 0.6, 0.999], dtype=torch.float64)
    delta = knapsack(room, grad, weights, need)
    for i in range(3):
        exact = _lp_knapsack(room[i].numpy(), grad[i].numpy(), weights[0].numpy(),
                             float(need[i]))  # fmt: skip
        cost = float((weights[0] * delta[i].abs()).sum())
        assert cost == pytest.approx(exact, rel=1e-9, abs=1e-12)
        assert float(-(grad[i] * delta[i]).sum()) == pytest.approx(float(need[i]), rel=1e-9)
        assert bool((delta[i].abs() <= room[i] + 1e-12).all())
        assert bool((delta[i] * grad[i] <= 0).all())  # always against the gradient


def test_the_knapsack_of_an_unreachable_or_met_need() -> None:
    grad = torch.tensor([[1.0, -2.0], [1.0, -2.0]])
    room = torch.tensor([[0.5, 0.25], [0.5, 0.25]])
    delta = knapsack(room, grad, torch.ones(1, 2), torch.tensor([10.0, -1.0]))
    assert delta[0].tolist() == [-0.5, 0.25]  # all the room, short of the need
    assert delta[1].tolist() == [0.0, 0.0]


def _toward_exact(model: torch.nn.Linear, x: torch.Tensor, label: int, j: int) -> float:
    """The closed-form smallest L1 flip in [0, 1] of a linear model toward class ``j``."""
    w, b = model.weight.detach().double(), model.bias.detach().double()
    a = w[label] - w[j]
    need = float((w @ x.double() + b)[label] - (w @ x.double() + b)[j])
    room = torch.where(a > 0, x.double(), 1 - x.double())
    return _lp_knapsack(room.numpy(), a.numpy(), np.ones(len(a)), need)


def _ranked_whole(room: torch.Tensor, grad: torch.Tensor, weights: torch.Tensor,
                  need: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """The knapsack with every coordinate of every row ranked (one full sort)."""
    gain = grad.abs() * room
    order = (grad.abs() / weights).argsort(dim=1, descending=True)
    sorted_gain = gain.gather(1, order)
    before = sorted_gain.cumsum(dim=1) - sorted_gain
    want = need.clamp(min=0).unsqueeze(1)
    share = ((want - before) / sorted_gain.clamp(min=1e-30)).clamp(0.0, 1.0)
    share = torch.where(sorted_gain > 0, share, torch.zeros_like(share))
    return -grad.sign() * (torch.zeros_like(share).scatter_(1, order, share) * room)


@pytest.mark.parametrize("seed", range(4))
def test_the_partial_ranking_gives_the_whole_rankings_knapsack(seed: int) -> None:
    """Rows whose need the :data:`PREFIX` best coordinates meet, rows that need more of
    them, rows that cannot reach it and rows that need nothing, in one batch: bit for bit
    the knapsack of a full ranking, and each row the same alone as in the batch."""
    gen = torch.Generator().manual_seed(seed)
    d = 4 * PREFIX + 17
    grad = torch.randn(8, d, generator=gen)
    grad[:, :5] = 0.0
    room = torch.rand(8, d, generator=gen)
    room[:, 5:9] = 0.0  # at the bound: gain 0 whatever the ratio
    weights = 0.5 + torch.rand(1, d, generator=gen)
    total = (grad.abs() * room).sum(dim=1)
    share = torch.tensor([0.01, 0.05, 0.3, 0.6, 0.95, 1.0, 2.0, -1.0])  # 2.0: unreachable
    need = total * share
    got = knapsack(room, grad, weights, need)
    assert torch.equal(got, _ranked_whole(room, grad, weights, need))
    for i in range(8):
        alone = knapsack(room[i : i + 1], grad[i : i + 1], weights, need[i : i + 1])
        assert torch.equal(alone, got[i : i + 1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_polish_of_a_dense_flip_reaches_the_closed_form_minimum(seed: int) -> None:
    """A dense flip toward class ``j`` (the whole gradient direction, 30 % past the boundary)
    polished for a few steps lands within 0.3 % above the closed-form minimum toward ``j``,
    never below it, verified by the model."""
    model, x = random_linear(seed, d=20, k=4, n=6)
    model = model.double()
    x = x.double()
    with torch.no_grad():
        scores = model(x)
    labels = scores.argmax(dim=1)
    target = scores.clone().scatter_(1, labels[:, None], -math.inf).argmax(dim=1)
    w = model.weight.detach()
    a = w[labels] - w[target]  # (n, d): the margin toward the target falls along −a
    margin = scores.gather(1, labels[:, None]) - scores.gather(1, target[:, None])
    dense = -a * (1.3 * margin / (a * a).sum(dim=1, keepdim=True))
    space, distance = box(0.0, 1.0), lp("l1")
    dense = space.project(x, dense)
    state = SearchState.empty(x)
    with torch.no_grad():
        flipped = model(x + dense).argmax(dim=1) == target
    assert bool(flipped.all())  # the start is a flip of class j
    state.record(torch.arange(len(x)), distance.norm(dense), dense, model(x + dense).detach())
    start = state.best_norm.clone()
    problem = Problem(model, space, distance, Untargeted(), x, labels)
    polish_run(problem, 8, state, l1_weights(distance, x))
    for i in range(len(x)):
        exact = _toward_exact(model, x[i], int(labels[i]), int(target[i]))
        found = float(state.best_norm[i])
        assert exact * (1 - 1e-9) <= found <= exact * 1.003 < float(start[i])
        with torch.no_grad():
            assert int(model(x[i] + state.best_delta[i]).argmax()) != int(labels[i])
    assert bool((state.queries == 16).all())  # 8 steps, 2 passes each


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_flip_at_its_linearisations_minimum_leaves_the_polish_with_its_steps(seed: int) -> None:
    """A flip of a linear model 0.02 % past its closed-form minimum toward its class is a
    fixed point of the polish's linearisation (the knapsack flip there is within the
    overshoot of it): the polish spends only POLISH_MIN_STEPS of its 16 steps (the
    bisection and one linearisation) and leaves the rest unspent, its flip never worse; the
    same flip 0.5 % or 30 % past the boundary is polished for all 16 steps down to the
    minimum."""
    model, x, labels, target = linear_nearest(seed, d=20, k=4, n=6)
    space, distance = box(0.0, 1.0), lp("l1")
    problem = Problem(model, space, distance, Untargeted(), x, labels)
    for past, steps in ((1.0002, POLISH_MIN_STEPS), (1.005, 16), (1.3, 16)):
        state = SearchState.empty(x)
        for i in range(len(x)):
            d = knapsack_flip(model, x[i], int(labels[i]), int(target[i]), past)
            with torch.no_grad():
                got = model(x[i : i + 1] + d)
            assert int(got.argmax()) == int(target[i])
            state.record(torch.tensor([i]), distance.norm(d), d, got)
        start = state.best_norm.clone()
        polish_run(problem, 16, state, l1_weights(distance, x), lengths=torch.full_like(labels, 16))
        assert state.queries.tolist() == [2 * steps] * len(x)
        assert bool((state.best_norm <= start).all())
        for i in range(len(x)):
            exact = _toward_exact(model, x[i], int(labels[i]), int(target[i]))
            assert exact * (1 - 1e-9) <= float(state.best_norm[i]) <= exact * 1.003


def test_the_polish_never_records_a_worse_or_unverified_flip() -> None:
    """On a ReLU network (where linearisations miss), every recorded flip is a verified
    flip no larger than the one before."""
    gen = torch.Generator().manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = 0.2 + 0.6 * torch.rand(32, 10, generator=gen)
    with torch.no_grad():
        labels = net(x).argmax(dim=1)
    space, distance = box(0.0, 1.0), lp("l1")
    state = SearchState.empty(x)
    start = space.project(x, torch.randn(32, 10, generator=gen))
    with torch.no_grad():
        scores = net(x + start)
    flip = scores.argmax(dim=1) != labels
    rows = flip.nonzero().squeeze(1)
    state.record(rows, distance.norm(start[rows]), start[rows], scores[rows])
    before = state.best_norm.clone()
    problem = Problem(net, space, distance, Untargeted(), x, labels)
    polish_run(problem, 12, state, l1_weights(distance, x))
    assert bool((state.best_norm <= before).all())
    assert bool((state.best_norm[rows] < before[rows]).any())  # it does improve some
    with torch.no_grad():
        now = net(x[rows] + state.best_delta[rows]).argmax(dim=1)
    assert bool((now != labels[rows]).all())
    assert bool((state.queries[~flip] == 0).all())  # samples without a flip are left alone


def test_only_the_samples_asked_for_are_polished_and_short_budgets_run_nothing() -> None:
    """``only`` limits the polish to its samples; fewer than POLISH_MIN_STEPS steps (the
    bisection and one linearisation) run nothing at all."""
    model, x = random_linear(2, d=12, k=3, n=4)
    with torch.no_grad():
        scores = model(x)
    labels = scores.argmax(dim=1)
    space, distance = box(0.0, 1.0), lp("l1")
    far = space.project(x, -torch.sign(model.weight.detach()[labels]) * 0.9)
    with torch.no_grad():
        flipped = model(x + far).argmax(dim=1) != labels
    assert bool(flipped.all())
    only = torch.tensor([True, False, True, False])
    for steps, touched in ((POLISH_MIN_STEPS - 1, torch.zeros(4, dtype=torch.bool)),
                           (POLISH_MIN_STEPS + 2, only)):  # fmt: skip
        state = SearchState.empty(x)
        state.record(torch.arange(4), distance.norm(far), far, model(x + far).detach())
        problem = Problem(model, space, distance, Untargeted(), x, labels)
        polish_run(problem, steps, state, l1_weights(distance, x), only=only)
        assert (state.queries > 0).tolist() == touched.tolist()
        assert bool((state.queries[touched] == 2 * steps).all())
        assert bool((state.best_norm[touched] < distance.norm(far)[touched]).all())


def test_the_shrink_bisects_the_scale_of_a_flip_to_the_boundary() -> None:
    """On a linear model the flip ``s·δ`` starts at the closed-form scale where the margin
    toward the flip's class is 0: the bisection's scale is within ``2**-passes`` above it,
    still a flip; a start that is no flip at any smaller scale keeps scale 1 (and itself)."""
    model, x = random_linear(4, d=10, k=3, n=5)
    with torch.no_grad():
        scores = model(x)
    labels = scores.argmax(dim=1)
    other = scores.clone().scatter_(1, labels[:, None], -math.inf).argmax(dim=1)
    w = model.weight.detach()
    a = w[labels] - w[other]
    margin = (scores.gather(1, labels[:, None]) - scores.gather(1, other[:, None])).squeeze(1)
    direction = -a / a.norm(dim=1, keepdim=True) * 0.05
    space = box(-math.inf, math.inf)
    reach = margin / (-(a * direction).sum(dim=1))  # the scale that reaches the boundary
    delta = direction * (3 * reach)[:, None]  # a flip three times past it
    problem = Problem(model, space, lp("l1"), Untargeted(), x, labels)
    out, scale, got = shrink(problem, delta, 8)
    exact = 1 / 3
    assert bool(((scale >= exact - 1e-6) & (scale <= exact + 2**-8)).all())
    assert torch.allclose(out, delta * scale[:, None])
    assert bool((got.argmax(dim=1) != labels).all())
    # at scale 1 only (no smaller scale flips): the flip is returned as it is
    edge = direction * (reach * (1 + 1e-4))[:, None]
    out, scale, _ = shrink(problem, edge, 4)
    assert bool((scale == 1).all()) and torch.allclose(out, edge, atol=1e-6)


def test_samples_of_different_lengths_share_one_polish_as_if_each_ran_alone() -> None:
    """``polish_run(lengths=...)``, the leftover's one batched polish: each sample spends
    exactly its own steps and ends where a polish of exactly that length, on it alone, ends;
    samples outside ``only`` or with fewer than POLISH_MIN_STEPS steps are untouched. The
    lengths matter: run for the longest length, some samples end elsewhere."""
    net, x, labels, start = relu_flips(5, 40)
    space, distance = box(0.0, 1.0), lp("l1")
    weights = l1_weights(distance, x)
    longest = 16
    lengths = torch.tensor([POLISH_MIN_STEPS, longest, 5, 9, longest, 12, POLISH_MIN_STEPS - 1,
                            7, 6, 11] * 4)  # fmt: skip
    only = torch.ones(len(x), dtype=torch.bool)
    only[4] = False
    state = copy_state(start, slice(None))
    problem = Problem(net, space, distance, Untargeted(), x, labels)
    polish_run(problem, longest, state, weights, only=only, lengths=lengths)
    flip = torch.isfinite(start.best_norm)
    touched = flip & only & (lengths >= POLISH_MIN_STEPS)
    assert int(touched.sum()) >= 20
    want = [2 * int(m) if t else 0 for m, t in zip(lengths, touched, strict=True)]
    assert state.queries.tolist() == want
    assert torch.equal(state.best_norm[~touched], start.best_norm[~touched])
    differs = 0
    for i in touched.nonzero().squeeze(1).tolist():
        row = slice(i, i + 1)
        alone = copy_state(start, row)
        problem = Problem(net, space, distance, Untargeted(), x[row], labels[row])
        polish_run(problem, int(lengths[i]), alone, weights)
        assert int(alone.queries[0]) == int(state.queries[i])
        assert float(state.best_norm[i]) == pytest.approx(float(alone.best_norm[0]), rel=1e-12)
        assert torch.allclose(state.best_delta[i], alone.best_delta[0], rtol=0, atol=1e-12)
        full = copy_state(start, row)
        problem = Problem(net, space, distance, Untargeted(), x[row], labels[row])
        polish_run(problem, longest, full, weights)
        differs += float(full.best_norm[0]) < float(alone.best_norm[0]) * (1 - 1e-9)
    assert differs >= 3  # a longer polish than its own would have moved these samples
