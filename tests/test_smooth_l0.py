"""The smooth-L0 run (:mod:`mmargin.engine.smooth_l0`), its place in the L0 search and the
stage's second start (the alternate flip of :func:`mmargin.engine.sparse.sparse_finish`),
against brute force.

On a two-class linear model in a box the fewest positions that flip an input is known in
closed form (the largest per-position gains first, checked against every support in
``test_engine_sparse``): no flip the run records may be smaller, every one must flip,
and each sample's arithmetic is its own.
"""

from __future__ import annotations

import math

import engine_fakes as F  # the tests folder is on sys.path (conftest.py)
import numpy as np
import pytest
import torch
from test_engine_sparse import _case, _fewest_by_sorting

from mmargin.adapters import TorchAdapter
from mmargin.distances import lp, pixel_l0
from mmargin.engine import gradient
from mmargin.engine.problem import Problem
from mmargin.engine.smooth_l0 import smooth_l0_run
from mmargin.engine.sparse import sparse_finish
from mmargin.engine.sparse_ops import positions
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Untargeted
from mmargin.spaces import box


def _run(model: torch.nn.Module, x: torch.Tensor, distance: object, steps: int,
         dead: torch.Tensor | None = None) -> SearchState:  # fmt: skip
    labels = model(x).argmax(1)
    state = SearchState.empty(x)
    if dead is not None:
        state.flag("zero_gradients", dead)
    space = box(0.0, 1.0, sample_shape=x.shape[1:])
    problem = Problem(TorchAdapter(model), space, distance, Untargeted(), x, labels)
    smooth_l0_run(problem, steps, state)
    return state


@pytest.mark.parametrize(
    ("shape", "group"), [((24,), None), ((3, 4, 4), 1)], ids=["coordinates", "pixels"]
)
def test_linear_flips_are_real_and_never_below_the_minimum(
    shape: tuple[int, ...], group: int | None
) -> None:
    model, xs = _case(shape, seed=3, n=12, lift=2.0)
    x = torch.as_tensor(xs)
    distance = lp("l0") if group is None else pixel_l0(lp("l0"))
    state = _run(model, x, distance, steps=60)
    exact = np.array([_fewest_by_sorting(model.w.numpy(), row, model.b, group) for row in xs])
    found = torch.isfinite(state.best_norm)
    assert bool(found.all())  # a lift of 2 is within reach of every row
    assert (state.best_norm.numpy() >= exact).all()
    assert (state.queries == 120).all()
    assert bool((model(x + state.best_delta).argmax(1) == 1).all())
    assert torch.equal(distance.norm(state.best_delta), state.best_norm)
    inside = (x + state.best_delta >= 0) & (x + state.best_delta <= 1)
    assert bool(inside.all())


def test_relu_flips_are_real_and_each_row_is_its_own() -> None:
    """On a tiny ReLU network every recorded flip flips, and each row's run is the same,
    bit for bit, alone as in the batch."""
    net = F.mlp(seed=5)
    x = torch.as_tensor(F.continuous_data(10, seed=2))
    state = _run(net, x, lp("l0"), steps=40)
    labels = net(x).argmax(1)
    found = torch.isfinite(state.best_norm)
    assert bool(found.any())
    assert bool((net(x + state.best_delta).argmax(1) != labels)[found].all())
    for i in range(len(x)):
        alone = _run(net, x[i : i + 1], lp("l0"), steps=40)
        assert torch.equal(alone.best_delta[0], state.best_delta[i])


def test_samples_without_usable_gradients_sit_out() -> None:
    model, xs = _case((8,), seed=1, n=4, lift=1.0)
    x = torch.as_tensor(xs)
    dead = torch.tensor([False, True, False, True])
    state = _run(model, x, lp("l0"), steps=10, dead=dead)
    assert state.queries.tolist() == [20, 0, 20, 0]
    assert bool(torch.isinf(state.best_norm[dead]).all())


def test_the_l0_search_keeps_the_smaller_flip_and_the_other_as_alternate() -> None:
    """``gradient_search`` on L0: the smooth run's best and the ε-ball runs' best, the
    smaller of the two as the result and the other as ``alternate``; the passes fit."""
    model, xs = _case((3, 5, 5), seed=4, n=6, lift=3.0)
    x = torch.as_tensor(xs)
    labels = model(x).argmax(1)
    distance = pixel_l0(lp("l0"))
    space = box(0.0, 1.0, sample_shape=x.shape[1:])
    adapter = TorchAdapter(model)
    passes = 200
    problem = Problem(adapter, space, distance, Untargeted(), x, labels)
    streams = Streams.for_samples(0, list(map(str, range(len(x)))))
    state = gradient.gradient_search(problem, passes, GradientConfig(), streams, 2)
    smooth = gradient.smooth_steps(passes // 2)
    assert (state.queries <= passes).all()
    assert state.alternate is not None
    alone = SearchState.empty(x)
    problem = Problem(adapter, space, distance, Untargeted(), x, labels)
    smooth_l0_run(problem, smooth, alone)
    assert bool((state.best_norm <= alone.best_norm).all())
    other = distance.norm(state.alternate)
    both = torch.stack([state.best_norm, torch.where(other > 0, other, math.inf)])
    assert torch.equal(state.best_norm, both.min(dim=0).values)
    # the smooth run's best is either the result or the alternate, bit for bit
    for i in range(len(x)):
        assert torch.equal(state.best_delta[i], alone.best_delta[i]) or torch.equal(
            state.alternate[i], alone.best_delta[i]
        )


def test_the_stage_shrinks_the_alternate_with_the_passes_left() -> None:
    """From a minimal flip (the stage cannot improve it) with an all-pushed alternate: the
    result keeps the minimum and the stage spends passes on the alternate; a non-flipping
    alternate costs exactly one forward pass more than none and changes nothing."""
    model, xs = _case((16,), seed=6, n=5, lift=2.0)
    x = torch.as_tensor(xs)
    w = model.w
    distance, goal = lp("l0"), Untargeted()
    space = box(0.0, 1.0, sample_shape=x.shape[1:])
    labels = torch.zeros(len(x), dtype=torch.long)
    pushed = torch.where(w > 0, 0.0, 1.0) - x  # every coordinate to its better bound
    gains = w.abs() * torch.where(w > 0, x, 1 - x)
    score = (x * w).sum(1) + model.b
    order = gains.argsort(dim=1, descending=True)
    need = (gains.gather(1, order).cumsum(1) <= score[:, None] + 1e-6).sum(1) + 1
    keep = torch.zeros_like(x, dtype=torch.bool)
    for i in range(len(x)):
        keep[i, order[i, : int(need[i])]] = True
    minimal = torch.where(keep, pushed, 0.0)
    assert bool((model(x + minimal).argmax(1) == 1).all())
    passes = torch.full((len(x),), 300)
    adapter = TorchAdapter(model)

    def stage(alt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return sparse_finish(Problem(adapter, space, distance, goal, x, labels), minimal, passes,
                             alt)  # fmt: skip

    alone, used_alone = stage(None)
    exact = [_fewest_by_sorting(w.numpy(), row, model.b, None) for row in xs]
    assert positions(distance, alone).sum(1).tolist() == exact
    out, used = stage(pushed)
    assert positions(distance, out).sum(1).tolist() == exact
    assert bool((used > used_alone + 1).all()) and bool((used <= passes).all())
    assert bool((model(x + out).argmax(1) == 1).all())
    nothing = -0.01 * pushed  # a small step the wrong way: never a flip
    same, used_same = stage(nothing)
    assert torch.equal(same, alone) and torch.equal(used_same, used_alone + 1)


class _Flat(torch.nn.Module):
    """Scores that do not depend on the input: no usable gradient anywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 0.0]).expand(x.shape[0], 2) + 0 * x.flatten(1)[:, :2]


def test_a_short_l0_search_is_the_smooth_run_alone_and_flags_unusable_gradients() -> None:
    """Under :data:`~mmargin.engine.gradient.SMOOTH_ALONE` steps the L0 search is the
    smooth run alone (no alternate: every one is zero) and its first step flags the
    samples whose gradients are unusable, as the ε-ball search's does, so that they fall
    back to the decision strategy."""
    model, xs = _case((8,), seed=2, n=3, lift=1.0)
    x = torch.as_tensor(xs)
    space = box(0.0, 1.0, sample_shape=x.shape[1:])
    streams = Streams.for_samples(0, ["a", "b", "c"])
    passes = 2 * gradient.SMOOTH_ALONE - 2
    labels = model(x).argmax(1)
    problem = Problem(TorchAdapter(model), space, lp("l0"), Untargeted(), x, labels)
    state = gradient.gradient_search(problem, passes, GradientConfig(), streams, 2)
    assert state.alternate is not None and not bool(state.alternate.any())
    assert (state.queries == passes).all() and bool(torch.isfinite(state.best_norm).all())
    alone = SearchState.empty(x)
    problem = Problem(TorchAdapter(model), space, lp("l0"), Untargeted(), x, labels)
    smooth_l0_run(problem, passes // 2, alone)
    assert torch.equal(alone.best_delta, state.best_delta)
    problem = Problem(TorchAdapter(_Flat()), space, lp("l0"), Untargeted(), x,
                      torch.zeros(3, dtype=torch.long))  # fmt: skip
    flat = gradient.gradient_search(problem, passes, GradientConfig(), streams, 2)
    assert bool(flat.flags["zero_gradients"].all()) and (flat.queries == 2).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_one_channel_position_sizes_are_the_grouped_ones(channels: int) -> None:
    """The one-channel shortcuts of the smooth count (no sum, no maximum over a channel
    axis of length 1) give the grouped computation's numbers, signed zeros included."""
    from mmargin.engine.smooth_l0 import _position_size, _position_square

    g = torch.Generator().manual_seed(channels)
    u = torch.randn(4, channels, 5, 6, generator=g) * (
        torch.rand(4, channels, 5, 6, generator=g) < 0.5
    )
    u[0, 0, 0, 0] = -0.0
    distance = pixel_l0(lp("l0"))
    assert torch.equal(_position_square(distance, u), u.square().sum(dim=1))
    size = _position_size(distance, u)
    assert torch.equal(size, u.abs().amax(dim=1, keepdim=True).expand_as(u))
