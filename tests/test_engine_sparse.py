"""The L0 finishing stage (:mod:`mmargin.engine.sparse`) against brute force.

On a two-class linear model in a box the fewest positions that flip an input is known:
each position can lower the score by at most ``Σ_c |w_c|·room_c`` (every channel moved to
the bound against its weight), so the minimum is the smallest k whose k largest gains
reach the score — checked here by enumerating every support on tiny inputs. The stage must
reach it where the search alone does not, never be worse than the search alone, and keep
the budget: reported passes are the passes a counter saw and never more than the budget.
"""

from __future__ import annotations

import itertools
from typing import Any

import engine_fakes as F  # the tests folder is on sys.path (conftest.py)
import numpy as np
import pytest
import torch

from mmargin.adapters import TorchAdapter
from mmargin.distances import lp, pixel_l0
from mmargin.engine import minimal_flip
from mmargin.engine.problem import Problem
from mmargin.engine.sparse import sparse_finish
from mmargin.engine.sparse_ops import positions
from mmargin.engine.spec import SearchSpec
from mmargin.goals import Untargeted
from mmargin.results import Status
from mmargin.spaces import box


class _TwoClass(torch.nn.Module):
    """Scores ``[w·x + b, 0]``: class 0 while ``w·x + b > 0``."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1) * self.w.flatten()).sum(dim=1) + self.b
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def _gains(w: np.ndarray, x: np.ndarray, group: int | None) -> np.ndarray:
    """How far each position can lower ``w·x``: every coordinate of it moved to the bound
    against its weight."""
    gain = np.abs(w) * np.where(w > 0, x, 1 - x)
    return (gain if group is None else gain.sum(axis=group - 1)).ravel()


def _fewest_by_sorting(w: np.ndarray, x: np.ndarray, b: float, group: int | None) -> int:
    """The fewest positions that make ``w·x + b < 0``: the largest gains first."""
    score = float((w * x).sum() + b)
    return int((np.sort(_gains(w, x, group))[::-1].cumsum() <= score + 1e-6).sum()) + 1


def _fewest_by_enumeration(w: np.ndarray, x: np.ndarray, b: float, group: int | None) -> int:
    """The same minimum by trying every support, smallest first (tiny inputs only)."""
    score, per = float((w * x).sum() + b), _gains(w, x, group)
    for k in range(1, per.size + 1):
        if any(
            per[list(c)].sum() > score + 1e-6 for c in itertools.combinations(range(per.size), k)
        ):
            return k
    raise AssertionError("no flip exists")


def _case(shape: tuple[int, ...], seed: int, n: int, lift: float) -> tuple[_TwoClass, np.ndarray]:
    """A linear model whose ``n`` inputs are all class 0, ``lift`` above the lowest score."""
    gen = np.random.default_rng(seed)
    w = gen.normal(size=shape).astype(np.float32)
    x = gen.uniform(0.2, 0.8, size=(n, *shape)).astype(np.float32)
    b = float(-(x * w).reshape(n, -1).sum(axis=1).min()) + lift
    return _TwoClass(torch.as_tensor(w), b), x


def _margins(model: _TwoClass, x: np.ndarray, distance: Any, budget: int) -> np.ndarray:
    labels = model(torch.as_tensor(x)).argmax(1).numpy()
    assert (labels == 0).all()
    results = minimal_flip(TorchAdapter(model), box(0.0, 1.0, sample_shape=x.shape[1:]),
                           distance, x, labels, spec=SearchSpec(budget=budget))  # fmt: skip
    assert all(r.verified for r in results if r.status is Status.FLIPPED)
    return np.array([r.margin if r.status is Status.FLIPPED else np.inf for r in results])


@pytest.mark.parametrize(("shape", "group"), [((7,), None), ((2, 2, 3), 1)])
def test_the_sorting_oracle_is_the_brute_force_minimum(
    shape: tuple[int, ...], group: int | None
) -> None:
    model, x = _case(shape, seed=2, n=10, lift=1.0)
    w, b = model.w.numpy(), model.b
    for row in x:
        assert _fewest_by_sorting(w, row, b, group) == _fewest_by_enumeration(w, row, b, group)


@pytest.mark.parametrize(
    ("shape", "group"), [((64,), None), ((3, 8, 8), 1)], ids=["coordinates", "pixels"]
)
def test_the_stage_reaches_the_minimum_on_linear_models(
    shape: tuple[int, ...], group: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 100 passes the search alone ends one position above the minimum on some rows
    (measured when this test was written); with the stage every row is at the minimum."""
    model, x = _case(shape, seed=0, n=16, lift=4.0)
    distance = lp("l0") if group is None else pixel_l0(lp("l0"))
    exact = np.array([_fewest_by_sorting(model.w.numpy(), row, model.b, group) for row in x])
    found = _margins(model, x, distance, budget=100)
    assert np.array_equal(found, exact), (found, exact)
    import mmargin.engine.continuous as continuous

    monkeypatch.setattr(continuous, "sparse_passes", lambda budget: 0)  # the search alone
    alone = _margins(model, x, distance, budget=100)
    assert (found <= alone).all()


@pytest.mark.parametrize("budget", [1, 2, 5, 17, 60, 150])
def test_l0_runs_report_the_passes_counted_and_fit_the_budget(budget: int) -> None:
    net = F.mlp(seed=4)
    x = F.continuous_data(12, seed=3)
    adapter, counter = F.torch_adapter(net)
    results = minimal_flip(adapter, box(0.0, 1.0, sample_shape=(6,)), lp("l0"), x,
                           F.labels_of(net, x), spec=SearchSpec(budget=budget))  # fmt: skip
    assert sum(r.queries for r in results) == counter.passes
    assert max(r.queries for r in results) <= budget
    assert all(r.status is not Status.ERROR for r in results), [r.message for r in results]
    if budget == 150:
        assert any(r.status is Status.FLIPPED for r in results)


def test_l0_results_do_not_depend_on_the_batch() -> None:
    """The stage runs the batch at once, each sample's search its own: the same flips
    whatever else shares the batch."""
    model, x = _case((3, 8, 8), seed=5, n=9, lift=4.0)
    labels = model(torch.as_tensor(x)).argmax(1).numpy()
    space = box(0.0, 1.0, sample_shape=x.shape[1:])

    def run(batch_size: int) -> list[tuple[float, Any]]:
        spec = SearchSpec(budget=150, batch_size=batch_size)
        out = minimal_flip(TorchAdapter(model), space, pixel_l0(lp("l0")), x, labels, spec=spec)
        return [(r.margin, None if r.adversarial is None else np.asarray(r.adversarial).tolist())
                for r in out]  # fmt: skip

    assert run(9) == run(4)


def test_the_batched_stage_matches_each_sample_alone_and_keeps_each_budget() -> None:
    """All samples shrink at once, each with its own passes (some too few for a single step,
    some leaving early): every flip and pass count is what the sample gets alone, no sample
    spends more than it was given, and the counter saw exactly the passes reported."""
    model, x = _case((3, 6, 6), seed=7, n=8, lift=3.0)
    w = model.w.numpy()
    distance, goal = pixel_l0(lp("l0")), Untargeted()
    space = box(0.0, 1.0, sample_shape=x.shape[1:])
    xt = torch.as_tensor(x)
    start = torch.as_tensor(np.where(w > 0, 0.0, 1.0) - x, dtype=torch.float32)  # all pushed
    labels = torch.zeros(len(x), dtype=torch.long)
    passes = torch.as_tensor([0, 1, 2, 3, 9, 40, 150, 400])

    def stage(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        adapter, counter = F.torch_adapter(model)
        problem = Problem(adapter, space, distance, goal, xt[rows], labels[rows])
        delta, used = sparse_finish(problem, start[rows], passes[rows])
        return delta, used, counter.passes

    delta, used, seen = stage(list(range(len(x))))
    assert (used <= passes).all() and int(used.sum()) == seen
    assert int(used[-1]) < int(passes[-1])  # the generous sample left before its passes ran out
    exact = [_fewest_by_sorting(w, row, model.b, 1) for row in x]
    assert int(positions(distance, delta[-1:]).sum()) == exact[-1]
    for i in range(len(x)):
        alone, used_alone, _ = stage([i])
        assert torch.equal(alone[0], delta[i]) and int(used_alone[0]) == int(used[i])
        flips = model(xt[i : i + 1] + delta[i : i + 1]).argmax(1)
        assert int(flips[0]) == 1


def _descent_step_alone(space: Any, distance: Any, x: torch.Tensor, grad: torch.Tensor,
                        point: torch.Tensor, total: torch.Tensor,
                        k: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One descent step of one sample as the stage took it before the steps were batched."""
    from sparse_reference import _ranks

    from mmargin.engine.sparse_ops import FAR, MOMENTUM, shares, within

    scale = grad.abs().amax().clamp(min=1e-30)
    total = MOMENTUM * total + grad / scale
    pushed = space.project(x, torch.where(total != 0, -total.sign() * FAR, point))
    order = shares(distance, total, pushed).flatten().argsort(descending=True, stable=True)
    keep = _ranks(order) < k
    point = space.finalize(x, x + space.project(x, within(distance, pushed, keep))) - x
    return point, total


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("grouped", [False, True])
def test_batched_descent_steps_are_each_sample_alone(channels: int, grouped: bool) -> None:
    """The descent steps of every descending sample of a round at once: each row bit for
    bit the step the sample took alone (ties in the running sum, zero gradients, positions
    at a bound)."""
    from mmargin.engine.sparse_ops import descent_steps

    g = torch.Generator().manual_seed(channels + 2 * grouped)
    shape = (9, channels, 5, 4)
    x = torch.rand(shape, generator=g)
    x[0, :, :2] = 0.0  # at the lower bound
    x[1, :, 2:] = 1.0
    grad = torch.randn(shape, generator=g)
    grad[2] = 0.0  # no gradient at all
    grad[3] = torch.randint(-2, 3, shape[1:], generator=g).float()  # ties
    total = torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < 0.5)
    point = (torch.rand(shape, generator=g) - x) * (torch.rand(shape, generator=g) < 0.3)
    k = torch.randint(1, 12, (shape[0],), generator=g)
    space = box(0.0, 1.0, sample_shape=shape[1:])
    distance = pixel_l0(lp("l0")) if grouped else lp("l0")
    nxt, summed = descent_steps(space, distance, x, grad, point, total, k)
    for i in range(shape[0]):
        one = slice(i, i + 1)
        alone = _descent_step_alone(space, distance, x[one], grad[one], point[one], total[one],
                                    int(k[i]))  # fmt: skip
        assert torch.equal(nxt[one], alone[0]) and torch.equal(summed[one], alone[1])


class _Bumpy(torch.nn.Module):
    """A nonlinear two-class model whose rows do not interact (elementwise terms, row sums):
    ``s = w·x + b − Σ v·relu(x − 0.5)²``; its pushed supports have local minima, so the stage
    restores positions one at a time and descends from them."""

    def __init__(self, w: torch.Tensor, v: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.v, self.b = w, v, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bump = (torch.relu(x - 0.5).square() * self.v).flatten(1).sum(dim=1)
        s = (x.flatten(1) * self.w.flatten()).sum(dim=1) + self.b - bump
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def _bumpy_case(g: torch.Generator, shape: tuple[int, ...],
                n: int) -> tuple[_Bumpy, torch.Tensor, torch.Tensor]:  # fmt: skip
    """A :class:`_Bumpy` model with random weights from ``g``, ``n`` inputs of ``shape``
    inside the box, and its offset set so that every input is classified 0 with room to
    spare; returns the model, its linear weights and the inputs."""
    w = torch.randn(shape, generator=g)
    v = torch.rand(shape, generator=g) * 8
    x = torch.rand((n, *shape), generator=g) * 0.6 + 0.2
    model = _Bumpy(w, v, 0.0)
    model.b = float(-model(x)[:, 0].min()) + 2.0
    return model, w, x


def test_the_batched_descents_match_each_sample_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a model with local minima the descents of several samples share rounds (their
    steps taken at once, :func:`mmargin.engine.sparse_ops.descent_steps`), and candidates of
    several samples one forward pass; every flip and pass count is the sample's alone and
    the one the stage gave before its steps were batched, with an alternate flip to shrink
    as well, and no sample spends more than it was given."""
    import mmargin.engine.sparse as sparse

    g = torch.Generator().manual_seed(3)
    shape = (3, 5, 5)
    n = 10
    model, w, x = _bumpy_case(g, shape, n)
    distance, goal = pixel_l0(lp("l0")), Untargeted()
    space = box(0.0, 1.0, sample_shape=shape)
    start = torch.where(w > 0, 0.0, 1.0).expand_as(x) - x  # every position pushed
    other = torch.where(torch.rand(x.shape, generator=g) < 0.5, start, 0.0)
    labels = torch.zeros(n, dtype=torch.long)
    assert (model(x).argmax(1) == 0).all() and (model(x + start).argmax(1) == 1).all()
    passes = torch.as_tensor([3, 7, 40, 90, 150, 200, 260, 300, 400, 500])
    rounds = []
    steps = sparse.descent_steps

    def counted(*args: Any) -> Any:
        rounds.append(args[2].shape[0])
        return steps(*args)

    monkeypatch.setattr(sparse, "descent_steps", counted)

    def stage(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        adapter, counter = F.torch_adapter(model)
        problem = Problem(adapter, space, distance, goal, x[rows], labels[rows])
        delta, used = sparse_finish(problem, start[rows], passes[rows], other[rows])
        return delta, used, counter.passes

    delta, used, seen = stage(list(range(n)))
    assert max(rounds) > 1  # descents of several samples shared a round
    # what the stage gave when each sample's steps were its own calls (b5932ae)
    assert positions(distance, delta).flatten(1).sum(1).tolist() == [24, 3, 1, 1, 1, 1, 2, 1, 2, 2]
    assert used.tolist() == [3, 7, 15, 15, 15, 65, 188, 28, 188, 188]
    assert (used <= passes).all() and int(used.sum()) == seen
    for i in range(n):
        alone, used_alone, _ = stage([i])
        assert torch.equal(alone[0], delta[i]) and int(used_alone[0]) == int(used[i])
        assert int(model(x[i : i + 1] + delta[i : i + 1]).argmax(1)[0]) == 1


class _Recorded(torch.nn.Module):
    """A model that keeps a copy of every input it is called on."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("grouped", [False, True])
def test_the_batched_bookkeeping_is_the_per_sample_search(grouped: bool) -> None:
    """The stage keeps every sample's place in plain integers and its tensors as rows of
    batch tensors (rankings, restores' orders, pushed points made once per round for every
    sample asking); the per-sample coroutines it replaced (tests/sparse_reference.py)
    are the reference: on a model with local minima, with passes that end samples in every
    phase (bisections, restores, both descents, the alternate's check and its shrink),
    every model call has the same inputs in the same order, and every flip and pass count
    is the same, bit for bit."""
    import sparse_reference

    g = torch.Generator().manual_seed(11)
    shape = (2, 4, 4)
    n = 32
    model, w, x = _bumpy_case(g, shape, n)
    distance, goal = (pixel_l0(lp("l0")) if grouped else lp("l0")), Untargeted()
    space = box(0.0, 1.0, sample_shape=shape)
    pushed = torch.where(w > 0, 0.0, 1.0).expand_as(x) - x
    part = torch.where(torch.rand(x.shape, generator=g) < 0.6, pushed, 0.0)
    start = torch.where(_per_row(model(x + part).argmax(1) == 1), part, pushed)
    other = torch.where(torch.rand(x.shape, generator=g) < 0.5, pushed, 0.0)
    other[::4] = 0.0  # no alternate
    start[:2], other[:2] = 0.0, pushed[:2]  # nothing to shrink: at once to the alternate
    labels = torch.zeros(n, dtype=torch.long)
    passes = torch.arange(n) * 11 % 71 + torch.arange(n)
    passes[:2] = torch.as_tensor([3, 4])  # too few for the alternate, just enough

    def stage(finish: Any) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        recorded = _Recorded(model)
        adapter, _ = F.torch_adapter(recorded)
        problem = Problem(adapter, space, distance, goal, x, labels)
        delta, used = finish(problem, start, passes, other)
        return delta, used, recorded.inputs

    delta, used, calls = stage(sparse_finish)
    want, want_used, want_calls = stage(sparse_reference.sparse_finish)
    assert len(calls) == len(want_calls) > 20
    assert all(torch.equal(a, b) for a, b in zip(calls, want_calls, strict=True))
    assert torch.equal(delta, want) and torch.equal(used, want_used)
    assert (used <= passes).all()
    assert len(set(positions(distance, delta).flatten(1).sum(1).tolist())) > 2


def test_stable_orders_are_torchs() -> None:
    """The stage's row-wise stable sorts (numpy's on CPU) are torch's ``argsort(stable=True)``
    permutations: ties (zeros of both signs), infinities, and rows with NaN (torch's)."""
    from mmargin.engine.sparse_ops import ranks_of, stable_order

    g = torch.Generator().manual_seed(0)
    values = torch.randint(-3, 4, (6, 40), generator=g).float() * 0.5
    values[values == 0.5] = -0.0
    values[:, :4] = -torch.inf
    values[1, 7] = torch.inf
    values[2, 9] = torch.nan
    for descending in (True, False):
        order = stable_order(values, descending)
        want = values.argsort(dim=1, descending=descending, stable=True)
        assert torch.equal(order, want)
        rank = ranks_of(order)
        for i in range(values.shape[0]):
            assert torch.equal(torch.gather(rank[i], 0, order[i]), torch.arange(40))


def _per_row(flags: torch.Tensor) -> torch.Tensor:
    return flags.view(-1, 1, 1, 1)


def test_the_batched_rankings_are_each_sample_alone() -> None:
    """The bisection's rankings of a round's samples at once, some of all positions (pool
    0), some of the flip's own (pool 1): each row the ranking the sample made alone."""
    from sparse_reference import _ranks

    from mmargin.engine.sparse import _rank, _Tensors

    g = torch.Generator().manual_seed(4)
    n, width = 7, 30
    delta = torch.zeros((n, width))
    moved = torch.rand((n, width), generator=g) < 0.4
    t = _Tensors(delta, moved, None)
    t.gain = torch.randint(-2, 3, (n, width), generator=g).float()  # ties
    pools = [0, 1, 1, 0, 1, 0, 1]
    sel = torch.arange(n)
    _rank(t, sel, pools)
    for i, pool in enumerate(pools):
        score = t.gain[i] if pool == 0 else torch.where(moved[i], t.gain[i], -torch.inf)
        assert torch.equal(t.rank[i], _ranks(score.argsort(descending=True, stable=True)))
