"""The sparse flip's reserve (:func:`mmargin.engine.exchange.sparse_reserve`,
``GradientConfig.exchange_sparse``) against an exact oracle: on linear models the minimal
L1 flip in the box is a fractional knapsack (closed form, here a linear program per
class); a 500-pass search, whose probes run to their ends and leave no step for the
polish and the exchange, ends above it where its flip is sparse (seed 1: 1.0115 × the
minimum), and with the reserve the exchange's knapsack walks reach it (1.0006 ×)."""

from __future__ import annotations

import math

import engine_fakes as F  # the tests folder is on sys.path (conftest.py)
import numpy as np
import torch
from scipy.optimize import linprog

from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.exchange import SPARSE_RESERVE, sparse_reserve
from mmargin.engine.spec import GradientConfig, SearchSpec
from mmargin.engine.state import SearchState
from mmargin.spaces import box


def _exact(model: torch.nn.Linear, x: np.ndarray, label: int) -> float:
    """The minimal L1 flip of ``x`` in [0, 1] off ``label``: the smallest over the other
    classes of the fractional knapsack, as a linear program (HiGHS)."""
    w, b = model.weight.detach().double().numpy(), model.bias.detach().double().numpy()
    best = math.inf
    for j in range(w.shape[0]):
        if j == label:
            continue
        a = w[label] - w[j]
        need = float((w @ x + b)[label] - (w @ x + b)[j])
        room = np.where(a > 0, x, 1 - x)
        got = linprog(np.ones(len(a)), A_ub=-np.abs(a)[None, :], b_ub=[-need],
                      bounds=list(zip(np.zeros_like(room), room, strict=True)),
                      method="highs")  # fmt: skip
        if got.status == 0:
            best = min(best, float(got.fun))
    return best


def _ratios(seed: int, sparse: int, budget: int = 500) -> np.ndarray:
    """found / exact of a ``budget``-pass L1 search (the engine's, with its final line
    search) on 20 points of a random float32 linear model (32 inputs, half of them 0, 10
    classes), the reserve for flips of at most ``sparse`` coordinates."""
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(32, 10)
    with torch.no_grad():
        model.weight.copy_(torch.randn(10, 32, generator=gen))
        model.bias.copy_(torch.randn(10, generator=gen))
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(20, 32))
    x[rng.uniform(size=x.shape) < 0.5] = 0.0
    x = x.astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    adapter, _ = F.torch_adapter(model)
    spec = SearchSpec(budget=budget, gradient=GradientConfig(exchange_sparse=sparse))
    out = minimal_flip(adapter, box(0.0, 1.0, sample_shape=(32,)), lp("l1"), x, labels,
                       spec=spec)  # fmt: skip
    assert all(r.queries <= budget for r in out)
    found = np.array([r.margin for r in out])
    exact = np.array([_exact(model, x[i].astype(np.float64), int(labels[i]))
                      for i in range(len(x))])  # fmt: skip
    assert bool(np.all(found >= exact * (1 - 1e-5)))  # never below the minimum
    return found / exact


def test_sparse_flips_of_a_linear_model_reach_the_knapsack_minimum() -> None:
    without, with_ = _ratios(1, 0), _ratios(1, 4)
    assert without.max() > 1.01  # no step left for the exchange: the refinement's flip
    assert with_.max() < 1.001
    assert np.median(with_) < 1.0005


def test_the_reserve_tops_up_the_unspent_steps_of_sparse_flips_only() -> None:
    x = torch.zeros(4, 8, dtype=torch.float64)
    state = SearchState.empty(x)
    delta = torch.zeros(4, 8, dtype=torch.float64)
    delta[0, :2] = 0.5  # sparse
    delta[1, :6] = 0.1  # spread
    delta[2, :1] = 0.9  # sparse, with steps of its own left
    scores = torch.tensor([[0.0, 1.0]] * 3, dtype=torch.float64)
    state.record(torch.arange(3), delta[:3].abs().sum(dim=1), delta[:3], scores)
    labels = torch.zeros(4, dtype=torch.long)  # sample 3: no flip
    unspent = torch.tensor([0, 0, SPARSE_RESERVE - 5, 0])
    config = GradientConfig(exchange_sparse=4)
    got = sparse_reserve(2 * SPARSE_RESERVE, 1.0, config, state, labels, unspent)
    assert got is not None and got.tolist() == [SPARSE_RESERVE, 0, 5, 0]
    # too short a refinement, another distance, or the rule off: nothing kept
    assert sparse_reserve(2 * SPARSE_RESERVE - 1, 1.0, config, state, labels, unspent) is None
    assert sparse_reserve(2 * SPARSE_RESERVE, 2.0, config, state, labels, unspent) is None
    off = GradientConfig(exchange_sparse=0)
    assert sparse_reserve(2 * SPARSE_RESERVE, 1.0, off, state, labels, unspent) is None
