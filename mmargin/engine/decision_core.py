"""What every phase of the decision strategy shares: the counting oracle, the problem in
flat rows, bisection toward the clean input and the per-sample best.

The oracle answers "adversarial?" for candidate rows and charges one pass to the sample
each row belongs to; a sample's passes never go past its own budget (a per-sample tensor,
so a hybrid search can hand each sample what its gradient phase left).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmargin.distances import LpDistance
from mmargin.engine.problem import Problem
from mmargin.engine.spec import DecisionConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Goal
from mmargin.protocols import Distance, ModelAdapter, Space

_BIG = 1e4  # an unbounded coordinate moves at most this many times (1 + |x|)


class Oracle:
    """Answers "adversarial?" for candidate rows and counts one pass per row's sample."""

    def __init__(self, model: ModelAdapter, goal: Goal, labels: Tensor, targets: Tensor | None,
                 budget: Tensor, shape: tuple[int, ...], chunk: int) -> None:  # fmt: skip
        self.model, self.goal, self.labels, self.targets = model, goal, labels, targets
        self.budget, self.shape, self.chunk = budget, shape, chunk
        self.queries = torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)

    def left(self) -> Tensor:
        """Passes each sample still has."""
        return self.budget - self.queries

    @torch.no_grad()
    def ask(self, points: Tensor, owner: Tensor) -> Tensor:
        """Whether each flat row of ``points`` (belonging to sample ``owner``) is adversarial.

        A candidate the model raises on (a starting row it cannot score) is not
        adversarial and costs nothing: the rows of a failing call are asked one by one.
        """
        out = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
        answered = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        for start in range(0, points.shape[0], self.chunk):
            rows = torch.arange(start, min(start + self.chunk, points.shape[0]))
            try:
                out[rows] = self._judge(points[rows], owner[rows])
            except Exception:  # noqa: BLE001 - the model is user code
                for r in rows.tolist():
                    try:
                        out[r] = self._judge(points[r : r + 1], owner[r : r + 1])[0]
                    except Exception:  # noqa: BLE001
                        answered[r] = False
        charged = owner[answered]
        self.queries.index_add_(0, charged, torch.ones_like(charged))
        return out

    def _judge(self, points: Tensor, owner: Tensor) -> Tensor:
        scores = self.model(points.view(-1, *self.shape))
        tg = self.targets[owner] if self.targets is not None else None
        ok = self.goal.is_adversarial(scores, self.labels[owner], tg)
        return ok & torch.isfinite(scores).all(dim=1)


@dataclass
class Ctx:
    """What every phase needs: the problem in flat rows ``(B, D)``, each coordinate's reach
    (``lo_cap`` / ``hi_cap``), the distance's weights and the coordinate groups."""

    space: Space
    distance: Distance
    oracle: Oracle
    x: Tensor
    shape: tuple[int, ...]
    lo_cap: Tensor
    hi_cap: Tensor
    weights: Tensor
    groups: list[Tensor] | None
    config: DecisionConfig
    streams: Streams

    def final(self, owner: Tensor, delta: Tensor) -> Tensor:
        """``finalize(x + delta) - x`` for flat rows."""
        xs = self.x[owner].view(-1, *self.shape)
        out = self.space.finalize(xs, xs + delta.view(-1, *self.shape)) - xs
        return out.flatten(1)

    def norm(self, delta: Tensor) -> Tensor:
        """Per-row size in the distance."""
        return self.distance.norm(delta.view(-1, *self.shape))

    def ask(self, owner: Tensor, delta: Tensor) -> Tensor:
        """Whether ``x[owner] + delta`` is adversarial, row by row (one pass each)."""
        return self.oracle.ask(self.x[owner] + delta, owner)


def make_context(problem: Problem, budget: Tensor, streams: Streams,
                 config: DecisionConfig) -> Ctx:  # fmt: skip
    """Flat rows, per-coordinate reach (how far each may move each way), weights, groups."""
    x, space, distance = problem.x, problem.space, problem.distance
    shape = tuple(x.shape[1:])
    oracle = Oracle(problem.model, problem.goal, problem.labels, problem.targets, budget, shape,
                    config.chunk)  # fmt: skip
    flat = x.flatten(1)
    hi = space.project(x, torch.full_like(x, 1e30)).flatten(1).clamp(min=0)
    lo = space.project(x, torch.full_like(x, -1e30)).flatten(1).clamp(max=0)
    limit = _BIG * (1 + flat.abs())
    weights = torch.ones_like(flat[0])
    if isinstance(distance, LpDistance) and distance.weights is not None:
        weights = distance.weights.to(flat).flatten()
    declared = space.coordinate_groups
    groups = None if declared is None else [list(map(int, g)) for g in declared]
    if groups is None and flat.shape[1] <= config.coordinate_limit:
        groups = [[j] for j in range(flat.shape[1])]
    if groups is not None and len(groups) > config.coordinate_limit:
        groups = None
    return Ctx(space, distance, oracle, flat, shape, torch.maximum(lo, -limit),
               torch.minimum(hi, limit), weights,
               None if groups is None else [torch.as_tensor(g, device=x.device) for g in groups],
               config, streams)  # fmt: skip


def bisect(ctx: Ctx, owner: Tensor, inner: Tensor, outer: Tensor, steps: int | Tensor) -> Tensor:
    """Bisect between a non-adversarial ``inner`` and an adversarial ``outer`` delta (both
    flat rows); returns the finalised adversarial end. ``steps`` may be per row; a row
    stops when its sample is out of budget."""
    lo = torch.zeros(owner.numel(), device=outer.device, dtype=outer.dtype)
    hi = torch.ones_like(lo)
    best = outer.clone()
    rows = torch.bincount(owner, minlength=ctx.x.shape[0])[owner]
    limit = steps if isinstance(steps, Tensor) else torch.full_like(owner, steps)
    most = int(limit.max()) if limit.numel() else 0
    for k in range(most):
        live = ((ctx.oracle.left()[owner] >= rows) & (limit > k)).nonzero().squeeze(1)
        if not live.numel():
            break
        mid = (lo[live] + hi[live]) / 2
        cand = ctx.final(owner[live], inner[live] + (outer[live] - inner[live]) * mid[:, None])
        adv = ctx.ask(owner[live], cand)
        hi[live] = torch.where(adv, mid, hi[live])
        lo[live] = torch.where(adv, lo[live], mid)
        best[live] = torch.where(adv[:, None], cand, best[live])
    return best


def keep_best(ctx: Ctx, state: SearchState, owner: Tensor, delta: Tensor) -> None:
    """Fold finalised adversarial rows into the per-sample best (largest first, so the
    smallest row of a sample is written last)."""
    flat_best, sizes = state.best_delta.view(ctx.x.shape[0], -1), ctx.norm(delta)
    for r in torch.argsort(sizes, descending=True).tolist():
        i = int(owner[r])
        if float(sizes[r]) <= float(state.best_norm[i]):
            state.best_norm[i], flat_best[i] = sizes[r], delta[r]
