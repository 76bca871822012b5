"""A smooth-L0 run: minimise ``max(loss, 0) + mean_j δ_j² / (δ_j² + σ)`` with a sparsity
threshold that adapts to whether the point flips.

The ε-ball search under L0 (:mod:`mmargin.engine.gradient`: keep the ``ε`` positions of
largest magnitude after each normalised gradient step) picks its support from the
gradient's largest entries. On adversarially trained models the gradient at the clean
input is flat and noisy: the ball walks into supports of dozens of positions, and the
support-shrinking stage (:mod:`mmargin.engine.sparse`), greedy from that flip, stops in a
local minimum far above the fewest positions that flip (measured on the FGSM-trained
tuning CNNs: a median of ~20 pixels where a handful do).

This run follows the idea of σ-zero (Cinà et al. 2024, "σ-zero: Gradient-based
Optimization of ℓ0-norm Adversarial Examples"), in our own terms:

- every coordinate moves at once, by Adam-preconditioned steps of the L∞-normalised
  gradient of the clamped loss plus a smooth count of the positions (``u² / (u² + σ)``
  per position, ``u`` the position's change as a share of the input's largest magnitude:
  scale-free), so the flip is reached through a dense perturbation that the count then
  thins out;
- after each step, every position whose change is below a threshold ``τ`` (the same
  share) is reset to the input: ``τ`` rises while the point flips and falls while it
  does not, so the support shrinks exactly as fast as the flip survives it;
- the step size anneals with a cosine from ``STEP`` to a tenth of it.

Every flip seen is recorded in the shared :class:`~mmargin.engine.state.SearchState`
like the other runs do; each sample's arithmetic is its own (no batch coupling, no
randomness). Its best flip is then shrunk by :mod:`mmargin.engine.sparse` like any other.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmargin.engine.ownsteps import compact, running
from mmargin.engine.problem import Problem
from mmargin.engine.state import SearchState, moved, per_sample, usable
from mmargin.goals import flip_tolerance
from mmargin.protocols import Distance

__all__ = ["smooth_l0_run"]

STEP = 1.0
"""First step size, as a share of the input's largest magnitude."""
SIGMA = 1e-3
"""Width of the smooth count ``u² / (u² + σ)``: a change of √σ ≈ 0.03 counts half."""
TAU = 0.3
"""The threshold's start, as a share of the input's largest magnitude."""
TAU_RATE = 0.01
"""How far the threshold moves per step, as a share of the step size."""
BETAS = (0.9, 0.999)
"""Adam's averaging weights of the gradient and of its square."""


def _count_axis(distance: Distance) -> int | None:
    return getattr(distance, "group_axis", None)


def _position_square(distance: Distance, u: Tensor) -> Tensor:
    """Each position's squared change ``(B, *positions)`` (channels summed when grouped)."""
    group = _count_axis(distance)
    sq = u.square()
    if group is not None and u.shape[group] == 1:  # one channel: the sum is the value
        return sq.squeeze(group)
    return sq if group is None else sq.sum(dim=group)


def _position_size(distance: Distance, u: Tensor) -> Tensor:
    """Each position's largest change ``|u|``, broadcast back onto the coordinates."""
    group = _count_axis(distance)
    size = u.abs()
    if group is None or u.shape[group] == 1:  # one channel: the largest is the value
        return size
    return size.amax(dim=group, keepdim=True).expand_as(u)


def smooth_l0_run(
    problem: Problem,
    steps: int,
    state: SearchState,
    check: bool = False,
    lengths: Tensor | None = None,
) -> None:
    """Spend ``steps`` steps (2 passes each) per searching sample from the clean input,
    recording every flip in ``state`` (samples flagged ``zero_gradients`` sit out). With
    ``check`` the first step flags ``zero_gradients`` and stops the samples whose gradient
    is unusable, as the ε-ball search's first step does
    (:func:`~mmargin.engine.state.usable`)."""
    x, space, distance = problem.x, problem.space, problem.distance
    host = x.device.type == "cpu"  # reading a value back costs nothing
    batch = x.shape[0]
    rows = state.searching()
    own = torch.full((batch,), steps, device=x.device) if lengths is None else lengths.clone()
    own = own.to(device=x.device, dtype=torch.long)[rows]
    rows, own = rows[own > 0], own[own > 0]
    if rows.numel() == 0:
        return
    steps = int(own.max())
    sub = problem.rows(rows)  # the searching samples
    xi = sub.x
    magnitude = xi.flatten(1).abs().amax(dim=1)
    scale = per_sample(torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude)), xi)
    u = torch.zeros_like(xi)  # the change as a share of the input's largest magnitude
    avg, avg_sq = torch.zeros_like(xi), torch.zeros_like(xi)
    tau = torch.full((rows.numel(),), TAU, device=x.device, dtype=x.dtype)
    positions = _position_square(distance, u[:1]).flatten(1).shape[1]
    b1, b2 = BETAS
    lr = torch.full((rows.numel(),), STEP, device=x.device, dtype=torch.float64)
    for k in range(steps):
        keep = running(own, k)
        if keep is not None:  # the samples whose own steps are done leave
            rows, scale, u, avg, avg_sq, tau, lr, own = compact(
                keep, rows, scale, u, avg, avg_sq, tau, lr, own
            )
            sub = sub.rows(keep)
            xi = sub.x
        v = u.clone().requires_grad_(True)
        d = v * scale
        scores = problem.model(xi + d)
        state.queries[rows] += 2
        loss = sub.loss(scores)
        is_adv = sub.flips(scores.detach(), loss.detach())
        dd = d.detach()
        norms = distance.norm(dd)
        better = is_adv & moved(dd, norms, host) & (norms < state.best_norm[rows])
        if bool(better.any()):
            state.record(rows[better], norms[better], dd[better], scores.detach()[better])
        sq = _position_square(distance, v).flatten(1)
        count = (sq / (sq + SIGMA)).sum(dim=1) / positions
        first = check and k == 0
        clear = loss + flip_tolerance(scores)  # the first check needs the loss's gradient
        total = (clear if first else clear.clamp(min=0)) + count
        (grad,) = torch.autograd.grad(total.sum(), v, allow_unused=True)
        if grad is None:
            return
        finite = torch.isfinite(grad.flatten(1).abs().amax(dim=1)) if first else None
        grad = grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # autograd's own tensor
        if finite is not None:  # at the clean input the count's gradient is 0: the loss's
            free = space.free_gradient(xi, dd, grad / scale)
            ok = usable(distance, xi, free, loss.detach(), finite)
            if not bool(ok.all()):  # those samples leave (their pass is counted)
                state.flag("zero_gradients", rows[~ok])
                rows, scale, u, avg, avg_sq, tau, lr, own, grad, is_adv = compact(
                    ok, rows, scale, u, avg, avg_sq, tau, lr, own, grad, is_adv
                )
                sub = sub.rows(ok)
                xi = sub.x
                if rows.numel() == 0:
                    return
        # in place where a tensor is this step's own: the same numbers, fewer buffers
        peak = grad.flatten(1).abs().amax(dim=1).clamp(min=1e-12)
        grad = grad.div_(per_sample(peak, grad))
        avg.lerp_(grad, 1 - b1)
        avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (avg_sq / (1 - b2 ** (k + 1))).sqrt_().add_(1e-8)
        step = (avg * per_sample((lr / (1 - b1 ** (k + 1))).to(u.dtype), u)).div_(denom)
        u = space.project(xi, u.sub_(step).mul_(scale)).div_(scale)
        lr = STEP * (0.1 + 0.9 * (1 + torch.cos(math.pi * k / own.double())) / 2)
        move = (TAU_RATE * lr).to(tau.dtype)
        tau = (tau + torch.where(is_adv, move, -move)).clamp(0.0, 1.0)
        u = torch.where(_position_size(distance, u) < per_sample(tau, u), 0.0, u)
