"""The adaptive-ε run: one ε-ball walk of the gradient search (:mod:`.gradient`).

The FMN / DDN family: every sample carries its own radius ε. After a step that lands on
an adversarial point ε shrinks (and never exceeds the best norm seen); after a step that
does not, ε grows — or, before any flip was found, jumps to the first-order estimate of the
distance to the boundary, ``‖δ‖ + loss / ‖∇loss‖_*``. Each step moves against the
gradient of the margin loss by a length tied to ε (so the search is scale-free: pixels,
dollars or waveform samples alike), then projects onto the distance's ε-ball and onto the
space (box, mask). Step length and ε factor follow cosine schedules. The best adversarial
seen at any step is kept, samples that stop improving leave the batch early, and every
forward or backward pass is counted per sample.

Its own module so that both the search's planned runs (:mod:`.gradient`) and the runs on
the steps they left unspent (:mod:`.leftover`) call it, as they call the Lagrangian run
and the polish.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmargin.distances import plain_l2
from mmargin.engine.anneal import Anneal, Extend
from mmargin.engine.legstop import LegStop
from mmargin.engine.ownsteps import running
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, moved, per_sample, usable
from mmargin.protocols import Distance, Space, l2_scale
from mmargin.ranking import descending_values

__all__ = ["LATE_RTOL", "LATE_SHARE", "Late", "epsball_run", "l0_needed"]

LATE_SHARE = 0.1
"""The last share of the final run's steps watched for progress: a sample whose best norm
(or, without a flip, whose loss) still fell by more than :data:`LATE_RTOL` over it raises
``incomplete_optimisation``."""
LATE_RTOL = 0.01


class Late:
    """Progress over the last steps of the final run: the best norms and losses at step
    ``mark`` against those at the end (``incomplete_optimisation``)."""

    def __init__(self, mark: int, last: Tensor) -> None:
        self.mark = mark
        self.last = last
        self.norm: Tensor | None = None
        self.loss: Tensor | None = None

    @classmethod
    def over(cls, steps: int, state: SearchState) -> Late:
        """Watch the last :data:`LATE_SHARE` of a run of ``steps`` steps."""
        return cls(steps - max(int(steps * LATE_SHARE), 1), torch.zeros_like(state.best_norm))

    def seen(self, k: int, where: Tensor | slice, loss: Tensor, state: SearchState) -> None:
        """Step ``k`` of the final run computed ``loss`` for the samples ``where``."""
        if k == self.mark:
            self.norm, self.loss = state.best_norm.clone(), self.last.clone()
        self.last[where] = loss.to(self.last)

    def judge(self, state: SearchState) -> None:
        """Flag the samples whose best norm (with a flip) or loss (without) still fell."""
        if self.norm is None or self.loss is None:
            return
        found = torch.isfinite(state.best_norm)
        shrank = found & (state.best_norm < self.norm * (1 - LATE_RTOL))
        fell = ~found & (self.last < self.loss - LATE_RTOL * self.loss.abs())
        if "zero_gradients" in state.flags:
            fell &= ~state.flags["zero_gradients"]
        state.flag("incomplete_optimisation", shrank | fell)


def l0_needed(
    space: Space,
    distance: Distance,
    x: Tensor,
    delta: Tensor,
    grad: Tensor,
    loss: Tensor,
    rows: Tensor | None = None,
) -> Tensor:
    """First-order L0 distance to the boundary: how many more positions (the distance's
    units: coordinates, or pixels) must move, each as far as the space lets it go against
    the gradient, for the linearised loss to reach 0 (the largest gains first).

    With ``rows`` (a boolean mask; reads it on the host) only those rows are computed, the
    others are 0: the per-row sort is the costly part of an L0 step (numpy's sort of the
    values on CPU, :func:`mmargin.ranking.descending_values`, the same numbers as torch's)."""
    if rows is not None and not bool(rows.all()):  # every row: no gather, no scatter
        out = torch.zeros_like(loss)
        pick = rows.nonzero().squeeze(1)
        if pick.numel():
            out[pick] = l0_needed(space, distance, x[pick], delta[pick], grad[pick], loss[pick])
        return out
    push = grad.sign().mul_(-1e6).add_(delta)  # δ − sign(∇)·10⁶, exactly
    far = space.project(x, push) - delta  # the room left, per coordinate
    gain = far.mul_(grad).neg_().clamp_(min=0)
    group = getattr(distance, "group_axis", None)
    if group is not None and gain.shape[group] > 1:  # one channel: the sum is the value
        gain = gain.sum(dim=group)
    ordered = descending_values(gain.flatten(1)).cumsum(dim=1)  # numpy's sort on CPU
    short = (ordered < loss.clamp(min=0).unsqueeze(1)).sum(dim=1)
    return (short + 1).clamp(max=ordered.shape[1]).to(loss.dtype)


def epsball_run(
    problem: Problem,
    steps: int,
    config: GradientConfig,
    start: Tensor,
    state: SearchState,
    against: Tensor | None = None,
    late: Late | None = None,
    check: bool = True,
    stop: LegStop | None = None,
    only: Tensor | None = None,
    lengths: Tensor | None = None,
    extend: Extend | None = None,
    soft: Tensor | None = None,
    switched: list[Tensor] | None = None,
) -> None:
    """``steps`` adaptive-ε steps from ``problem.x + start``, recording every improvement in
    ``state`` (see the module docstring); ``against`` (per sample) drives the pairwise loss
    toward that class, ``late`` watches the final run, ``check`` flags unusable gradients
    at the first step, ``stop`` lets samples leave the run early (:mod:`.legstop`),
    ``only`` (a boolean mask) runs those samples and leaves the others untouched.
    ``lengths``: per sample, how many of the ``steps`` it takes; its schedules anneal over
    its own length and it leaves the run when its steps are done, so it ends exactly where
    a run of that length on it alone ends and samples of different lengths share one
    batched run (:mod:`.ownsteps`, :mod:`.leftover`). ``extend``: the rows switched to the
    L1 start still without a flip at its step run its steps more (:class:`.anneal.Extend`).
    ``soft`` (a boolean mask, with ``config.alpha_refine_slow_l1`` > 0): the rows whose step
    share starts there instead (:meth:`.anneal.Anneal.soften`); ``switched``: a list that
    gets the mask of the rows this run switched to the L1 start whose loss there was still
    above ``config.refine_slow_kept`` of its first (:meth:`.anneal.Anneal.far`; nothing if
    it switched none).

    The step is kept close to a bare forward + backward (``bench/overhead.py``): while every
    sample searches, batch rows are views and ``delta`` is rebound, not copied; updates of
    the best point are exact 0/1 blends instead of boolean gathers; the gradient is scaled
    and subtracted in place; the usability checks run at the first step only; and on CPU,
    where a device sync is free, the first-order boundary estimate is computed only for
    the rows that use it (no flip yet).
    """
    x, space, distance = problem.x, problem.space, problem.distance
    batch = x.shape[0]
    delta = start.clone()
    eps = distance.norm(delta)
    found = torch.zeros(batch, dtype=torch.bool, device=x.device)  # ε dynamics are per run
    # samples without usable gradients left the search at their first step (the driver
    # searches them with decisions instead)
    dead = state.flags.get("zero_gradients")
    active = torch.ones(batch, dtype=torch.bool, device=x.device) if dead is None else ~dead
    if only is not None:
        active &= only
    stall = torch.zeros(batch, dtype=torch.long, device=x.device)
    free = space.free_dims(x)
    # no patience and every sample searching: nothing stops early unless a sample's first
    # step finds no usable gradient, so the step loop need not wait on the device to know
    whole = config.patience <= 0 and dead is None and stop is None and only is None
    own = lengths.clamp(max=steps) if lengths is not None else None
    more = extend.steps if extend is not None else 0
    if more and own is None:  # each row its own length: the switched rows' grows
        own = torch.full((batch,), steps, dtype=torch.long, device=x.device)
    if own is not None:
        whole = False
    anneal = Anneal(steps, config, own, x, distance.p)
    if soft is not None and config.alpha_refine_slow_l1 > 0 and bool(soft.any()):
        anneal.soft, anneal.soft_alpha = soft, config.alpha_refine_slow_l1
    slow: Tensor | None = None  # rows switched to the L1 start (``l1_slow_after``)
    host = x.device.type == "cpu"  # reading a value back costs nothing: skip unused work
    pending = 0  # steps every sample took and ``state.queries`` has not counted yet
    try:
        for k in range(steps + more):
            # some samples' own steps are done: they leave the run (.ownsteps)
            if own is not None and (keep := running(own, k)) is not None:
                active &= keep
            # all samples active (no early stop yet): whole tensors instead of gathered rows
            every = whole or bool(active.all())
            if not every and pending:
                state.queries.add_(2 * pending)
                pending = 0
            idx: Tensor | slice = slice(None) if every else active.nonzero().squeeze(1)
            if isinstance(idx, Tensor) and idx.numel() == 0:
                break
            if anneal.after and k == anneal.after:  # rows with no flip yet in this run
                slow = anneal.slow(found)
                if host and not bool(slow.any()):  # none: the plain schedule's arithmetic
                    slow = None
            if extend is not None and own is not None and slow is not None:
                own = extend.grow(k, anneal.after, slow & active & ~found, own, anneal)
            delta, eps, found = _step(
                problem, anneal, config, state, against, late, check, k, idx, delta, eps,
                found, stall, active, free, host, stop,
                None if slow is None else (slow if every else slow[idx]),
            )  # fmt: skip
            if every:
                pending += 1
            else:
                state.queries[idx] += 2
            if k == 0 and check and "zero_gradients" in state.flags:
                whole = False
            if stop is not None:
                stop.after(k, state, active)
    finally:
        state.queries.add_(2 * pending)
    if switched is not None and slow is not None:
        switched.append(anneal.far(slow, config.refine_slow_kept))


def _step(
    problem: Problem, anneal: Anneal, config: GradientConfig, state: SearchState,
    against: Tensor | None, late: Late | None, check: bool, k: int, idx: Tensor | slice,
    delta: Tensor, eps: Tensor, found: Tensor, stall: Tensor, active: Tensor, free: Tensor,
    host: bool, stop: LegStop | None = None, slow: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Step ``k`` of :func:`epsball_run` for the rows ``idx`` (``slice(None)``: all, and the
    whole tensors are used and rebound, never gathered or copied back). Returns the new
    ``delta``, ``eps`` and ``found``; the passes are counted by the caller."""
    every = isinstance(idx, slice)
    space, distance, x = problem.space, problem.distance, problem.x
    sub = problem if every else problem.rows(idx)
    xi = sub.x
    # ``delta`` is the loop's own tensor, rebound after every step: no copy needed
    di = (delta if every else delta[idx]).requires_grad_(True)
    scores = problem.model(xi + di)
    # with ``against``: the pairwise loss toward one chosen class (the flip test stays the goal's)
    loss = sub.loss(scores, None if against is None else against[idx])
    anneal.note(k, idx, loss.detach())
    grad = _raw_gradient(loss, di)
    first = k == 0 and check
    finite = torch.isfinite(grad.flatten(1).abs().amax(dim=1)) if first else None
    # non-finite entries become 0 (one sample's NaN never spreads into a step); on CPU a
    # single sum tells whether there is any, which is cheaper than the cleaning pass (read
    # back as a Python float: ``torch.isfinite`` of a 0-d tensor is 4 more ops, ~13 µs)
    if first or not host or not math.isfinite(float(grad.sum())):
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    di = di.detach()
    grad = space.free_gradient(xi, di, grad)
    loss = loss.detach()
    scores = scores.detach()
    if late is not None:
        late.seen(k, idx, loss, state)
    if finite is not None:  # the first step: is the gradient usable at all?
        ok = usable(distance, xi, grad, loss, finite)
        if not bool(ok.all()):
            where = torch.arange(x.shape[0], device=x.device)[idx][~ok]
            state.flag("zero_gradients", where)
            active[where] = False

    # the goal's test, read off its own loss where the step computed that loss
    is_adv = sub.is_adversarial(scores) if against is not None else sub.flips(scores, loss)
    norms = distance.norm(di)
    best = state.best_norm if every else state.best_norm[idx]
    # a zero perturbation of a correctly classified input is never a flip (only a
    # non-deterministic model calls it one)
    still = moved(di, norms, host)
    improved = is_adv & (norms < best) & still
    if stop is not None:
        stop.seen(idx, norms, is_adv & still)
    # (``best`` is the state's own tensor while every sample searches: read it first)
    significant = is_adv & (norms < best * (1 - config.rtol)) if config.patience > 0 else None
    if every:  # masked writes: no device-to-host sync per step
        torch.where(improved, norms, best, out=state.best_norm)
        # weight 0 or 1: lerp gives back exactly the old or the new row
        state.best_delta.lerp_(di, per_sample(improved.to(di.dtype), di))
        torch.where(improved, scores.argmax(dim=1), state.best_class, out=state.best_class)
    elif isinstance(idx, Tensor):
        rows = improved.nonzero().squeeze(1)
        if rows.numel():  # copy only the rows that improved
            state.record(idx[rows], norms[rows], di[rows], scores[rows])
    if significant is not None:  # the stall count only feeds the early stop
        stall[idx] = torch.where(significant, torch.zeros_like(stall[idx]), stall[idx] + 1)
    was_found = found if every else found[idx]
    now_found = was_found | is_adv

    up, down, alpha = anneal.switched(k, idx, slow, anneal.at(k, idx))  # 1 + γ, 1 − γ, α
    up, down, alpha = anneal.soften(k, idx, (up, down, alpha))
    up, down = anneal.restarted(k, idx, slow, was_found, now_found, up, down)
    size = torch.linalg.vector_norm(grad.flatten(1), dim=1)  # the step's gradient norm
    e = eps if every else eps[idx]
    grow = e * up
    # the first-order distance to the boundary (overshot a little so the step lands past
    # it) sets ε only for the rows with no flip in this run yet
    searching = ~now_found
    if not host or bool(searching.any()):
        if distance.p == 0.0:  # coordinates needed, not loss / ‖∇‖₁ (which is < 1)
            reach = norms + l0_needed(space, distance, xi, di, grad, loss,
                                      searching if host else None)  # fmt: skip
        else:  # plain L2 is its own dual: the step's gradient norm is the dual norm
            dual = size if plain_l2(distance) else distance.dual_norm(grad)
            reach = norms + loss.clamp(min=0) / dual.clamp(min=1e-12)
        grow = torch.where(was_found, grow, torch.maximum(reach * up + 1e-12, grow))
    best = state.best_norm if every else state.best_norm[idx]
    e = torch.where(is_adv, torch.minimum(e * down, best), grow)
    if distance.p == 0.0:
        e = e.clamp(min=1.0)

    length = alpha * l2_scale(distance.p, e, free if every else free[idx])
    gnorm = size.clamp(min=1e-12)
    # the step, in place: ``di`` is this loop's own tensor (``grad`` may be the space's)
    di = di.sub_(grad * per_sample(length / gnorm, grad))
    di = space.project(xi, distance.project(di, e))
    if every:
        delta, eps, found = di, e, now_found
    else:
        delta[idx], eps[idx], found[idx] = di, e, now_found

    if config.patience > 0:
        done = found[idx] & (stall[idx] >= config.patience)
        active[idx] = ~done
    return delta, eps, found


def _raw_gradient(loss: Tensor, inputs: Tensor) -> Tensor:
    """``∇ loss.sum()`` with respect to ``inputs``, zero where the model gives none; the
    caller cleans non-finite entries (see :func:`mmargin.engine.reach.input_gradient`)."""
    if loss.requires_grad:
        (grad,) = torch.autograd.grad(loss.sum(), inputs, allow_unused=True)
        if grad is not None:
            return grad
    return torch.zeros_like(inputs)
