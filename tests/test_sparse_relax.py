"""The L0 stage's relaxed descents (:func:`mmargin.engine.sparse._relax`) against brute force.

The relaxed descents spend only passes the stage would leave unspent at a local minimum, so
they must never make a flip larger, must keep each sample's budget and must not make a
sample's result depend on its batch. On a model whose class-0 score grows with every input
coordinate (a ReLU network with non-negative weights), the fewest positions that flip an
input are found by enumerating supports with every chosen coordinate moved to 0 (the score
is lowest there on any support), so the stage's count is checked against the true minimum.
"""

from __future__ import annotations

import itertools

import engine_fakes as F  # the tests folder is on sys.path (conftest.py)
import numpy as np
import pytest
import torch

import mmargin.engine.sparse as sparse
from mmargin.distances import lp
from mmargin.engine.sparse import positions, sparse_finish
from mmargin.goals import Untargeted
from mmargin.spaces import box

SIZE = 9


class _Monotone(torch.nn.Module):
    """Scores ``[g(x) - c, 0]`` with ``g`` a ReLU network of non-negative weights: ``g``
    never decreases in any coordinate, yet positions interact through the ReLUs."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = torch.rand(16, SIZE, generator=gen) ** 3
        self.b = torch.rand(16, generator=gen) - 0.8
        self.a = torch.rand(16, generator=gen)
        self.c = 0.0

    def g(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.flatten(1) @ self.w.T + self.b) @ self.a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.g(x) - self.c
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def _case(seed: int, n: int) -> tuple[_Monotone, torch.Tensor]:
    """A monotone model and ``n`` class-0 inputs that need several positions to flip."""
    model = _Monotone(seed)
    x = torch.rand(4 * n, SIZE, generator=torch.Generator().manual_seed(seed + 1))
    g = model.g(x)
    model.c = float(g.quantile(0.05))
    return model, x[g > model.c + 0.06 * (g.max() - model.c)][:n]


def _fewest(model: _Monotone, row: torch.Tensor) -> int:
    """The fewest positions whose move to 0 flips ``row``: every support, smallest first."""
    for k in range(1, SIZE + 1):
        for support in itertools.combinations(range(SIZE), k):
            moved = row.clone()
            moved[list(support)] = 0.0
            if float(model.g(moved[None])[0]) < model.c:
                return k
    raise AssertionError("no flip exists")


def _stage(
    model: _Monotone, x: torch.Tensor, passes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    adapter, counter = F.torch_adapter(model)
    labels = torch.zeros(len(x), dtype=torch.long)
    delta, used = sparse_finish(adapter, box(0.0, 1.0, sample_shape=(SIZE,)), lp("l0"),
                                Untargeted(), x, -x, labels, None, passes)  # fmt: skip
    return delta, used, counter.passes


def _counts(delta: torch.Tensor) -> np.ndarray:
    return positions(lp("l0"), delta).flatten(1).sum(1).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relaxed_descents_never_lose_and_stay_above_the_true_minimum(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = _case(seed, n=10)
    assert len(x) >= 5
    passes = torch.full((len(x),), 600)
    delta, used, seen = _stage(model, x, passes)
    assert (used <= passes).all() and int(used.sum()) == seen
    assert (model(x + delta).argmax(1) == 1).all()  # every result flips
    assert ((x + delta >= 0) & (x + delta <= 1)).all()
    exact = np.array([_fewest(model, row) for row in x])
    found = _counts(delta)
    assert (found >= exact).all(), (found, exact)
    monkeypatch.setattr(sparse, "RELAX_STARTS", 0)  # the stage without the relaxed descents
    without, _, _ = _stage(model, x, passes)
    assert (found <= _counts(without)).all()
    assert (model(x + without).argmax(1) == 1).all()


def test_relaxed_descents_reach_the_minimum_on_monotone_models() -> None:
    """Given the passes, the stage (relaxed descents included) ends at the true minimum on
    every row here."""
    model, x = _case(3, n=10)
    delta, _, _ = _stage(model, x, torch.full((len(x),), 1000))
    exact = np.array([_fewest(model, row) for row in x])
    assert np.array_equal(_counts(delta), exact), (_counts(delta), exact)


def test_a_sample_alone_matches_its_batch_with_tight_budgets() -> None:
    """Budgets that run out inside a relaxed descent: each sample's flip and passes are what
    it gets alone, and none spends more than it was given."""
    model, x = _case(4, n=6)
    passes = torch.as_tensor([3, 40, 90, 170, 333, 800])[: len(x)]
    delta, used, seen = _stage(model, x, passes)
    assert (used <= passes).all() and int(used.sum()) == seen
    for i in range(len(x)):
        alone, used_alone, _ = _stage(model, x[i : i + 1], passes[i : i + 1])
        assert torch.equal(alone[0], delta[i]) and int(used_alone[0]) == int(used[i])


def _relax_alone(
    model: _Monotone, row: torch.Tensor, count: int, passes: int
) -> tuple[torch.Tensor | None, int, int]:
    """One relaxed descent from the clean ``row``, its asks answered one at a time."""
    space, distance, goal = box(0.0, 1.0, sample_shape=(SIZE,)), lp("l0"), Untargeted()
    adapter, counter = F.torch_adapter(model)
    sample = sparse._Sample(row[None], passes)
    run = sparse._relax(space, distance, sample, torch.zeros_like(row[None]), count)
    labels = torch.zeros(1, dtype=torch.long)
    reply = None
    try:
        while True:
            kind, point = next(run) if reply is None else run.send(reply)
            answer = sparse._forward if kind == sparse.FLIP else sparse._gradient
            (reply,) = answer(adapter, space, distance, goal, row[None], point, labels, None)
            sample.left -= 1 if kind == sparse.FLIP else 2
    except StopIteration as done:
        return done.value, passes - sample.left, counter.passes


def test_a_relaxed_descent_from_the_clean_input_finds_flips_no_smaller_than_the_minimum() -> None:
    """From the clean input, asked for any flip on fewer than ``SIZE + 1`` positions, a
    relaxed descent finds one on every row, within its passes and never below the minimum."""
    model, x = _case(5, n=8)
    for row in x:
        found, used, seen = _relax_alone(model, row, SIZE + 1, 2 * sparse.RELAX_PATIENCE)
        assert found is not None and used == seen <= 2 * sparse.RELAX_PATIENCE
        assert int(model(row[None] + found).argmax(1)[0]) == 1
        assert int(_counts(found)[0]) >= _fewest(model, row)
        tight, used, _ = _relax_alone(model, row, _fewest(model, row), 2 * sparse.RELAX_PATIENCE)
        assert tight is None  # no flip below the minimum exists
