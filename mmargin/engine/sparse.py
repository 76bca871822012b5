"""The L0 finishing stage: shrink the support of an adversarial perturbation.

A search under L0 (``distance.p == 0``) ends on a flip whose changed positions (coordinates,
or pixels when the distance has a ``group_axis``) are more than it needs, often each moved
only part of the way. This stage starts from that verified flip and, one sample at a time
(so a result never depends on its batch), repeats within the passes it is given:

1. one forward + backward pass at the current flip: the loss gradient;
2. *push* every position as far as the space lets it go against the gradient (the L0
   count does not see the size of a change, so a changed position may as well move all
   the way), and rank positions by their first-order share of the loss, ``-∇loss·δ``;
3. find by bisection (one forward pass per probe) the fewest top-ranked positions of
   *all* that still flip — fewer than the flip has: a smaller support, possibly a
   different one (a swap) — then, failing that, the fewest of the flip's own positions;
4. failing both, restore each changed position alone, least share first (one pass each);
   none flips → a local minimum: a few gradient steps on one position fewer (top
   positions of a running gradient sum, pushed to the bound) look for a flip there; none
   → the stage ends.

Every candidate goes through the space's ``project`` (mask, box) and ``finalize`` and is kept
only when a forward pass on it saw the flip; the driver re-verifies the result.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmargin.goals import Goal
from mmargin.protocols import Distance, ModelAdapter, Space

SPARSE_SHARE = 0.4
"""The share of a sample's budget set aside for this stage when the distance is L0."""
PATIENCE = 40
"""Steps a local minimum is searched for a flip on one position fewer before the stage ends."""
MOMENTUM = 0.75
"""Weight of the previous gradients in that search's running sum."""
FAR = 1e6
"""A step long enough to reach the box's bound on any coordinate the space lets move."""


def sparse_passes(budget: int) -> int:
    """Passes per sample reserved for the L0 finishing stage out of ``budget``."""
    return int(budget * SPARSE_SHARE)


def sparse_finish(
    model: ModelAdapter, space: Space, distance: Distance, goal: Goal, x: Tensor,
    delta: Tensor, labels: Tensor, targets: Tensor | None, passes: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Shrink the support of each verified adversarial ``x + delta`` within ``passes[i]``
    forward + backward passes for sample ``i``. Returns the new perturbations (finalised,
    each a flip a pass has seen, or the input one) and the passes each sample used."""
    out = delta.clone()
    used = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for i in range(x.shape[0]):
        t = None if targets is None else targets[i : i + 1]
        d, n = _shrink(model, space, distance, goal, x[i : i + 1], delta[i : i + 1],
                       labels[i : i + 1], t, int(passes[i]))  # fmt: skip
        out[i : i + 1] = d
        used[i] = n
    return out, used


def positions(distance: Distance, delta: Tensor) -> Tensor:
    """Where ``delta`` changes the input, in the distance's units: ``(B, *positions)``."""
    moved = delta != 0
    group = getattr(distance, "group_axis", None)
    return moved if group is None else moved.any(dim=group)


def _expand(distance: Distance, where: Tensor, like: Tensor) -> Tensor:
    """A per-position mask broadcast back onto the coordinates of ``like``."""
    group = getattr(distance, "group_axis", None)
    return where if group is None else where.unsqueeze(group).expand_as(like)


def _shares(distance: Distance, grad: Tensor, delta: Tensor) -> Tensor:
    """Each position's first-order share of the loss decrease, ``-∇loss·δ`` summed over it."""
    share = -(grad * delta)
    group = getattr(distance, "group_axis", None)
    return share if group is None else share.sum(dim=group)


class _Probe:
    """Forward passes on candidates for one sample, counted against what it has left."""

    def __init__(self, model: ModelAdapter, space: Space, goal: Goal, x: Tensor,
                 label: Tensor, target: Tensor | None, left: int) -> None:  # fmt: skip
        self.model, self.space, self.goal = model, space, goal
        self.x, self.label, self.target, self.left = x, label, target, left

    def flips(self, delta: Tensor) -> tuple[Tensor, bool]:
        """The finalised candidate ``x + delta`` (as a perturbation) and whether it flips."""
        candidate = self.space.finalize(self.x, self.x + self.space.project(self.x, delta))
        self.left -= 1
        with torch.no_grad():
            scores = self.model(candidate)
        ok = bool(self.goal.is_adversarial(scores, self.label, self.target)[0])
        return candidate - self.x, ok and bool(torch.isfinite(scores).all())

    def gradient(self, delta: Tensor) -> tuple[Tensor, bool]:
        """The loss gradient at ``x + delta`` and whether it flips. Not the space's free
        gradient: a coordinate already at its bound keeps its share (``project`` holds the
        box and the mask when positions are pushed)."""
        d = delta.clone().requires_grad_(True)
        with torch.enable_grad():
            scores = self.model(self.x + d)
            loss = self.goal.loss(scores, self.label, self.target)
            (grad,) = torch.autograd.grad(loss.sum(), d, allow_unused=True)
        self.left -= 2
        grad = torch.zeros_like(delta) if grad is None else torch.nan_to_num(grad, 0.0, 0.0, 0.0)
        ok = bool(self.goal.is_adversarial(scores.detach(), self.label, self.target)[0])
        return grad, ok


def _keep(distance: Distance, delta: Tensor, order: Tensor, k: int) -> Tensor:
    """``delta`` on the positions ``order[:k]`` (flat indices) only, clean elsewhere."""
    shape = positions(distance, delta).shape
    keep = torch.zeros(shape, dtype=torch.bool, device=delta.device).flatten()
    keep[order[:k]] = True
    return delta * _expand(distance, keep.view(shape), delta)


def _shrink(
    model: ModelAdapter, space: Space, distance: Distance, goal: Goal, x: Tensor,
    delta: Tensor, label: Tensor, target: Tensor | None, left: int,
) -> tuple[Tensor, int]:  # fmt: skip
    """The stage for one sample (``x`` is ``(1, ...)``); returns its flip and passes used."""
    probe = _Probe(model, space, goal, x, label, target, left)
    best = delta
    while probe.left >= 3:
        moved = positions(distance, best)
        count = int(moved.sum())
        if count <= 1:
            break
        grad, ok = probe.gradient(best)
        if not ok:  # the flip we hold always flipped; a model that disagrees ends the stage
            break
        # every position pushed to the bound against the gradient (where it has none, as is)
        pushed = space.project(x, torch.where(grad != 0, -grad.sign() * FAR, best))
        gain = _shares(distance, grad, pushed).flatten()
        found = None
        for pool in (None, moved.flatten()):  # the best positions of all, then of the flip's
            score = gain if pool is None else torch.where(pool, gain, -torch.inf)
            order = score.argsort(descending=True, stable=True)
            lo, hi = 0, count  # the fewest top positions that flip, by bisection
            while hi - lo > 1 and probe.left >= 1:
                mid = (lo + hi) // 2
                candidate, flips = probe.flips(_keep(distance, pushed, order, mid))
                if flips and _count(distance, candidate) < count:
                    hi, found = mid, candidate
                else:
                    lo = mid
            if found is not None:
                break
        if found is None:  # no top set flips: restore one position alone, least gain first
            order = torch.where(moved.flatten(), gain, torch.inf).argsort(stable=True)
            for j in range(count):
                if probe.left < 1:
                    break
                keep = torch.cat([order[:j], order[j + 1 : count]])
                candidate, flips = probe.flips(_keep(distance, best, keep, count - 1))
                if flips and _count(distance, candidate) < count:
                    found = candidate
                    break
        if found is None:
            found = _descend(probe, distance, best, count - 1)
        if found is None:
            break
        best = found
    return best, left - probe.left


def _descend(probe: _Probe, distance: Distance, start: Tensor, k: int) -> Tensor | None:
    """Search for a flip on ``k`` positions: from the top ``k`` positions of ``start``,
    each step takes the gradient at the point (its forward pass says whether it flips),
    adds it to a running sum (momentum :data:`MOMENTUM`) and moves to the top ``k``
    positions by that sum, pushed to the bound against it. At most :data:`PATIENCE` steps;
    the first flip with fewer positions than ``start`` is returned, else ``None``."""
    space, x = probe.space, probe.x
    total = torch.zeros_like(start)
    point = start
    for _ in range(PATIENCE):
        if probe.left < 2:
            break
        grad, flips = probe.gradient(point)
        if flips and _count(distance, point) <= k:
            return point
        scale = grad.abs().amax().clamp(min=1e-30)
        total = MOMENTUM * total + grad / scale
        pushed = space.project(x, torch.where(total != 0, -total.sign() * FAR, point))
        order = _shares(distance, total, pushed).flatten().argsort(descending=True, stable=True)
        point = space.finalize(x, x + space.project(x, _keep(distance, pushed, order, k))) - x
    return None


def _count(distance: Distance, delta: Tensor) -> int:
    """The number of changed positions of a single perturbation ``(1, ...)``."""
    return int(positions(distance, delta).sum())
