"""The tails the second Lagrangian run of a long L2 search forks off
(:func:`mmargin.engine.lagrangian_plan.second_forks`, ``lagrangian_run(forks=...)``): where
they go in the plan, that the run itself goes on as if it had not forked, that their steps
are counted, and that the search stays in its budget when the probes spend every step."""

from __future__ import annotations

import torch
from engine_fakes import exact_flip, linear_search, random_linear

from mmargin.distances import lp
from mmargin.engine.lagrangian import TAIL, lagrangian_run
from mmargin.engine.lagrangian_plan import second_forks, second_steps
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState
from mmargin.goals import Untargeted
from mmargin.spaces import box


def test_the_forks_sit_before_the_runs_last_tails() -> None:
    second = second_steps(495, 2.0, GradientConfig())
    assert second_forks(second, GradientConfig(second_forks=0)) == ((), 0)
    assert second_forks(second, GradientConfig()) == ((), 0)  # off by default
    one = GradientConfig(second_forks=1)
    assert second_forks(second, one) == ((second - int(second * TAIL) - 1,),
                                         int(second * TAIL))  # fmt: skip
    forks, tail = second_forks(second, GradientConfig(second_forks=2))
    assert tail == int(second * TAIL)
    assert forks == (second - tail - 1, second - 2 * tail - 2)
    assert second_forks(0, GradientConfig(second_forks=2)) == ((), 0)  # the short plan: no run


def _net() -> torch.nn.Module:
    torch.manual_seed(11)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(216, 6)
    ).eval()


def test_a_fork_adds_its_tails_flips_and_steps_and_leaves_the_run_alone() -> None:
    """The run with forks sees every flip the run without them sees (it goes on from where
    it forked, bit for bit) plus its tails' own: never a larger best flip, somewhere a smaller
    one, and ``2 · tail`` more passes per fork and sample."""
    net = _net()
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    labels = net(x).argmax(dim=1)
    problem = Problem(net, box(0.0, 1.0), lp("l2"), Untargeted(), x, labels)

    def run(forks: tuple[int, ...], tail: int) -> SearchState:
        state = SearchState.empty(x)
        lagrangian_run(problem, 60, state, lr_init=0.5, hasten=(8, 0.3), forks=forks,
                       fork_steps=tail)  # fmt: skip
        return state

    plain = run((), 0)
    forked = run((23, 35), 12)
    assert torch.equal(forked.queries, plain.queries + 2 * 2 * 12)
    assert bool((forked.best_norm <= plain.best_norm).all())
    assert bool((forked.best_norm < plain.best_norm * 0.999).any())


def test_the_search_with_forks_stays_in_budget_when_the_probes_run_to_their_end() -> None:
    """Probes that never leave early (``hopeless`` 0) spend every planned step: the forks'
    steps then come out of the last refinement, per sample, and no sample passes 1000."""
    model, x = random_linear(5, 24, 6, 8)
    with torch.no_grad():
        exact = exact_flip(model, x, model(x).argmax(dim=1))
    config = GradientConfig(second_forks=2, hopeless=0.0, unspent_lr=0.0)
    state = linear_search(model, x, config)
    assert bool((state.queries <= 1000).all()), state.queries.tolist()
    assert bool((state.queries >= 990).all())
    assert bool((state.best_norm >= exact * (1 - 1e-5)).all())
