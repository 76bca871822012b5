"""The line search ends after its usual first steps and one pass at the last rung on a flip
the search left on the boundary (:func:`mmargin.engine.finish.line_search`)."""

from __future__ import annotations

import pytest
import torch

from mmargin.distances import lp
from mmargin.engine.finish import PLAIN_SHARE, bisect_scale, line_search
from mmargin.engine.problem import Problem
from mmargin.goals import Untargeted
from mmargin.spaces import box


def _problem(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Problem:
    """The line search's problem: the model on the box [-1, 1], untargeted (the distance
    plays no part in a line search)."""
    return Problem(model, box(-1.0, 1.0), lp("l2"), Untargeted(), x, labels)


def _threshold(cut: float) -> torch.nn.Module:
    """Class 1 wins once the first input coordinate passes ``cut`` (steeply: the flip
    tolerance moves the boundary by ~1e-9)."""
    model = torch.nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1e3, 0.0]], dtype=torch.float64))
        model.bias.copy_(torch.tensor([0.0, -1e3 * cut], dtype=torch.float64))
    return model


@pytest.mark.parametrize("steps", [1, 2, 6, 12])
def test_a_flip_on_the_boundary_ends_the_line_search_after_the_rung(steps: int) -> None:
    """A flip within 2^-steps of the boundary: bisection would end at t = 1 after every
    step; the line search sees its usual first steps and the last rung not flip and stops
    there, same flip."""
    model = _threshold(0.5)
    x = torch.zeros(3, 2, dtype=torch.float64)
    delta = torch.tensor([[0.5 + 1e-7, 0.0], [0.5 + 1e-6, 0.3], [0.5001, 0.0]], dtype=torch.float64)
    labels = torch.zeros(3, dtype=torch.long)
    out, passes, seen = line_search(_problem(model, x, labels), delta, steps, check=True)
    assert torch.equal(out, delta) and bool(seen.all())
    # the usual steps, the last rung, then the check of the flip itself
    assert passes.tolist() == [int(steps * PLAIN_SHARE) + 2] * 3
    assert bool((passes < steps + 1).all()) or steps == 1
    hi, _ = bisect_scale(model, Untargeted(), labels, None, lambda t: x + delta * t[:, None],
                         steps, x)  # fmt: skip
    assert bool((hi == 1).all())


@pytest.mark.parametrize("steps", [2, 6, 12])
def test_a_flip_past_the_boundary_is_bisected_within_the_same_passes(steps: int) -> None:
    model = _threshold(0.3)
    x = torch.zeros(4, 2, dtype=torch.float64)
    scale = torch.tensor([1.0, 0.5, 0.45, 0.9], dtype=torch.float64)  # past the last rung
    delta = torch.stack([scale, torch.zeros(4, dtype=torch.float64)], dim=1)
    labels = torch.zeros(4, dtype=torch.long)
    out, passes, seen = line_search(_problem(model, x, labels), delta, steps, check=True)
    assert bool(seen.all()) and bool((passes <= steps).all())  # as plain bisection's
    size = out[:, 0]
    assert bool((size >= 0.3).all())  # still a flip (class 1 from 0.3 on)
    assert bool((size - 0.3 <= scale * 2.0 ** -(steps - 1)).all())


class _Island(torch.nn.Module):
    """Class 1 between 0.3 and 0.4 of the first coordinate, and again from 0.5 on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x[:, 0]
        one = 1e3 * torch.maximum(torch.minimum(u - 0.3, 0.4 - u), u - 0.5)
        return torch.stack([torch.zeros_like(u), one], dim=1)


def test_a_flip_the_usual_first_steps_see_is_found_as_before() -> None:
    """Along the path of a flip just past 0.5 the model flips again at scales 0.6-0.8 and
    not near 1: the usual first steps meet it (3/4), and the line search ends where plain
    bisection does, near 0.6, not at the boundary rung."""
    x = torch.zeros(1, 2, dtype=torch.float64)
    delta = torch.tensor([[0.5 + 1e-6, 0.0]], dtype=torch.float64)
    labels = torch.zeros(1, dtype=torch.long)
    out, passes, seen = line_search(_problem(_Island(), x, labels), delta, 12, check=True)
    hi, _ = bisect_scale(_Island(), Untargeted(), labels, None, lambda t: x + delta * t[:, None],
                         12, x)  # fmt: skip
    assert float(out[0, 0]) == pytest.approx(float(hi[0] * delta[0, 0]), rel=1e-9)
    assert 0.299 < float(out[0, 0]) < 0.301 and bool(seen.all()) and int(passes[0]) == 12
