"""How the gradient search spends its passes (:mod:`mmargin.engine.passes`) and the
Lagrangian run (:mod:`mmargin.engine.lagrangian`) against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from engine_fakes import random_linear

from mmargin.distances import lp
from mmargin.engine.gradient import gradient_search
from mmargin.engine.lagrangian import HORIZON, lagrangian_run
from mmargin.engine.passes import legs, next_class, probe_classes, refine_classes
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Untargeted
from mmargin.spaces import box


@pytest.mark.parametrize("steps", [2, 9, 50, 494, 1000])
@pytest.mark.parametrize("restarts", [1, 2, 5])
def test_legs_never_exceed_the_steps_and_keep_the_order(steps: int, restarts: int) -> None:
    plan = legs(steps, restarts, 3, 0.4, 0.1)
    assert sum(leg.steps for leg in plan) <= steps
    kinds = [leg.kind for leg in plan]
    assert kinds[0] == "first" and kinds.count("refine") == restarts
    assert kinds == sorted(kinds, key=["first", "probe", "refine"].index)
    probes = [leg for leg in plan if leg.kind == "probe"]
    assert all(leg.steps >= 8 for leg in probes)  # too short to anneal: dropped
    assert [leg.index for leg in probes] == list(range(len(probes)))


def test_probes_skip_the_class_already_found_and_refinements_fall_back() -> None:
    ranked = torch.tensor([[3, 1, 2, 4], [5, 6, 7, 8], [2, 9, 1, 0]])
    found = torch.tensor([1, -1, 2])
    assert probe_classes(ranked, found, 3).tolist() == [[3, 2, 4], [5, 6, 7], [9, 1, 0]]
    labels = torch.tensor([0, 0, 2])
    assert refine_classes(found, ranked, labels).tolist() == [1, 5, 2]


def test_the_next_class_is_the_one_after_the_probes_or_none() -> None:
    ranked = torch.tensor([[3, 1, 2, 4, 6], [5, 6, 7, 8, 9], [2, 9, 1, 0, 4], [3, 1, 2, 4, 6]])
    found = torch.tensor([1, -1, 2, 6])
    # after 3 probes: [3, 2, 4] -> 6; [5, 6, 7] -> 8; [9, 1, 0] -> 4; [3, 1, 2] -> 4
    assert next_class(ranked, found, 3).tolist() == [6, 8, 4, 4]
    # every ranked class other than the found one probed: none left
    assert next_class(ranked, found, 4).tolist() == [-1, 9, -1, -1]
    assert next_class(ranked, found, 0).tolist() == [3, 5, 9, 3]


def _linear(seed: int, d: int = 12, k: int = 4) -> tuple[torch.nn.Linear, torch.Tensor]:
    return random_linear(seed, d, k, 6)


def _closed_form(model: torch.nn.Linear, x: torch.Tensor, label: int) -> float:
    """Unboxed L2 distance to the nearest linear boundary (the box is not reached here
    when the margins stay below 0.3, checked by the caller)."""
    w, b = model.weight.detach(), model.bias.detach()
    z = w @ x + b
    return min(float((z[label] - z[j]) / (w[label] - w[j]).norm())
               for j in range(len(z)) if j != label)  # fmt: skip


def test_the_lagrangian_run_finds_flips_no_smaller_than_the_closed_form() -> None:
    model, x = _linear(3)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    state = SearchState.empty(x)
    space, distance = box(-10.0, 10.0), lp("l2")
    problem = Problem(model, space, distance, Untargeted(), x, labels)
    lagrangian_run(problem, HORIZON, state)
    assert bool((state.queries == 2 * HORIZON).all())
    for i in range(len(x)):
        exact = _closed_form(model, x[i], int(labels[i]))
        found = float(state.best_norm[i])
        assert math.isfinite(found) and found >= exact * (1 - 1e-5)
        assert found <= exact * 1.05  # a Lagrangian run alone converges close to it


def test_the_whole_search_reaches_the_closed_form_and_stays_in_budget() -> None:
    model, x = _linear(5)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    space, distance = box(-10.0, 10.0), lp("l2")
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    problem = Problem(model, space, distance, Untargeted(), x, labels)
    state = gradient_search(problem, 600, GradientConfig(), streams, 4)
    assert bool((state.queries <= 600).all())
    for i in range(len(x)):
        exact = _closed_form(model, x[i], int(labels[i]))
        assert exact * (1 - 1e-5) <= float(state.best_norm[i]) <= exact * 1.01
