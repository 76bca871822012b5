"""Probes whose class is out of first-order reach are not run
(:func:`mmargin.engine.legstop.out_of_reach`, :func:`mmargin.engine.gradient.skip_allowance`)."""

from __future__ import annotations

import math

import pytest
import torch
from engine_fakes import closed_form_flips, far_box, random_linear

import mmargin.engine.gradient as gradient
from mmargin.distances import lp
from mmargin.engine.gradient import gradient_search, skip_allowance
from mmargin.engine.legstop import out_of_reach
from mmargin.engine.problem import Problem
from mmargin.engine.reach import rank_reach
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Untargeted

INF = math.inf
DUAL = {"l2": 2.0, "linf": 1.0, "l1": INF}


def _state(best: list[float], cls: list[int]) -> SearchState:
    state = SearchState.empty(torch.zeros(len(best), 3))
    state.best_norm = torch.tensor(best)
    state.best_class = torch.tensor(cls)
    return state


def test_out_of_reach_compares_with_the_best_and_the_winning_class() -> None:
    ranked = torch.tensor([[1, 2, 3]] * 5)
    reach = torch.tensor([[1.0, 2.0, 4.0]] * 5)
    # 0: class 3 at 4 > 1.5 x max(1, 1); 1: class 2 at 2 <= 1.5 x 2 (its best is 2);
    # 2: the winning class 2 looks as far as class 3 (4 <= 1.5 x 2... no: 4 > 3) -> skipped;
    # 3: no flip yet; 4: the best flip's class 3 looks 4 away: first-order overshoots here
    state = _state([1.0, 2.0, 1.0, INF, 1.0], [1, 1, 2, -1, 3])
    against = torch.tensor([3, 2, 3, 3, 2])
    assert out_of_reach(ranked, reach, against, state, 1.5).tolist() == [
        True, False, True, False, False,
    ]  # fmt: skip
    assert not bool(out_of_reach(ranked, reach, against, state, 0.0).any())


def test_first_order_reach_of_a_linear_model_is_its_closed_form() -> None:
    model, x = random_linear(3, 12, 6, 10)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    for norm, dual in DUAL.items():
        ranked, reach = rank_reach(Problem(model, far_box(), lp(norm), Untargeted(), x, labels), 5)
        exact = closed_form_flips(model, x, labels, dual).gather(1, ranked)
        assert torch.allclose(reach, exact, rtol=1e-4)
        assert bool((reach[:, 1:] >= reach[:, :-1]).all())  # nearest first


def test_the_skip_is_on_for_linf_only_and_switches_off() -> None:
    assert skip_allowance(INF, GradientConfig()) == GradientConfig().hopeless > 0
    assert skip_allowance(INF, GradientConfig(skip_far_probes=False)) == 0.0
    assert skip_allowance(INF, GradientConfig(hopeless=0.0)) == 0.0
    assert skip_allowance(2.0, GradientConfig()) == skip_allowance(1.0, GradientConfig()) == 0.0


@pytest.mark.parametrize("seed", [11, 12])
def test_a_skipped_probe_could_not_have_won_on_a_linear_model(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every probe the rule skips drives toward a class whose exact distance is above the
    best flip already held (so above the result), and the search with the rule ends on the
    same flips as one that runs every probe, within its budget and with fewer passes."""
    norm = "linf"
    model, x = random_linear(seed, 12, 8, 16)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    skipped: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    rule = gradient.out_of_reach

    def spy(ranked: torch.Tensor, reach: torch.Tensor, against: torch.Tensor,
            state: SearchState, hopeless: float) -> torch.Tensor:  # fmt: skip
        out = rule(ranked, reach, against, state, hopeless)
        skipped.append((out.clone(), against.clone(), state.best_norm.clone()))
        return out

    def search(config: GradientConfig) -> SearchState:
        streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
        problem = Problem(model, far_box(), lp(norm), Untargeted(), x, labels)
        return gradient_search(problem, 1000, config, streams, 8)

    monkeypatch.setattr(gradient, "out_of_reach", spy)
    # the skips alone: without the leftover nor the stretch of the last refinement (.stretch)
    alone = GradientConfig(unspent_lr=0.0, unspent_polish=False, stretch_refine=False)
    state = search(alone)
    # the leftover spends what a skip leaves it, after the planned runs: never worse
    leftover = search(GradientConfig(stretch_refine=False))
    assert bool((leftover.queries <= 1000).all())
    assert bool((leftover.best_norm <= state.best_norm).all())
    exact = closed_form_flips(model, x, labels, DUAL[norm])
    # the last refinement takes it (stretch_refine, every sample: on a linear model the
    # default gate, .stretch.far_below, stretches none): another run, on the closed form too
    stretched = search(GradientConfig(stretch_refine=True, stretch_below=0.0))
    assert bool((stretched.queries <= 1000).all())
    nearest = exact.min(dim=1).values
    assert bool((stretched.best_norm >= nearest * (1 - 1e-5)).all())
    assert bool((stretched.best_norm <= nearest * 1.01).all())
    assert sum(int(s.sum()) for s, _, _ in skipped) > 0
    for skip, against, best in skipped:
        into = exact.gather(1, against.unsqueeze(1)).squeeze(1)
        assert bool((into[skip] > best[skip]).all())
        assert bool((into[skip] > state.best_norm[skip]).all())
    monkeypatch.setattr(gradient, "out_of_reach", lambda *a: torch.zeros(len(x), dtype=torch.bool))
    every = search(alone)
    assert bool((state.queries <= 1000).all())
    assert int(state.queries.sum()) < int(every.queries.sum())
    assert torch.equal(state.best_norm, every.best_norm)
