"""A deterministic model's continuous flip that its verification pass rejects by float
rounding alone is pushed outward (:data:`mmargin.engine.probe.EDGE_GROWTH`), within the
sample's budget: a search that leaves its flip just past the goal's tolerance must not lose
it to the other batch's rounding (session 17: one of 100 evaluation-MLP samples at L∞ 1000
passes, whose scores moved by 5.7e-6 between one row and a batch of 99)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from mmargin.distances import lp
from mmargin.engine import probe
from mmargin.engine.driver import Candidate
from mmargin.goals import Untargeted, flip_tolerance
from mmargin.spaces import box

W = torch.tensor([[1.0, -0.5, 0.25, 0.0], [-1.0, 0.5, -0.25, 0.0]])


class Shifted(torch.nn.Module):
    """A linear two-class model whose class-0 score is raised by ``shift`` (the other
    batch's rounding, made large enough to test)."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ W.T
        z[:, 0] += self.shift
        return z


def _loss(x: torch.Tensor) -> torch.Tensor:
    z = x @ W.T
    return z[:, 0] - z[:, 1]


def _setup(budget: int, shift_tols: float) -> tuple[Any, Any, Any, dict[int, Candidate], float]:
    """Three samples of class 0, each with a candidate just past the tolerance (its loss
    ``-(tol + 1e-7)`` on the plain model) along a direction that lowers the loss."""
    x = torch.tensor([[0.6, 0.3, 0.5, 0.5], [0.7, 0.4, 0.4, 0.5], [0.65, 0.2, 0.6, 0.5]])
    direction = torch.tensor([-1.0, 0.5, -0.25, 0.0])
    clean = _loss(x)
    assert bool((clean > 0).all())
    slope = _loss(x + direction) - clean  # the loss is linear along the direction
    tol = float(flip_tolerance(x @ W.T).max())
    found = {}
    for i in range(len(x)):
        t = (-(tol + 1e-7) - clean[i]) / slope[i]
        adv = x[i] + t * direction
        assert float(_loss(adv[None])[0]) < -float(flip_tolerance(adv[None] @ W.T)[0])
        found[i] = Candidate(adversarial=adv, margin=float((adv - x[i]).norm()))
    run = SimpleNamespace(
        model=Shifted(shift_tols * tol), goal=Untargeted(), space=box(0.0, 1.0),
        distance=lp("l2"), spec=SimpleNamespace(budget=budget), extra={},
    )  # fmt: skip
    kind = SimpleNamespace(stack=torch.stack)
    batch = SimpleNamespace(inputs=x, labels=torch.zeros(3, dtype=torch.long), targets=None)
    return run, kind, batch, found, tol


def test_a_flip_the_rounding_rejects_is_pushed_out_to_the_first_scale_that_holds() -> None:
    run, kind, batch, found, tol = _setup(1000, 2.0)
    before = {i: (c.adversarial.clone(), c.margin) for i, c in found.items()}
    queries = [990, 990, 999]
    out = probe.verify(run, kind, batch, found, [0, 1, 2], queries)
    for i in (0, 1):
        assert out[i].ok and out[i].label == 1
        # the oracle: the smallest scale of EDGE_GROWTH at which the shifted loss clears
        # the tolerance, in closed form along the linear path from the clean input
        x = batch.inputs[i]
        adv0, margin0 = before[i]
        want = next(
            g for g in probe.EDGE_GROWTH
            if float(_loss((x + g * (adv0 - x))[None])[0]) + 2.0 * tol
            < -float(flip_tolerance(run.model((x + g * (adv0 - x))[None]))[0])
        )  # fmt: skip
        assert probe.EDGE_GROWTH.index(want) >= 1  # a scale that failed came first
        assert found[i].margin == pytest.approx(want * margin0, rel=1e-6)
        assert torch.allclose(found[i].adversarial, x + want * (adv0 - x), atol=1e-7)
        # the verification pass, then one pass per scale up to the one that held
        assert queries[i] == 990 + 1 + 1 + probe.EDGE_GROWTH.index(want)
    # sample 2 spent its budget on the verification pass: no growth, the flip is rejected
    assert not out[2].ok and queries[2] == 1000
    assert torch.equal(found[2].adversarial, before[2][0])


def test_without_the_shift_nothing_moves_and_no_pass_is_spent() -> None:
    run, kind, batch, found, _ = _setup(1000, 0.0)
    before = {i: c.margin for i, c in found.items()}
    queries = [10, 10, 10]
    out = probe.verify(run, kind, batch, found, [0, 1, 2], queries)
    assert all(v.ok for v in out.values()) and queries == [11, 11, 11]
    assert {i: c.margin for i, c in found.items()} == before


def test_without_the_growth_the_rounding_loses_the_flip(monkeypatch: Any) -> None:
    monkeypatch.setattr(probe, "EDGE_GROWTH", ())
    run, kind, batch, found, _ = _setup(1000, 2.0)
    out = probe.verify(run, kind, batch, found, [0, 1, 2], [10, 10, 10])
    assert not any(v.ok for v in out.values())
