"""The L0 finishing stage's arithmetic (:mod:`mmargin.engine.sparse`): what it computes at
and between its model passes, with no per-sample bookkeeping.

The batched passes themselves (:func:`forward_pass` on candidates, :func:`gradient_pass`
for loss gradients) and their replies; positions and support sizes in the distance's units
(channels of a pixel count once when the distance groups them); each position's
first-order share of the loss decrease (:func:`shares`); a perturbation kept on some
positions only (:func:`within`); a descent step for every descending row at once
(:func:`descent_steps`); and the stable row orders the bisections and restores rank by
(:func:`stable_order`, :func:`ranks_of`). Every function works row by row: a row's numbers
are the same whatever else shares the batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mmargin.engine.problem import Problem
from mmargin.protocols import Distance, Space
from mmargin.ranking import top_stable

__all__ = [
    "FAR",
    "MOMENTUM",
    "Replies",
    "descent_steps",
    "forward_pass",
    "gradient_pass",
    "positions",
    "ranks_of",
    "shares",
    "stable_order",
    "support_size",
    "within",
]

MOMENTUM = 0.75
"""Weight of the previous gradients in that search's running sum."""
FAR = 1e6
"""A step long enough to reach the box's bound on any coordinate the space lets move."""
Replies = tuple[Tensor, list[bool], list[int]]
"""A batched pass's replies: the values ``(B, ...)``, per row whether it flipped and how many
positions it changes."""


def stable_order(values: Tensor, descending: bool) -> Tensor:
    """Each row's ``argsort(stable=True)`` (2-D ``values``), from numpy's stable sort on CPU
    without NaN (the same permutation: a stable sort's order is unique)."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        array = values.numpy()
        if not np.isnan(array).any():
            key = np.negative(array) if descending else array
            return torch.from_numpy(np.argsort(key, axis=1, kind="stable"))
    return values.argsort(dim=1, descending=descending, stable=True)


def ranks_of(order: Tensor) -> Tensor:
    """Each row's inverse permutation of ``order`` (2-D): every position's place."""
    rank = torch.empty_like(order)
    places = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return rank.scatter_(1, order, places)


def descent_steps(
    space: Space, distance: Distance, x: Tensor, grad: Tensor, point: Tensor, total: Tensor,
    k: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """One step of :func:`_descend` for every row: the running sum ``total`` takes the
    gradient scaled by its largest entry (momentum :data:`MOMENTUM`), and the next point is
    the top ``k`` positions by that sum, pushed to the bound against it. Row by row the
    arithmetic of a sample alone (elementwise, a per-row maximum, the first ``k`` of a
    stable descending sort per row: :func:`~mmargin.ranking.top_stable`)."""
    shape = (-1,) + (1,) * (grad.dim() - 1)
    scale = grad.flatten(1).abs().amax(dim=1).clamp(min=1e-30).view(shape)
    total = MOMENTUM * total + grad / scale
    pushed = space.project(x, torch.where(total != 0, -total.sign() * FAR, point))
    keep = top_stable(shares(distance, total, pushed).flatten(1), k)
    nxt = space.finalize(x, x + space.project(x, within(distance, pushed, keep))) - x
    return nxt, total


def forward_pass(problem: Problem, delta: Tensor) -> Replies:
    """One batched forward pass on the finalised candidates ``problem.x + delta``."""
    x, space = problem.x, problem.space
    candidate = space.finalize(x, x + space.project(x, delta))
    with torch.no_grad():
        scores = problem.model(candidate)
    ok = problem.is_adversarial(scores) & torch.isfinite(scores).flatten(1).all(1)
    moved = candidate - x
    return _replies(problem.distance, moved, moved, ok)


def gradient_pass(problem: Problem, delta: Tensor) -> Replies:
    """The loss gradients at ``problem.x + delta`` (one batched forward + backward pass). Not the
    space's free gradient: a coordinate already at its bound keeps its share (``project``
    holds the box and the mask when positions are pushed)."""
    d = delta.clone().requires_grad_(True)
    with torch.enable_grad():
        scores = problem.model(problem.x + d)
        loss = problem.loss(scores)
        (grad,) = torch.autograd.grad(loss.sum(), d, allow_unused=True)
    grad = torch.zeros_like(delta) if grad is None else torch.nan_to_num(grad, 0.0, 0.0, 0.0)
    ok = problem.flips(scores.detach(), loss.detach())
    return _replies(problem.distance, grad, delta, ok)


def _replies(distance: Distance, values: Tensor, point: Tensor, ok: Tensor) -> Replies:
    """The rows' ``values``, whether each flipped and the positions ``point`` changes there."""
    counts = positions(distance, point).flatten(1).sum(1).tolist()
    return values, [bool(f) for f in ok.tolist()], [int(c) for c in counts]


def positions(distance: Distance, delta: Tensor) -> Tensor:
    """Where ``delta`` changes the input, in the distance's units: ``(B, *positions)``."""
    moved = delta != 0
    group = getattr(distance, "group_axis", None)
    return moved if group is None else moved.any(dim=group)


def support_size(distance: Distance, delta: Tensor) -> Tensor:
    """How many positions each perturbation of ``delta`` changes: ``(B,)``."""
    return positions(distance, delta).flatten(1).sum(1)


def _expand(distance: Distance, where: Tensor, like: Tensor) -> Tensor:
    """A per-position mask broadcast back onto the coordinates of ``like``."""
    group = getattr(distance, "group_axis", None)
    return where if group is None else where.unsqueeze(group).expand_as(like)


def shares(distance: Distance, grad: Tensor, delta: Tensor) -> Tensor:
    """Each position's first-order share of the loss decrease, ``-∇loss·δ`` summed over it."""
    share = -(grad * delta)
    group = getattr(distance, "group_axis", None)
    return share if group is None else share.sum(dim=group)


def within(distance: Distance, delta: Tensor, keep: Tensor) -> Tensor:
    """``delta`` on the flat positions where ``keep`` holds only, clean elsewhere."""
    group = getattr(distance, "group_axis", None)
    shape = list(delta.shape)
    if group is not None:  # the shape of ``positions(distance, delta)``, not computed
        del shape[group]
    return delta * _expand(distance, keep.view(shape), delta)
