"""The L1 exchange (:mod:`mmargin.engine.exchange`) against oracles: on a linear model it
reaches the closed-form minimal L1 flip from a flip on a wasteful support; on small ReLU
networks it never records a flip below the MILP-exact minimum, nor a worse or unverified
one, and it closes part of the gap the polish's fixed points leave; it never spends more
steps than a sample has, and a sample's result does not depend on its batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from engine_fakes import copy_state, knapsack_flip, linear_nearest, random_linear, relu_flips
from scipy.optimize import linprog

from mmargin.distances import lp
from mmargin.engine import exchange
from mmargin.engine.exchange import (
    COSTS,
    KINDS,
    RESERVE,
    ROUND,
    exchange_run,
    reserved_steps,
    rounds_paid,
)
from mmargin.engine.lagrangian import l1_weights
from mmargin.engine.polish import polish_run
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState
from mmargin.exact.milp import extract_relu_layers, relu_net_margin
from mmargin.goals import Untargeted
from mmargin.spaces import box


def _toward_exact(model: torch.nn.Linear, x: torch.Tensor, label: int, j: int) -> float:
    """The closed-form smallest L1 flip in [0, 1] of a linear model toward class ``j``
    (the fractional knapsack as a linear program, HiGHS)."""
    w, b = model.weight.detach().double(), model.bias.detach().double()
    a = (w[label] - w[j]).numpy()
    need = float((w @ x.double() + b)[label] - (w @ x.double() + b)[j])
    room = torch.where(torch.as_tensor(a) > 0, x.double(), 1 - x.double()).numpy()
    bounds = list(zip(np.zeros_like(room), room, strict=True))
    got = linprog(np.ones(len(a)), A_ub=-np.abs(a)[None, :], b_ub=[-need], bounds=bounds,
                  method="highs")  # fmt: skip
    return float(got.fun) if got.status == 0 else math.inf


def test_the_rounds_paid_and_the_reserve() -> None:
    total = np.cumsum(COSTS)
    lengths = torch.tensor([0, ROUND - 1, ROUND, int(total[1]) - 1, int(total[2]), RESERVE, 999])
    assert rounds_paid(lengths).tolist() == [0, 0, 1, 1, 3, len(KINDS), len(KINDS)]
    assert int(total[-1]) == RESERVE
    config = GradientConfig(exchange_reserve=True)
    assert reserved_steps(470, 1.0, config) == RESERVE  # 1000 passes, 10 classes
    assert reserved_steps(236, 1.0, config) == 0  # 500 passes: a refinement of 81 steps
    assert reserved_steps(470, 2.0, config) == reserved_steps(470, math.inf, config) == 0
    assert reserved_steps(470, 1.0, GradientConfig()) == 0  # off by default
    off = GradientConfig(exchange_reserve=True, unspent_polish=False)
    assert reserved_steps(470, 1.0, off) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wasteful_flip_of_a_linear_model_reaches_the_closed_form_minimum(seed: int) -> None:
    """The minimal flip toward the nearest class, plus the coordinate with the worst gain
    per unit moved across its whole room: exchanged, it lands within 0.5 % above the
    closed-form minimum toward that class, never below it, verified by the model."""
    model, x, labels, target = linear_nearest(seed, d=16, k=3, n=6)
    with torch.no_grad():
        scores = model(x)
    space, distance = box(0.0, 1.0), lp("l1")
    w = model.weight.detach()
    a = w[labels] - w[target]  # the margin toward the target falls along −a
    margin = (scores.gather(1, labels[:, None]) - scores.gather(1, target[:, None])).squeeze(1)
    dense = space.project(x, -a * (1.2 * margin / (a * a).sum(dim=1))[:, None])
    worst = a.abs().argmin(dim=1)
    rows = torch.arange(len(x))
    dense[rows, worst] = torch.where(a[rows, worst] > 0, -x[rows, worst], 1 - x[rows, worst])
    with torch.no_grad():
        got = model(x + dense)
    assert bool((got.argmax(dim=1) == target).all())  # the start is a flip of the target
    state = SearchState.empty(x)
    state.record(rows, distance.norm(dense), dense, got)
    start = state.best_norm.clone()
    exchange_run(Problem(model, space, distance, Untargeted(), x, labels), state,
                 l1_weights(distance, x), torch.full_like(labels, RESERVE))  # fmt: skip
    for i in range(len(x)):
        exact = _toward_exact(model, x[i], int(labels[i]), int(target[i]))
        assert exact * (1 - 1e-9) <= float(state.best_norm[i]) <= exact * 1.005
        assert float(state.best_norm[i]) < float(start[i])
        with torch.no_grad():
            assert int(model(x[i] + state.best_delta[i]).argmax()) != int(labels[i])
    # no ranking: the class round is skipped, the other three are paid and run
    assert state.queries.tolist() == [2 * sum(COSTS[:3])] * len(x)


@pytest.mark.parametrize("seed", [0, 2, 3])  # seed 1: every flip lands in the nearest class
def test_the_next_round_walks_from_the_clean_input_toward_its_own_class(seed: int) -> None:
    """Flips of a linear model in another class than the nearest one: the ``next`` round
    toward the nearest class (``untried``) lands within 0.5 % above that class's
    closed-form minimum, in that class; a sample whose ``untried`` is ``-1`` or its best
    flip's own class is left alone; a round costs ``ROUND`` steps."""
    model, x = random_linear(seed, d=16, k=4, n=32)
    model, x = model.double(), x.double()
    space, distance = box(0.0, 1.0), lp("l1")
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    costs = torch.tensor([[_toward_exact(model, x[i], int(labels[i]), j) if j != labels[i]
                           else math.inf for j in range(4)] for i in range(len(x))])  # fmt: skip
    near = costs.argmin(dim=1)
    state = SearchState.empty(x)
    for i in range(len(x)):  # a flip toward another class that lands outside the nearest
        for j in costs[i].argsort(descending=True).tolist():
            if j in (int(labels[i]), int(near[i])):
                continue
            d = knapsack_flip(model, x[i], int(labels[i]), j)
            with torch.no_grad():
                got = model(x[i : i + 1] + d)
            if int(got.argmax()) not in (int(labels[i]), int(near[i])):
                state.record(torch.tensor([i]), distance.norm(d), d, got)
                break
    found = torch.isfinite(state.best_norm)
    assert int(found.sum()) >= 4
    start = state.best_norm.clone()
    untried = near.clone()
    left = found.nonzero().squeeze(1)[:2]  # one without a class, one toward its own
    untried[left[0]], untried[left[1]] = -1, state.best_class[left[1]]
    exchange_run(Problem(model, space, distance, Untargeted(), x, labels), state,
                 l1_weights(distance, x), torch.full_like(labels, ROUND), kinds=("next",),
                 untried=untried)  # fmt: skip
    walked = found.clone()
    walked[left] = False
    assert state.queries.tolist() == (2 * ROUND * walked.long()).tolist()
    assert state.best_norm[left].tolist() == start[left].tolist()
    for i in walked.nonzero().squeeze(1).tolist():
        exact = float(costs[i, near[i]])
        assert exact * (1 - 1e-9) <= float(state.best_norm[i]) <= exact * 1.005
        assert int(state.best_class[i]) == int(near[i])


def test_on_relu_networks_never_below_the_milp_minimum_and_closer_to_it() -> None:
    """Polished flips of a small ReLU network (its fixed points), then exchanged with the
    search's ranking of the classes (every kind of round, ``keep`` too): every flip is
    verified, none is larger than before or below the exact minimum (MILP, HiGHS), some
    get closer to it, no sample spends more than its steps."""
    net, x, labels, start = relu_flips(7, 20)
    space, distance = box(0.0, 1.0), lp("l1")
    weights = l1_weights(distance, x)
    state = copy_state(start)
    polish_run(Problem(net, space, distance, Untargeted(), x, labels), 16, state, weights)
    polished = copy_state(state)
    with torch.no_grad():
        scores = net(x)
    ranked = scores.clone().scatter_(1, labels[:, None], -math.inf).argsort(dim=1, descending=True)
    ranked = ranked[:, :2]  # the two other classes, by score
    lengths = torch.tensor([RESERVE, ROUND, 2 * ROUND + 1, 0, RESERVE + ROUND] * 4)
    exchange_run(Problem(net, space, distance, Untargeted(), x, labels), state, weights, lengths,
                 ranked, kinds=(*KINDS, "keep"))  # fmt: skip
    spent = (state.queries - polished.queries) // 2
    assert bool((spent <= lengths).all())
    flips = torch.isfinite(polished.best_norm)
    assert bool((state.best_norm <= polished.best_norm).all())
    layers = extract_relu_layers(net)
    assert layers is not None
    closer = 0
    for i in flips.nonzero().squeeze(1).tolist():
        with torch.no_grad():
            assert int(net(x[i] + state.best_delta[i]).argmax()) != int(labels[i])
        exact = relu_net_margin(layers, x[i].numpy(), int(labels[i]), 1.0, lower=0.0,
                                upper=1.0)  # fmt: skip
        assert exact.optimal
        assert float(state.best_norm[i]) >= exact.margin * (1 - 1e-6)
        closer += float(state.best_norm[i]) < float(polished.best_norm[i]) * (1 - 1e-6)
    assert closer >= 3


def test_samples_of_different_lengths_share_one_exchange_as_if_each_ran_alone() -> None:
    """Each sample of one batched exchange ends where an exchange on it alone, with its own
    steps, ends; samples outside ``only`` or without a paid round are untouched."""
    net, x, labels, start = relu_flips(5, 20)
    space, distance = box(0.0, 1.0), lp("l1")
    weights = l1_weights(distance, x)
    ranked = torch.stack([(labels + 1) % 3, (labels + 2) % 3], dim=1)
    lengths = torch.tensor([RESERVE, ROUND - 1, ROUND, 2 * ROUND, 3 * ROUND + 3] * 4)
    only = torch.ones(len(x), dtype=torch.bool)
    only[2] = False
    state = copy_state(start)
    exchange_run(Problem(net, space, distance, Untargeted(), x, labels), state, weights, lengths,
                 ranked, only=only)  # fmt: skip
    untouched = ~only | (lengths < ROUND) | ~torch.isfinite(start.best_norm)
    assert bool((state.queries[untouched] == 0).all())
    for i in range(len(x)):
        row = slice(i, i + 1)
        alone = copy_state(start, row)
        if bool(only[i]):
            exchange_run(Problem(net, space, distance, Untargeted(), x[row], labels[row]), alone,
                         weights, lengths[row], ranked[row])  # fmt: skip
        assert int(alone.queries[0]) == int(state.queries[i])
        assert int(state.queries[i]) <= 2 * int(lengths[i])
        assert float(state.best_norm[i]) == pytest.approx(float(alone.best_norm[0]), rel=1e-12)


def test_every_round_in_one_batch_ends_as_one_walk_per_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rounds of all samples walk in one batch (a sample once per round it runs): bit
    for bit what one walk per round, run in the rounds' order, records; no sample spends
    more than its steps."""
    net, x, labels, start = relu_flips(2, 24)
    space, distance = box(0.0, 1.0), lp("l1")
    weights = l1_weights(distance, x)
    ranked = torch.stack([(labels + 1) % 3, (labels + 2) % 3], dim=1)
    lengths = torch.tensor([RESERVE + ROUND, ROUND, 2 * ROUND, 3 * ROUND + 1, RESERVE,
                            RESERVE + ROUND - 1] * 4)  # fmt: skip
    kinds = (*KINDS, "keep")

    def exchange_all(state: SearchState) -> None:
        exchange_run(Problem(net, space, distance, Untargeted(), x, labels), state, weights,
                     lengths, ranked, kinds=kinds)  # fmt: skip

    batched = copy_state(start)
    exchange_all(batched)
    walk = exchange._walk

    def one_by_one(problem: Problem, state: SearchState, walks: list, *rest: object) -> None:
        for w in walks:
            walk(problem, state, [w], *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(exchange, "_walk", one_by_one)
    single = copy_state(start)
    exchange_all(single)
    assert torch.equal(batched.best_norm, single.best_norm)
    assert torch.equal(batched.best_delta, single.best_delta)
    assert torch.equal(batched.best_class, single.best_class)
    assert torch.equal(batched.queries, single.queries)
    assert bool((batched.queries <= 2 * lengths).all())
    assert bool((batched.best_norm < start.best_norm).sum() >= 3)  # the rounds did find some
