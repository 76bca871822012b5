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
  geometrically from the step where the sample first flipped, at about the same rate per step
  whatever the run's length when it starts from the clean input (:func:`decay`);
- on L1 the distance is not stepped through its subgradient (ALMA's way: the sign of
  every coordinate that moved, which keeps each near-useless coordinate jittering around
  0 at the step size and leaves the flips dense) but through its proximal map: the
  penalty's preconditioned step, then soft-thresholding of each coordinate by the same
  preconditioned step times the coordinate's L1 weight. With the box projection after it
  this is the exact proximal step of ``‖δ‖₁`` plus the box (both separable), so a
  coordinate whose penalty gradient cannot pay its L1 cost lands exactly on 0 (sparse
  flips; on a linear model in a box it reaches the closed-form minimum, see
  ``tests/test_lagrangian_l1.py``).

How many steps the run gets and where it goes is the search's choice per distance
(:mod:`mmargin.engine.lagrangian_plan`): on L2 ``GradientConfig.lagrangian`` of the steps,
after the first ε-ball run and from the clean input (it reaches flips the ε-ball walk
misses; the samples without a flip after 8 steps take growing steps until they flip,
:func:`~mmargin.engine.lagrangian_plan.lagrangian_hasten`, in the long plan's second run
too); on L1 ``GradientConfig.lagrangian_l1``, after the class probes and from the best
flip so far (a sparse walk along the boundary before the refinements: from the clean
input, every share tried lost on the robust tuning models); none on L∞ / L0.

A second L1 run from the clean input *kept alongside* the ε-ball runs (not replacing the
warm one; its steps taken from the plan's other legs) lost too (session 9, 200 images,
pooled optimality against the peers and every run, mean over 990 / 1000 / 1010 passes,
tune_cnn_fgsm / tune_cnn_fgsm_short, from 0.812 / 0.923): ALMA's dense subgradient on 25 %
of the steps before the first run +0.008 / −0.026, on 10 % +0.006 / −0.010, on 25 % after
the first run +0.001 / −0.028; the proximal step on 25 % before the first run (1000 only)
−0.004 / −0.037. A larger ``lagrangian_l1`` (0.22, five budgets 980–1020) moved nothing
(+0.002 / −0.001), a shorter first ε-ball run (``first_share`` 0.3) lost (−0.010 /
−0.002). The robust CNNs' L1 results are chaotic in the plan: 990 or 1010
passes instead of 1000 move 78–85 % of tune_cnn_fgsm's samples (56–58 % of
tune_cnn_fgsm_short's) by more than 3 % either way and one 200-image run's optimality by
up to ±0.017, so a plan change must be measured over several budgets.

Every flip seen is recorded in the shared :class:`~mmargin.engine.state.SearchState` like
the other runs do; each sample's arithmetic is its own (no batch coupling, no randomness).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmargin.distances import plain_l2
from mmargin.engine.ownsteps import compact, running
from mmargin.engine.problem import Problem
from mmargin.engine.state import SearchState, moved, per_sample
from mmargin.protocols import Distance

__all__ = ["LR_INIT", "decay", "l1_weights", "lagrangian_run", "norm_gradient"]

LR_INIT = 0.1
"""First step size, as a share of the input's largest magnitude (0.1 of a [0, 1] image)."""
LR_REDUCTION = 0.01
"""A run of :data:`HORIZON` steps or more ends at this share of its first step size
(geometric decay from the step of its first flip)."""
HORIZON = 500
"""The length over which a run from the clean input decays by :data:`LR_REDUCTION`: a
shorter run decays at about that same rate per step until its :data:`TAIL` (to 0.01 **
(122 / 500) ≈ 0.33 for each of the two 122-step runs of a 1000-pass L2 search; 149 steps
when these figures were measured) — ALMA's own schedule at
its 1000-pass budget (500 steps). Decaying by the full 0.01 over a short run's length
freezes it near its first flip, before it has walked along the boundary: measured on the
robust tuning models, 1000 passes, L2, 200 images, pooled with the peers (without the
tail), 0.970 → 0.978 (FGSM-RS 2 epochs) and 0.961 → 0.964 (8 epochs). A run warm-started
from a flip (L1) refines that flip and decays over its own length (the per-step rate lost
on the 8-epoch model's L1: 0.973 → 0.968)."""
TAIL = 0.2
"""Over this last share of a run that decays slower than :data:`LR_REDUCTION` (see
:data:`HORIZON`) the step size falls the rest of the way to :data:`LR_REDUCTION`: the run
still explores at its per-step rate and ends converged on the flip it reached. Measured
(1000 passes, L2, two disjoint 200-image sets, pooled with the peers): tune_cnn_fgsm 0.964
→ 0.967 and 0.961 → 0.965 over the horizon alone, tune_cnn_fgsm_short 0.978 → 0.979 and
0.986 → 0.986."""
AVERAGE = 0.9
"""Smoothing of the multiplier, of RMSProp's squared gradients and of the momentum."""
CHECK = 10
"""Steps between checks of the constraint's progress (ρ grows when it stalled)."""
IMPROVE = 0.95
GROW = 1.2


def decay(steps: int, clean: bool) -> float:
    """The share of its first step size a run of ``steps`` steps decays to before its
    :data:`TAIL` (and ends with, if that is :data:`LR_REDUCTION`): from the clean
    input (``clean``) the decay rate per step of a :data:`HORIZON`-step run, so shorter runs
    decay less; warm-started, :data:`LR_REDUCTION` over the run's own length."""
    if not clean or steps >= HORIZON:
        return LR_REDUCTION
    return float(LR_REDUCTION ** (steps / HORIZON))


def _order(steps: int, forks: tuple[int, ...], fork_steps: int) -> list[tuple[int, int]]:
    """The run's steps in order, ``(k, -1)`` for step ``k`` of the run itself and ``(k, j)``
    for step ``j`` of the tail forked off before step ``k`` (``k`` in ``forks``)."""
    out: list[tuple[int, int]] = []
    for k in range(steps):
        if k in forks and fork_steps > 0:
            out.extend((k, j) for j in range(fork_steps))
        out.append((k, -1))
    return out


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


def norm_gradient(delta: Tensor, norms: Tensor) -> Tensor:
    """The gradient of the plain L2 norms ``norms`` of the rows of ``delta``: ``δ / ‖δ‖``,
    0 on a row whose norm is 0 — autograd's own formula for ``linalg.vector_norm`` (its
    incoming gradient, 1 here, multiplies nothing away), so adding it to the gradient of the
    rest of the objective gives the bits autograd gives for the sum (two addends: the order
    does not matter; ``tests/test_lagrangian_norm.py``)."""
    flat = delta.flatten(1)
    scale = norms.unsqueeze(1)
    out = flat / scale
    zero = norms == 0
    if bool(zero.any()):
        out.masked_fill_(zero.unsqueeze(1), 0)
    return out.view_as(delta)


def l1_weights(distance: Distance, like: Tensor) -> Tensor:
    """Each coordinate's cost per unit of movement under the L1 ``distance`` (its weight:
    1 unweighted), read off the norm's gradient at a point where every coordinate moved."""
    probe = torch.ones_like(like[:1]).requires_grad_(True)
    (weights,) = torch.autograd.grad(distance.norm(probe).sum(), probe)
    return weights.detach()


def _constraint(loss: Tensor, scores: Tensor) -> Tensor:
    """The loss divided by the spread of the top three scores; with fewer classes, by the
    scores' largest magnitude (the spread of two scores is the margin itself, which would
    leave the constraint at ±1 everywhere, without a gradient)."""
    if scores.shape[1] >= 3:
        top = scores.topk(3, dim=1).values
        spread = top[:, 0] - top[:, -1]
    else:
        spread = scores.abs().amax(dim=1)
    return loss / (spread + 1e-8)


def lagrangian_run(
    problem: Problem,
    steps: int,
    state: SearchState,
    against: Tensor | None = None,
    start: Tensor | None = None,
    only: Tensor | None = None,
    lr_init: float = LR_INIT,
    lengths: Tensor | None = None,
    hasten: tuple[int, float] | None = None,
    forks: tuple[int, ...] = (),
    fork_steps: int = 0,
) -> None:
    """Spend ``steps`` steps (2 passes each) per searching sample, recording every flip in
    ``state``. ``against``: drive the pairwise loss toward these classes instead of the
    goal's loss (the flip criterion stays the goal's). ``start``: the perturbation to
    start from (the best flip so far, say) instead of the clean input. ``only``: run these
    samples (a boolean mask) and leave the others untouched. ``lr_init``: the first step
    size, as a share of each input's largest magnitude. ``lengths``: per sample, how many of
    the ``steps`` it takes (its run decays over its own length, as if run alone for
    exactly those steps); a sample leaves the batch when its steps are done, so samples of
    different lengths share one batched run (:mod:`mmargin.engine.leftover`). ``hasten``:
    ``(after, factor)``, from step ``after`` (0-based) on, each sample that has not flipped
    yet has its RMSProp statistic multiplied by ``factor`` per step
    (:func:`~mmargin.engine.lagrangian_plan.lagrangian_hasten`); a sample's own flips
    decide, so it runs as it would alone. ``forks``: before each of these steps (0-based)
    the run forks off a tail of ``fork_steps`` steps, run on a copy of its iterate and
    statistics, whose step size falls geometrically from the run's own there to
    :data:`LR_REDUCTION` of its first, recording its flips; the run then goes on from where
    it forked, bit for bit as without the fork (a tail is another converged draw of the
    run's walk: :func:`~mmargin.engine.lagrangian_plan.second_forks`); every fork step
    costs 2 passes. Not with ``lengths``."""
    x, space, distance = problem.x, problem.space, problem.distance
    rows = state.searching(only)
    if rows.numel() == 0 or steps < 1:
        return
    sub = problem.rows(rows)  # the searching samples
    xi = sub.x
    ai = against[rows] if against is not None else None
    n = rows.numel()
    delta = torch.zeros_like(xi) if start is None else start[rows].clone()
    square = torch.ones_like(xi)
    moment = torch.zeros_like(xi)
    ones = torch.ones(n, device=x.device, dtype=x.dtype)
    mu, rho = ones.clone(), ones.clone()
    magnitude = xi.flatten(1).abs().amax(dim=1)
    lr = lr_init * torch.where(magnitude > 0, magnitude, ones)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    own = lengths[rows] if lengths is not None else None
    previous = ones
    reduction: float | Tensor
    if own is None:
        first = torch.full((n,), float(steps), device=x.device, dtype=x.dtype)
        reduction = decay(steps, start is None)
    else:  # each sample decays over its own length
        first = own.to(x.dtype)
        rates = [decay(int(m), start is None) for m in own.tolist()]
        reduction = torch.tensor(rates, device=x.device, dtype=x.dtype)
    # L1: the distance's proximal step (soft-thresholding) instead of its subgradient
    weights = l1_weights(distance, xi) if distance.p == 1.0 else None
    # plain L2: the distance's gradient added by hand (:func:`norm_gradient`), not through
    # a norm node of the graph (its backward, ~70 µs a step at batch 99 on CPU, is ~3 % of
    # the step's own work outside the model on tune_cnn_bn)
    pull = plain_l2(distance)
    host = x.device.type == "cpu"  # reading a value back costs nothing
    spent = 0  # steps every row of ``rows`` took that ``state.queries`` has not counted yet
    try:
        saved: tuple[Tensor, ...] | None = None
        for k, j in _order(steps, forks if own is None else (), fork_steps):
            if j == 0:  # a fork: its own copy of the run, given back after its tail
                saved = (delta.clone(), square.clone(), moment.clone(), mu, rho, found.clone(),
                         first.clone(), previous)  # fmt: skip
            # some samples' own steps are done: they leave the batch (.ownsteps)
            if own is not None and (keep := running(own, k)) is not None:
                if not bool(keep.any()):
                    return
                state.queries[rows] += 2 * spent
                spent = 0
                rows, delta, square, moment, mu, rho, lr, found, first, previous, own = compact(
                    keep, rows, delta, square, moment, mu, rho, lr, found, first, previous, own
                )
                sub = sub.rows(keep)
                xi = sub.x
                reduction = reduction[keep] if isinstance(reduction, Tensor) else reduction
                ai = ai[keep] if ai is not None else None
            # ``delta`` is the loop's own tensor (a fresh one after every step): no copy
            d = delta.requires_grad_(True)
            delta = d.detach()
            scores = problem.model(xi + d)
            loss = sub.loss(scores, ai)
            c = _constraint(loss, scores)
            spent += 1  # counted in ``state.queries`` when the rows change or the run ends
            if k > 0:
                mu = torch.lerp(mu, _p2_slope(c.detach(), rho, mu), 1 - AVERAGE).clamp(1e-6, 1e12)
            if k > 0 and (k + 1) % CHECK == 0 and j < 0:
                rho = torch.where(found | (c.detach() < IMPROVE * previous), rho, GROW * rho)
                previous = c.detach()
            elif k == 0:
                previous = c.detach()
            plain = scores.detach()
            # the goal's test, read off its own loss where the step computed that loss
            is_adv = sub.flips(plain, loss.detach()) if ai is None else sub.is_adversarial(plain)
            smooth = k == 0 or weights is not None  # the L1 distance is stepped by its prox
            by_hand = pull and not smooth
            # the norm once: its value and gradient (by hand: the value, the gradient below)
            size = None if smooth or by_hand else distance.norm(d)
            norms = distance.norm(delta) if size is None else size.detach()
            best = state.best_norm[rows]
            better = is_adv & (norms < best) & moved(delta, norms, host)
            hit = better.nonzero().squeeze(1)
            if hit.numel():
                state.record(rows[hit], norms[hit], delta[hit], plain[hit])
            first.masked_fill_(is_adv & ~found, k)  # the loop's own tensor
            found |= is_adv
            total = _p2(c, rho, mu) if size is None else size + _p2(c, rho, mu)
            grad = None
            if not by_hand or total.requires_grad:
                (grad,) = torch.autograd.grad(total.sum(), d, allow_unused=True)
            if by_hand:  # what autograd adds for the norm term, in the same bits
                term = norm_gradient(delta, norms)
                grad = term if grad is None else grad + term
            if grad is None:
                return
            # the raw gradient, as ALMA takes it: RMSProp's statistics include the components
            # the box blocks (zeroing them there lost ground on the robust tuning model);
            # the projection below keeps the box and the frozen coordinates; on CPU a single
            # sum tells whether there is anything to clean (as in the ε-ball step)
            if not host or not math.isfinite(float(grad.sum())):
                grad = torch.nan_to_num(grad)
            span = ((steps if own is None else own) - first).clamp(min=1)
            t = (k - first).clamp(min=0) / span  # 0 at the first flip, 1 at the end
            step = lr * reduction**t
            # the tail: down to LR_REDUCTION by the end (a factor 1 where already there)
            if isinstance(reduction, Tensor) or reduction > LR_REDUCTION:
                step = step * (LR_REDUCTION / reduction) ** ((t - (1 - TAIL)).clamp(min=0) / TAIL)
            if j >= 0:  # a fork's tail: from the run's step size down to LR_REDUCTION of lr
                share = (j + 1) / fork_steps
                step = step ** (1 - share) * (lr * LR_REDUCTION) ** share
            square.mul_(AVERAGE).addcmul_(grad, grad, value=1 - AVERAGE)
            if hasten is not None and k >= hasten[0] and (not host or not bool(found.all())):
                # no flip yet: the warm-up statistic shrinks, so the sample's steps grow (a
                # flipped row is multiplied by 1, exactly: the read-back only saves the call,
                # and off the CPU it is skipped like the other reads)
                square.mul_(per_sample(torch.where(found, 1.0, hasten[1]), square))
            root = square.sqrt().add_(1e-8)  # RMSProp's denominator, also the prox's
            moment.mul_(AVERAGE).addcdiv_(grad, root)
            scaled = per_sample(step, moment)
            delta = delta - moment * scaled
            if weights is not None and k > 0:  # soft-thresholding: L1's proximal map
                cut = scaled * weights / root
                delta = (delta.abs() - cut).clamp_(min=0).mul_(delta.sign())
            delta = space.project(xi, delta)
            if j == fork_steps - 1 and saved is not None:  # back to the run where it forked
                delta, square, moment, mu, rho, found, first, previous = saved
                saved = None
    finally:
        state.queries[rows] += 2 * spent
