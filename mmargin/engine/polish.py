"""An L1 polish of the best flip: the minimal L1 flip of the model's linearisation there.

The ε-ball runs and the proximal Lagrangian run end near the boundary but, on L1, not at
its sparsest point: their steps follow the gradient's direction (dense) and only the L1
ball's projection or the soft threshold makes them sparse. On the linearisation of the
pairwise loss ``z_y − z_c`` at the best flip (``c`` its class), the minimal L1 flip in the
box has a closed form: a fractional knapsack from the clean input, which moves the
coordinates with the largest gain per unit of L1 cost (``|∂loss/∂xᵢ| / wᵢ``) as far as the
box lets them, the last one only as far as needed (FAB's and the MILP oracle's view of the
minimal L1 flip of a linear model, our own implementation).

The polish opens with a bisection on the best flip's scale toward the clean input (forward
passes only: :data:`SHRINK`), then each step is one forward + backward pass at a candidate
on the segment from the best flip toward that knapsack point (a little past the linearised
boundary): a flip that is smaller is kept (recorded like any other run's) and becomes the
point linearised next; otherwise the sample halves its step along the segment and aims a
little further past the boundary. Every candidate is checked by the model, and only a
smaller verified flip is recorded, so the polish never makes a result worse; on a linear
model it reaches the closed-form minimum in one step (``tests/test_polish_l1.py``).

It runs on the steps a sample's runs left unspent (:mod:`mmargin.engine.leftover`), never
on steps taken from the planned runs. A sample whose flip is already a fixed point of the
polish's linearisation (after the bisection, the knapsack flip linearised there is within
:data:`OVERSHOOT` of the best flip: no first-order gain beyond the overshoot the polish
aims past) leaves after that first linearisation, its steps left unspent for the
exchange rounds that follow (:mod:`mmargin.engine.exchange`), which walk from other
supports and starts. Measured at 1000 passes (L1, every polish with the state before and
after it): of 271 polishes on ``tune_digits_mlp`` (300 MILP points) and 187 on
``tune_mlp`` (200 images), none with that ratio at or above 1 − OVERSHOOT gained (217 and
16 polishes), while 29 of 46 and 119 of 149 in [0.99, 0.999) did. digits-test-0499 (found
1.1402 × exact, support {8, 38} against the exact {6, 38}, 16 unspent steps: the ``next``
round 6, the polish the other 10 without a gain) keeps 6 steps for the first ``drop``
round, which leaves out coordinate 8 and reaches 1.0006 × exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmargin.engine.finish import bisect_scale
from mmargin.engine.ownsteps import compact, running
from mmargin.engine.problem import Problem
from mmargin.engine.state import SearchState, moved, per_sample
from mmargin.protocols import Space

__all__ = ["POLISH_MAX_STEPS", "POLISH_MIN_STEPS", "knapsack", "polish_run", "shrink"]

OVERSHOOT = 1e-3
"""How far past the linearised boundary the first knapsack point aims, as a share of the
linearised clean loss; doubled after each candidate that did not flip."""
SHRINK = 6
"""Forward passes (3 steps' worth) of the scale bisection that opens the polish: on the
robust tuning models the best L1 flip often lies well inside the adversarial region, and
the knapsack linearised at the boundary point does better (paired, 100 images @1000,
against the polish without it: geometric mean 0.9992 on both robust models, 15 / 4 and
12 / 7 samples better / worse; mnist_cnn 0.9999)."""
POLISH_MIN_STEPS = 1 + SHRINK // 2
"""The fewest steps a polish runs in: the bisection and one linearisation."""
POLISH_MAX_STEPS = 16
"""The most steps a polish runs: past a dozen knapsack steps its step along the segment
has halved on every miss, and on a cheap model the per-step sort costs more than the
model. Measured on the tuning models at 1000 passes, capped at 16 against uncapped: the
same flips on digits_mlp (50 MILP points), mnist_cnn and tune_cnn_fgsm (100 images
each), and the digits search took 1.27 s instead of 2.02 s."""
FAR = 1e6
"""Beyond any box: :meth:`Space.project` of a step this long gives the room to the bound."""
PREFIX = 64
"""The knapsack's partial ranking: how many of a row's best coordinates it ranks first
(an L1 flip of the engine moves a few dozen of 784 pixels)."""


def knapsack(room: Tensor, grad: Tensor, weights: Tensor, need: Tensor) -> Tensor:
    """The smallest weighted-L1 perturbation (flattened ``(B, D)``) whose linear gain
    ``−grad · δ`` reaches ``need`` (``(B,)``), each coordinate moving against its gradient
    by at most ``room`` (``≥ 0``): the fractional knapsack, best gain per unit cost first.
    Rows that cannot reach ``need`` move every coordinate its whole room; rows with
    ``need ≤ 0`` do not move.

    Only the coordinates that move are ranked: the :data:`PREFIX` best first (a partial
    ranking, ``topk``: a full sort of a 784-pixel row costs ~4× as much on CPU), and a row
    whose prefix does not reach ``need`` is ranked whole. The coordinates after the prefix
    of a row it reaches move 0 either way (the better ones already give ``need``), so the
    result is the full ranking's, bit for bit (up to the order of exactly tied ratios)."""
    gain = grad.abs() * room  # the most each coordinate can give
    ratio = grad.abs() / weights
    want = need.clamp(min=0).unsqueeze(1)
    width = ratio.shape[1]
    if width <= PREFIX:
        order = ratio.argsort(dim=1, descending=True)
        share, _ = _shares(gain, order, want)
        amount = torch.zeros_like(share).scatter_(1, order, share) * room
        return -grad.sign() * amount
    order = ratio.topk(PREFIX, dim=1).indices
    share, total = _shares(gain, order, want)
    taken = torch.zeros_like(gain).scatter_(1, order, share)
    short = (total < want.squeeze(1)).nonzero().squeeze(1)  # the prefix falls short
    if short.numel():
        whole = ratio[short].argsort(dim=1, descending=True)
        rest, _ = _shares(gain[short], whole, want[short])
        taken[short] = torch.zeros_like(rest).scatter_(1, whole, rest)
    return -grad.sign() * (taken * room)


def _shares(gain: Tensor, order: Tensor, want: Tensor) -> tuple[Tensor, Tensor]:
    """The knapsack's share of its room each coordinate of ``order`` (best first) moves:
    1 while the better ones fall short of ``want``, then the partial one, then 0; and per
    row what the coordinates of ``order`` give together."""
    sorted_gain = gain.gather(1, order)
    total = sorted_gain.cumsum(dim=1)
    before = total - sorted_gain  # what the better coordinates give
    share = ((want - before) / sorted_gain.clamp(min=1e-30)).clamp(0.0, 1.0)
    share = torch.where(sorted_gain > 0, share, torch.zeros_like(share))
    return share, total[:, -1]


@torch.no_grad()
def shrink(problem: Problem, delta: Tensor, passes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bisection on the scale ``s ∈ [0, 1]`` of each flip ``delta`` toward ``problem.x``
    with ``passes`` forward passes: the smallest flipping ``s·delta`` seen, ``s`` (1: none
    smaller flipped; ``delta`` itself is returned) and the scores at it
    (:func:`~mmargin.engine.finish.bisect_scale` on ``x + project(x, s·delta)``)."""
    x, space = problem.x, problem.space

    def point(s: Tensor) -> Tensor:
        return x + space.project(x, delta * per_sample(s, delta))

    hi, scores = bisect_scale(problem.model, problem.goal, problem.labels, problem.targets,
                              point, passes, x)  # fmt: skip
    out = space.project(x, delta * per_sample(hi, delta))
    return out, hi, scores if scores is not None else torch.zeros(0)


def room(space: Space, x: Tensor, grad: Tensor, keep: Tensor | None = None) -> Tensor:
    """Per coordinate, how far it can move against ``grad`` from ``x`` to the space's bound
    (0 where ``keep`` is 0), flattened: the knapsack's room."""
    far = space.project(x, -grad.sign() * FAR)
    return (far if keep is None else far * keep).abs().flatten(1)


def linearise(problem: Problem, against: Tensor, delta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Scores, pairwise loss toward ``against`` and its gradient at ``problem.x + delta``."""
    d = delta.detach().clone().requires_grad_(True)
    scores = problem.model(problem.x + d)
    loss = problem.loss(scores, against)
    (grad,) = torch.autograd.grad(loss.sum(), d, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(d)
    return scores.detach(), loss.detach(), torch.nan_to_num(grad)


def _linearised(
    space: Space, x: Tensor, base: Tensor, grad: Tensor, loss: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The knapsack's inputs at each row's ``base`` (gradient ``grad``, loss ``loss``):
    the flat gradient, the linearised loss at ``x`` and the room (:func:`room`)."""
    g = grad.flatten(1)
    return g, loss - (g * base.flatten(1)).sum(dim=1), room(space, x, grad)


def polish_run(
    problem: Problem,
    steps: int,
    state: SearchState,
    weights: Tensor,
    only: Tensor | None = None,
    lengths: Tensor | None = None,
) -> None:
    """Spend ``steps`` steps (2 passes each) polishing every sample's best flip (those
    without one, or without usable gradients, are left alone), recording each smaller
    verified flip in ``state``. ``weights``: each coordinate's L1 cost per unit; ``only``:
    the samples to polish (all by default). ``lengths``: per sample, how many of the
    ``steps`` it takes; it leaves the batch when they are done and ends where a polish of
    exactly its length, on it alone, ends (:mod:`mmargin.engine.ownsteps`). A sample with
    fewer than :data:`POLISH_MIN_STEPS` steps is left alone. A candidate is a flip by the
    problem's goal (and targets)."""
    x, labels, space, distance = problem.x, problem.labels, problem.space, problem.distance
    host = x.device.type == "cpu"  # reading a value back costs nothing
    own = lengths.clamp(max=steps) if lengths is not None else torch.full_like(labels, steps)
    # the bisection and one linearisation need POLISH_MIN_STEPS
    chosen = state.flipped_away(labels, only) & (own >= POLISH_MIN_STEPS)
    rows = chosen.nonzero().squeeze(1)
    if rows.numel() == 0:
        return
    sub, ci = problem.rows(rows), state.best_class[rows]
    n = rows.numel()
    flat = weights.flatten(1)
    base, scale, scores = shrink(sub, state.best_delta[rows], SHRINK)
    state.queries[rows] += SHRINK
    norms = distance.norm(base)
    smaller = (scale < 1) & (norms < state.best_norm[rows])
    if bool(smaller.any()):
        state.record(rows[smaller], norms[smaller], base[smaller], scores[smaller])
    _, loss, grad = linearise(sub, ci, base)
    state.queries[rows] += 2
    t = torch.ones(n, dtype=x.dtype, device=x.device)
    over = torch.full_like(t, OVERSHOOT)
    # the knapsack steps each sample takes after the bisection and the first linearisation
    knap = own[rows] - 1 - SHRINK // 2 if lengths is not None else None
    # the linearisation at each sample's base: its gradient, the linearised loss at x
    # and the knapsack's room (they change only where a base moves)
    g, clean, reach = _linearised(space, sub.x, base, grad, loss)
    # a flip at a fixed point of its linearisation (the knapsack flip there within the
    # overshoot of it) has nothing to gain here: the sample leaves, its steps unspent
    target = knapsack(reach, g, flat, clean).view_as(base)
    fixed = distance.norm(target) >= state.best_norm[rows] * (1 - OVERSHOOT)
    if bool(fixed.any()):
        if knap is None:
            knap = torch.full_like(rows, steps - 1 - SHRINK // 2)
        knap = torch.where(fixed, torch.zeros_like(knap), knap)
    last = steps - 2 - SHRINK // 2
    for k in range(last + 1):
        # some samples' own steps are done: they leave the batch
        if knap is not None and (keep := running(knap, k)) is not None:
            if not bool(keep.any()):
                return
            rows, ci, base, grad, loss, t, over, knap, g, clean, reach = compact(
                keep, rows, ci, base, grad, loss, t, over, knap, g, clean, reach
            )
            sub = sub.rows(keep)
        xi = sub.x
        target = knapsack(reach, g, flat, clean * (1 + over)).view_as(base)
        cand = space.project(xi, base + per_sample(t, base) * (target - base))
        scores, c_loss, c_grad = linearise(sub, ci, cand)
        state.queries[rows] += 2
        norms = distance.norm(cand)
        still = moved(cand, norms, host)
        better = sub.is_adversarial(scores) & still & (norms < state.best_norm[rows])
        improved = bool(better.any())
        if improved:
            state.record(rows[better], norms[better], cand[better], scores[better])
        b = per_sample(better.to(x.dtype), base)
        base = torch.lerp(base, cand, b)
        grad = torch.lerp(grad, c_grad, b)
        loss = torch.where(better, c_loss, loss)
        if improved and k < last:
            g, clean, reach = _linearised(space, xi, base, grad, loss)
        t = torch.where(better, (2 * t).clamp(max=1.0), t / 2)
        over = torch.where(better, over, (2 * over).clamp(max=1.0))
