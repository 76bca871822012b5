"""The passes the L0 stage leaves (:mod:`mmargin.engine.l0rest`) and the smooth-L0 run of
per-sample lengths it uses, against closed-form minima and each sample alone.

On a two-class linear model in a box the fewest positions that flip an input is known in
closed form (``test_engine_sparse._fewest_by_sorting``): no result may be smaller, every
result must flip, none may have more positions than the flip it started from, no sample
may spend more than it was given, and each sample ends as it does alone.
"""

from __future__ import annotations

import engine_fakes as F  # the tests folder is on sys.path (conftest.py)
import numpy as np
import pytest
import torch
from test_engine_sparse import _case, _fewest_by_sorting

from mmargin.adapters import TorchAdapter
from mmargin.distances import lp, pixel_l0
from mmargin.engine.l0rest import REST_MIN, spend_rest
from mmargin.engine.problem import Problem
from mmargin.engine.smooth_l0 import smooth_l0_run
from mmargin.engine.sparse_ops import positions
from mmargin.engine.state import SearchState
from mmargin.goals import Untargeted
from mmargin.spaces import box


def _smooth(net: torch.nn.Module, x: torch.Tensor, steps: int,
            lengths: torch.Tensor | None = None) -> SearchState:  # fmt: skip
    state = SearchState.empty(x)
    space = box(0.0, 1.0, sample_shape=x.shape[1:])
    problem = Problem(TorchAdapter(net), space, lp("l0"), Untargeted(), x, net(x).argmax(1))
    smooth_l0_run(problem, steps, state, lengths=lengths)
    return state


def test_own_lengths_end_where_a_run_of_that_length_alone_ends() -> None:
    """Each row of a batched run with per-sample lengths is, bit for bit, the run of its
    length on it alone (step size annealed over its own length), and pays 2 passes a step."""
    net = F.mlp(seed=5)
    x = torch.as_tensor(F.continuous_data(6, seed=2))
    lengths = torch.tensor([0, 7, 25, 40, 13, 25])
    state = _smooth(net, x, 40, lengths)
    assert torch.equal(state.queries, 2 * lengths)
    for i in range(len(x)):
        alone = _smooth(net, x[i : i + 1], int(lengths[i]))
        assert torch.equal(alone.best_delta[0], state.best_delta[i])
        assert torch.equal(alone.best_norm[0], state.best_norm[i])


def _rest(model: torch.nn.Module, x: torch.Tensor, delta: torch.Tensor, distance: object,
          left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    space = box(0.0, 1.0, sample_shape=x.shape[1:])
    labels = model(x).argmax(1)
    problem = Problem(TorchAdapter(model), space, distance, Untargeted(), x, labels)
    return spend_rest(problem, delta, left)


@pytest.mark.parametrize(
    ("shape", "group"), [((24,), None), ((3, 4, 4), 1)], ids=["coordinates", "pixels"]
)
def test_rest_flips_never_below_the_minimum_never_worse_and_alone(
    shape: tuple[int, ...], group: int | None
) -> None:
    model, xs = _case(shape, seed=4, n=8, lift=2.0)
    x = torch.as_tensor(xs)
    distance = lp("l0") if group is None else pixel_l0(lp("l0"))
    delta = (1.0 - x) * (model.w < 0) - x * (model.w > 0)  # every position to its bound
    assert bool((model(x + delta).argmax(1) == 1).all())
    left = torch.tensor([0, REST_MIN - 1, REST_MIN, 60, 90, 120, 200, 300])
    out, used = _rest(model, x, delta, distance, left)
    assert bool((used <= left).all()) and bool((used[left < REST_MIN] == 0).all())
    assert torch.equal(out[left < REST_MIN], delta[left < REST_MIN])
    assert bool((model(x + out).argmax(1) == 1).all())
    count = positions(distance, out).flatten(1).sum(1)
    assert bool((count <= positions(distance, delta).flatten(1).sum(1)).all())
    exact = np.array([_fewest_by_sorting(model.w.numpy(), row, model.b, group) for row in xs])
    assert (count.numpy() >= exact).all()
    assert bool((count[left >= 120].numpy() < positions(distance, delta)[0].sum().item()).all())
    for i in range(len(x)):
        one, spent = _rest(model, x[i : i + 1], delta[i : i + 1], distance, left[i : i + 1])
        assert torch.equal(one[0], out[i]) and int(spent[0]) == int(used[i])
