"""The L2 Lagrangian run adds the norm's gradient by hand
(:func:`mmargin.engine.lagrangian.norm_gradient`) instead of taking it through a norm node
of the autograd graph: the same bits, checked against autograd itself and against the
run forced onto the autograd path."""

from __future__ import annotations

import pytest
import torch

import mmargin.engine.lagrangian as lagrangian
from mmargin.distances import lp
from mmargin.engine.lagrangian import lagrangian_run, norm_gradient
from mmargin.engine.problem import Problem
from mmargin.engine.state import SearchState
from mmargin.goals import Untargeted
from mmargin.spaces import box


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 30.0])
def test_norm_gradient_adds_up_to_autograds_bits(scale: float) -> None:
    gen = torch.Generator().manual_seed(3)
    delta = torch.randn(12, 2, 5, 5, generator=gen) * scale
    delta[2] = 0.0  # a zero row: autograd gives 0 there, not NaN
    delta[5, :, :2] = 0.0
    w = torch.randn(12, 2, 5, 5, generator=gen)

    def rest(d: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(d * w) * 3).flatten(1).sum(dim=1)

    d = delta.clone().requires_grad_(True)
    size = torch.linalg.vector_norm(d.flatten(1), 2.0, dim=1)
    (want,) = torch.autograd.grad((size + rest(d)).sum(), d)
    d = delta.clone().requires_grad_(True)
    (part,) = torch.autograd.grad(rest(d).sum(), d)
    norms = lp("l2").norm(delta)
    got = part + norm_gradient(delta, norms)
    assert torch.equal(got, want)
    assert torch.equal(torch.signbit(got), torch.signbit(want))
    assert torch.equal(norm_gradient(delta, norms)[2], torch.zeros_like(delta[2]))


def _net() -> torch.nn.Module:
    torch.manual_seed(5)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 5)
    ).eval()


@pytest.mark.parametrize("lengths", [False, True])
def test_l2_run_is_the_autograd_runs_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, lengths: bool
) -> None:
    net = _net()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    labels = net(x).argmax(dim=1)
    problem = Problem(net, box(0.0, 1.0), lp("l2"), Untargeted(), x, labels)
    own = torch.arange(10) % 3 * 7 + 20 if lengths else None

    def run() -> SearchState:
        state = SearchState.empty(x)
        lagrangian_run(problem, 40, state, lr_init=0.3, lengths=own)
        return state

    fast = run()
    monkeypatch.setattr(lagrangian, "plain_l2", lambda distance: False)  # the norm node
    slow = run()
    assert torch.isfinite(fast.best_norm).sum() >= 5  # the run found flips to compare
    assert torch.equal(fast.best_norm, slow.best_norm)
    assert torch.equal(fast.best_delta, slow.best_delta)
    assert torch.equal(fast.best_class, slow.best_class)
    assert torch.equal(fast.queries, slow.queries)
