"""A Lagrangian minimum-norm run: minimise ``‖δ‖ + P(c(δ); ρ, μ)`` for a flip constraint.

The adaptive-ε search (:mod:`mmargin.engine.gradient`) walks the ε-ball's boundary with
normalised gradient steps: on adversarially trained models, whose loss is flat and noisy
near the input, its steps keep spreading the perturbation where the model was trained
to be robust. The augmented-Lagrangian formulation of Rony et al. (2021, "Augmented
Lagrangian Adversarial Attacks", ALMA) holds up there: the distance and a penalty on the
flip constraint are minimised together with RMSProp-preconditioned momentum steps, the
multiplier μ follows the penalty's derivative and the penalty weight ρ grows while the
constraint does not improve. This module is our own implementation of that idea for any
continuous space (its ``project`` keeps the box and masks) and any goal:

- the constraint is the goal's loss (or the pairwise loss toward a chosen class)
  divided by the spread of the top three scores (the difference-of-logits ratio:
  invariant to the scores' scale), negative once the input flips;
- the penalty is the P2 function of Birgin, Castillo and Martínez (2005);
- the raw gradient feeds RMSProp (the space's projection keeps the box and masks);
- the step size is a share of each input's own largest magnitude (scale-free), decays
  geometrically from the step where the sample first flipped.

Every flip seen is recorded in the shared :class:`~mmargin.engine.state.SearchState` like
the other runs do; each sample's arithmetic is its own (no batch coupling, no randomness).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmargin.engine.passes import toward
from mmargin.engine.state import SearchState, per_sample
from mmargin.goals import Goal
from mmargin.protocols import Distance, ModelAdapter, Space

__all__ = ["lagrangian_run"]

LR_INIT = 0.1
"""First step size, as a share of the input's largest magnitude (0.1 of a [0, 1] image)."""
LR_REDUCTION = 0.01
"""The step size ends at this share of the first (geometric decay after the first flip)."""
AVERAGE = 0.9
"""Smoothing of the multiplier, of RMSProp's squared gradients and of the momentum."""
CHECK = 10
"""Steps between checks of the constraint's progress (ρ grows when it stalled)."""
IMPROVE = 0.95
GROW = 1.2


def _p2(c: Tensor, rho: Tensor, mu: Tensor) -> Tensor:
    """The P2 penalty-Lagrangian function of the constraint value ``c`` (≤ 0 wanted)."""
    above = mu * c + mu * rho * c**2 + rho**2 * c**3 / 6
    below = mu * c / (1 - rho * c.clamp(max=0))
    return torch.where(c >= 0, above, below)


def _p2_slope(c: Tensor, rho: Tensor, mu: Tensor) -> Tensor:
    """``∂P2/∂c``: the multiplier's next estimate."""
    above = mu + 2 * mu * rho * c + rho**2 * c**2 / 2
    below = mu / (1 - rho * c.clamp(max=0)) ** 2
    return torch.where(c >= 0, above, below)


def _constraint(loss: Tensor, scores: Tensor) -> Tensor:
    """The loss divided by the spread of the top three scores (top two, or the largest
    magnitude, for fewer classes)."""
    k = min(3, scores.shape[1])
    top = scores.topk(k, dim=1).values
    spread = top[:, 0] - top[:, -1] if k > 1 else top[:, 0].abs()
    return loss / (spread + 1e-8)


def lagrangian_run(
    model: ModelAdapter,
    space: Space,
    distance: Distance,
    goal: Goal,
    x: Tensor,
    labels: Tensor,
    targets: Tensor | None,
    steps: int,
    state: SearchState,
    against: Tensor | None = None,
) -> None:
    """Spend ``steps`` steps (2 passes each) per searching sample, recording every flip in
    ``state``. ``against``: drive the pairwise loss toward these classes instead of the
    goal's loss (the flip criterion stays the goal's)."""
    batch = x.shape[0]
    dead = state.flags.get("zero_gradients")
    rows = torch.arange(batch, device=x.device)
    if dead is not None:
        rows = rows[~dead]
    if rows.numel() == 0 or steps < 1:
        return
    xi, yi = x[rows], labels[rows]
    ti = targets[rows] if targets is not None else None
    ai = against[rows] if against is not None else None
    n = rows.numel()
    delta = torch.zeros_like(xi)
    square = torch.ones_like(xi)
    moment = torch.zeros_like(xi)
    ones = torch.ones(n, device=x.device, dtype=x.dtype)
    mu, rho = ones.clone(), ones.clone()
    magnitude = xi.flatten(1).abs().amax(dim=1)
    lr = LR_INIT * torch.where(magnitude > 0, magnitude, ones)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    first = torch.full((n,), float(steps), device=x.device, dtype=x.dtype)
    previous = ones
    for k in range(steps):
        d = delta.clone().requires_grad_(True)
        scores = model(xi + d)
        loss = goal.loss(scores, yi, ti) if ai is None else toward(scores, yi, ai)
        c = _constraint(loss, scores)
        state.queries[rows] += 2
        if k > 0:
            mu = torch.lerp(mu, _p2_slope(c.detach(), rho, mu), 1 - AVERAGE).clamp(1e-6, 1e12)
        if k > 0 and (k + 1) % CHECK == 0:
            rho = torch.where(found | (c.detach() < IMPROVE * previous), rho, GROW * rho)
            previous = c.detach()
        elif k == 0:
            previous = c.detach()
        is_adv = goal.is_adversarial(scores.detach(), yi, ti)
        norms = distance.norm(d.detach())
        moved = d.detach().flatten(1).abs().amax(dim=1) > 0
        best = state.best_norm[rows]
        better = is_adv & moved & (norms < best)
        if bool(better.any()):
            state.record(rows[better], norms[better], d.detach()[better],
                         scores.detach()[better])  # fmt: skip
        first = torch.where(is_adv & ~found, torch.full_like(first, k), first)
        found |= is_adv
        total = _p2(c, rho, mu) if k == 0 else distance.norm(d) + _p2(c, rho, mu)
        (grad,) = torch.autograd.grad(total.sum(), d, allow_unused=True)
        if grad is None:
            return
        # the raw gradient, as ALMA takes it: RMSProp's statistics include the components
        # the box blocks (zeroing them there lost ground on the robust tuning model);
        # the projection below keeps the box and the frozen coordinates
        grad = torch.nan_to_num(grad)
        span = (steps - first).clamp(min=1)
        step = lr * LR_REDUCTION ** ((k - first).clamp(min=0) / span)
        square.mul_(AVERAGE).addcmul_(grad, grad, value=1 - AVERAGE)
        moment.mul_(AVERAGE).addcdiv_(grad, square.sqrt().add_(1e-8))
        delta = space.project(xi, delta - moment * per_sample(step, moment))
