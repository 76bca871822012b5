"""Adaptive-ε minimum-norm search for continuous, differentiable spaces.

The FMN / DDN family: every sample carries its own radius ε. After a step that lands on
an adversarial point ε shrinks (and never exceeds the best norm seen); after a step that
does not, ε grows — or, before any flip was found, jumps to the first-order estimate of the
distance to the boundary, ``‖δ‖ + loss / ‖∇loss‖_*``. Each step moves against the
gradient of the margin loss by a length tied to ε (so the search is scale-free: pixels,
dollars or waveform samples alike), then projects onto the distance's ε-ball and onto the
space (box, mask). Step length and ε factor follow cosine schedules. The best adversarial
seen at any step is kept, samples that stop improving leave the batch early, and every
forward or backward pass is counted per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mmargin.engine.lagrangian import (
    lagrangian_lr,
    lagrangian_run,
    lagrangian_slot,
    lagrangian_steps,
    second_steps,
)
from mmargin.engine.leftover import spend_unspent, spend_unspent_refine
from mmargin.engine.legstop import LegStop
from mmargin.engine.passes import (
    probe_classes,
    refine_classes,
    search_legs,
    split_steps,
    toward,
)
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState, Streams, per_sample
from mmargin.goals import Goal, Untargeted
from mmargin.protocols import Distance, ModelAdapter, Space, l2_scale
from mmargin.ranking import descending_values

__all__ = ["GradientConfig", "gradient_search", "input_gradient", "rank_classes"]

LATE_SHARE = 0.1
"""The last share of the final run's steps watched for progress: a sample whose best norm
(or, without a flip, whose loss) still fell by more than :data:`LATE_RTOL` over it raises
``incomplete_optimisation``."""
LATE_RTOL = 0.01
VANISHING = 1e3
"""A gradient so small that the first-order distance to the boundary, ``loss / ‖∇‖_*``,
exceeds this many times ``1 + ‖x‖`` is vanishing (saturated probabilities, for one): it
counts as unusable, like a zero one."""


def input_gradient(loss: Tensor, inputs: Tensor, retain: bool = False) -> tuple[Tensor, Tensor]:
    """The gradient of ``loss.sum()`` with respect to ``inputs`` and a per-sample mask of
    where it is usable (finite and not all zero). Where the model gives no gradient at all
    (a non-differentiable step such as a comparison) the gradient is zero; non-finite
    entries become zero, so one sample's NaN never spreads into a step."""
    grad: Tensor | None = None
    if loss.requires_grad:
        (grad,) = torch.autograd.grad(loss.sum(), inputs, retain_graph=retain, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(inputs)
    flat = grad.flatten(1)
    usable = torch.isfinite(flat).all(dim=1)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    usable &= grad.flatten(1).abs().amax(dim=1) > 0
    return grad, usable


def _cosine(k: int, steps: int, start: float, end: float) -> float:
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * k / max(steps, 1)))


def gradient_search(
    model: ModelAdapter,
    space: Space,
    distance: Distance,
    goal: Goal,
    x: Tensor,
    labels: Tensor,
    targets: Tensor | None,
    passes: int,
    config: GradientConfig,
    streams: Streams,
    classes: int,
) -> SearchState:
    """Spend at most ``passes`` forward + backward passes per sample on a batch (a step is
    2: one forward, one backward pass), split over restarts. ``classes`` is the number of
    scores the model returns.

    Returns the smallest adversarial perturbation found per sample (``inf`` norm and a
    zero perturbation where none was found) and the passes each sample used.

    Restarts of an untargeted search are *class-aware*: the first run follows the usual
    ``z_y − max_j z_j`` loss, which can settle on the boundary of a class that is not the
    nearest one; restart r instead drives ``z_y − z_c`` for the class ``c`` with the
    r-th smallest first-order distance at the clean input (ranked once, at a cost of one
    backward pass per candidate class). Targeted restarts start from a random point on
    the sphere of the best norm so far, drawn from each sample's own stream.
    """
    state = SearchState.empty(x)
    steps = passes // 2
    runs = config.restarts + 1
    ranked = None
    if isinstance(goal, Untargeted) and steps < split_steps(distance.p, config):
        runs = 1  # too few steps to split into runs that anneal (mmargin.engine.passes)
    if runs > 1 and isinstance(goal, Untargeted):
        count = min(max(config.candidates, config.probes + 1, runs - 1), classes - 1)
        cost = 1 + count  # one forward pass, one backward pass per candidate class
        if count >= 1 and (passes - cost) // 2 >= runs:
            ranked = rank_classes(model, space, distance, x, labels, count)
            state.queries += cost
            steps -= (cost + 1) // 2
        else:
            runs = 1  # too few passes to rank classes and restart: one plain run
    if ranked is not None:
        _class_aware(model, space, distance, goal, x, labels, steps, config, state, ranked)
        return state
    per_run = steps // runs
    if per_run < 1:
        return state
    late = _Late.over(per_run, state)
    for run in range(runs):
        start = torch.zeros_like(x)
        if run > 0:  # restart from a random point on the sphere of the best norm so far
            found = torch.isfinite(state.best_norm)
            radius = torch.where(found, state.best_norm, torch.zeros_like(state.best_norm))
            direction = streams.draw(
                torch.arange(x.shape[0]),
                lambda i, n, gen: space.random(x[i : i + 1].expand(n, *x.shape[1:]), gen),
            ).to(x)
            start = distance.project(direction * per_sample(radius * 10, x), radius)
            start = space.project(x, start)
        _run_once(
            model, space, distance, goal, x, labels, targets, per_run, config, start, state,
            None, late if run == runs - 1 else None, check=run == 0,
        )  # fmt: skip
    late.judge(state)
    return state


def _class_aware(
    model: ModelAdapter, space: Space, distance: Distance, goal: Goal, x: Tensor,
    labels: Tensor, steps: int, config: GradientConfig, state: SearchState, ranked: Tensor,
) -> None:  # fmt: skip
    """The untargeted search's runs (:mod:`mmargin.engine.passes`): the first ε-ball run,
    on L2 a Lagrangian run (from the clean input: after the first run only so that
    samples without usable gradients are known and skipped; outside the short plan a
    second one after it, :func:`~mmargin.engine.lagrangian.second_steps`), the class
    probes, on L1 a Lagrangian run from the best flip, and refinements warm-started from
    the best flip toward its class (:func:`~mmargin.engine.lagrangian.lagrangian_slot`)."""
    lagrange = lagrangian_steps(steps, distance.p, config)
    second = second_steps(steps, distance.p, config) if lagrange else 0
    plan = search_legs(steps, distance.p, config, lagrange + second)
    slot, warm = lagrangian_slot(distance.p, [(leg.kind, leg.steps) for leg in plan])
    before = state.queries.clone()
    candidates = None
    for n, leg in enumerate(plan):
        if leg.steps < 1:
            continue
        start = torch.zeros_like(x)
        against = None
        if leg.kind == "probe":
            if candidates is None:
                candidates = probe_classes(ranked, state.best_class, config.probes)
            against = candidates[:, leg.index]
        elif leg.kind == "refine":
            against = refine_classes(state.best_class, ranked, labels)
            start = state.best_delta.clone()
        last = n == len(plan) - 1
        late = _Late.over(leg.steps, state) if last else None
        stop = LegStop.for_leg(leg.kind, leg.steps, config.leg_window, config.leg_rtol,
                               config.hopeless, state)  # fmt: skip
        _run_once(
            model, space, distance, goal, x, labels, None, leg.steps, config, start, state,
            against, late, check=n == 0, stop=stop,
        )  # fmt: skip
        if late is not None:
            late.judge(state)
        # never before the first run: it flags the samples without usable gradients
        if n == slot and lagrange:
            begin = state.best_delta.clone() if warm else None
            first = lagrangian_lr(steps, distance.p, config)
            lagrangian_run(model, space, distance, goal, x, labels, None, lagrange, state,
                           start=begin, lr_init=first)  # fmt: skip
            if second:  # a second basin: from the clean input, another first step
                lagrangian_run(model, space, distance, goal, x, labels, None, second, state,
                               lr_init=config.lagrangian_second_lr)  # fmt: skip
    # the steps the probes' early exits left unspent: L2 a second Lagrangian run, L1 the
    # knapsack polish of the best flip, L∞ a refinement of it toward the runner-up class
    spend_unspent(model, space, distance, goal, x, labels, steps, before, state, config)
    if distance.p == math.inf and config.unspent_refine:
        # the runner-up: the nearest ranked class other than the best flip's (.leftover)
        other = probe_classes(ranked, state.best_class, 1)[:, 0]

        def refine(rows: Tensor, length: int) -> None:
            _run_once(model, space, distance, goal, x, labels, None, length, config,
                      state.best_delta.clone(), state, other, check=False, only=rows)  # fmt: skip

        spend_unspent_refine(steps, before, state, refine)


class _Late:
    """Progress over the last steps of the final run: the best norms and losses at step
    ``mark`` against those at the end (``incomplete_optimisation``)."""

    def __init__(self, mark: int, last: Tensor) -> None:
        self.mark = mark
        self.last = last
        self.norm: Tensor | None = None
        self.loss: Tensor | None = None

    @classmethod
    def over(cls, steps: int, state: SearchState) -> _Late:
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


def _l0_needed(
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
            out[pick] = _l0_needed(space, distance, x[pick], delta[pick], grad[pick], loss[pick])
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


def rank_classes(
    model: ModelAdapter,
    space: Space,
    distance: Distance,
    x: Tensor,
    labels: Tensor,
    count: int,
) -> Tensor:
    """Candidate classes per sample, nearest first by first-order distance at ``x``.

    Only the ``count`` highest-scoring other classes are ranked (one backward pass each),
    so the cost stays bounded for models with many classes.
    """
    xr = x.clone().requires_grad_(True)
    scores = model(xr)
    masked = scores.detach().clone()
    masked.scatter_(1, labels.unsqueeze(1), float("-inf"))
    count = min(count, scores.shape[1] - 1)
    candidates = masked.topk(count, dim=1).indices
    true = scores.gather(1, labels.unsqueeze(1)).squeeze(1)
    dists = []
    for c in range(count):
        diff = true - scores.gather(1, candidates[:, c : c + 1]).squeeze(1)
        grad, _ = input_gradient(diff, xr, retain=c < count - 1)
        grad = space.free_gradient(x, torch.zeros_like(x), grad)
        dists.append(diff.detach() / distance.dual_norm(grad).clamp(min=1e-12))
    order = torch.stack(dists, dim=1).argsort(dim=1)
    return candidates.gather(1, order)


def _run_once(
    model: ModelAdapter,
    space: Space,
    distance: Distance,
    goal: Goal,
    x: Tensor,
    labels: Tensor,
    targets: Tensor | None,
    steps: int,
    config: GradientConfig,
    start: Tensor,
    state: SearchState,
    against: Tensor | None = None,
    late: _Late | None = None,
    check: bool = True,
    stop: LegStop | None = None,
    only: Tensor | None = None,
) -> None:
    """``steps`` adaptive-ε steps from ``x + start``, recording every improvement in
    ``state`` (see the module docstring); ``against`` (per sample) drives the pairwise loss
    toward that class, ``late`` watches the final run, ``check`` flags unusable gradients
    at the first step, ``stop`` lets samples leave the run early (:mod:`.legstop`),
    ``only`` (a boolean mask) runs those samples and leaves the others untouched.

    The step is kept close to a bare forward + backward (``bench/overhead.py``): while every
    sample searches, batch rows are views and ``delta`` is rebound, not copied; updates of
    the best point are exact 0/1 blends instead of boolean gathers; the gradient is scaled
    and subtracted in place; the usability checks run at the first step only; and on CPU,
    where a device sync is free, the first-order boundary estimate is computed only for
    the rows that use it (no flip yet).
    """
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
    host = x.device.type == "cpu"  # reading a value back costs nothing: skip unused work
    # a goal may read its flip test off the loss the step has already computed
    flipped: Callable[[Tensor, Tensor], Tensor] | None = getattr(goal, "flipped", None)
    pending = 0  # steps every sample took and ``state.queries`` has not counted yet
    try:
        for k in range(steps):
            # all samples active (no early stop yet): whole tensors instead of gathered rows
            every = whole or bool(active.all())
            if not every and pending:
                state.queries.add_(2 * pending)
                pending = 0
            idx: Tensor | slice = slice(None) if every else active.nonzero().squeeze(1)
            if isinstance(idx, Tensor) and idx.numel() == 0:
                break
            delta, eps, found = _step(
                model, space, distance, goal, x, labels, targets, steps, config, state,
                against, late, check, k, idx, delta, eps, found, stall, active, free, host,
                flipped, stop,
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


def _step(
    model: ModelAdapter, space: Space, distance: Distance, goal: Goal, x: Tensor,
    labels: Tensor, targets: Tensor | None, steps: int, config: GradientConfig,
    state: SearchState, against: Tensor | None, late: _Late | None, check: bool, k: int,
    idx: Tensor | slice, delta: Tensor, eps: Tensor, found: Tensor, stall: Tensor,
    active: Tensor, free: Tensor, host: bool,
    flipped: Callable[[Tensor, Tensor], Tensor] | None, stop: LegStop | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Step ``k`` of :func:`_run_once` for the rows ``idx`` (``slice(None)``: all, and the
    whole tensors are used and rebound, never gathered or copied back). Returns the new
    ``delta``, ``eps`` and ``found``; the passes are counted by the caller."""
    every = isinstance(idx, slice)
    xi, li = (x, labels) if every else (x[idx], labels[idx])
    ti = targets[idx] if targets is not None else None
    # ``delta`` is the loop's own tensor, rebound after every step: no copy needed
    di = (delta if every else delta[idx]).requires_grad_(True)
    scores = model(xi + di)
    # with ``against``: the pairwise loss toward one chosen class (the flip test stays the goal's)
    loss = goal.loss(scores, li, ti) if against is None else toward(scores, li, against[idx])
    grad = _raw_gradient(loss, di)
    first = k == 0 and check
    finite = torch.isfinite(grad.flatten(1).abs().amax(dim=1)) if first else None
    # non-finite entries become 0 (one sample's NaN never spreads into a step); on CPU a
    # single sum tells whether there is any, which is cheaper than the cleaning pass
    if first or not host or not bool(torch.isfinite(grad.sum())):
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    di = di.detach()
    grad = space.free_gradient(xi, di, grad)
    loss = loss.detach()
    scores = scores.detach()
    if late is not None:
        late.seen(k, idx, loss, state)
    if finite is not None:  # the first step: is the gradient usable at all?
        usable = finite & (grad.flatten(1).abs().amax(dim=1) > 0)
        reach = loss.clamp(min=0) / distance.dual_norm(grad).clamp(min=1e-30)
        usable &= reach <= VANISHING * (1 + distance.norm(xi))
        if not bool(usable.all()):
            where = torch.arange(x.shape[0], device=x.device)[idx][~usable]
            state.flag("zero_gradients", where)
            active[where] = False

    if flipped is not None and against is None:  # the goal's test on its own loss
        is_adv = flipped(scores, loss)
    else:
        is_adv = goal.is_adversarial(scores, li, ti)
    norms = distance.norm(di)
    best = state.best_norm if every else state.best_norm[idx]
    # a zero perturbation of a correctly classified input is never a flip (only a
    # non-deterministic model calls it one)
    moved = di.flatten(1).abs().amax(dim=1) > 0
    improved = is_adv & (norms < best) & moved
    if stop is not None:
        stop.seen(idx, norms, is_adv & moved)
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

    gamma = _cosine(k, steps, config.gamma_init, config.gamma_final)
    e = eps if every else eps[idx]
    grow = e * (1 + gamma)
    # the first-order distance to the boundary (overshot a little so the step lands past
    # it) sets ε only for the rows with no flip in this run yet
    searching = ~now_found
    if not host or bool(searching.any()):
        if distance.p == 0.0:  # coordinates needed, not loss / ‖∇‖₁ (which is < 1)
            reach = norms + _l0_needed(space, distance, xi, di, grad, loss,
                                       searching if host else None)  # fmt: skip
        else:
            reach = norms + loss.clamp(min=0) / distance.dual_norm(grad).clamp(min=1e-12)
        grow = torch.where(was_found, grow, torch.maximum(reach * (1 + gamma) + 1e-12, grow))
    best = state.best_norm if every else state.best_norm[idx]
    e = torch.where(is_adv, torch.minimum(e * (1 - gamma), best), grow)
    if distance.p == 0.0:
        e = e.clamp(min=1.0)

    alpha = _cosine(k, steps, config.alpha_init, config.alpha_final)
    length = alpha * l2_scale(distance.p, e, free if every else free[idx])
    gnorm = torch.linalg.vector_norm(grad.flatten(1), dim=1).clamp(min=1e-12)
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
    caller cleans non-finite entries (see :func:`input_gradient`)."""
    if loss.requires_grad:
        (grad,) = torch.autograd.grad(loss.sum(), inputs, allow_unused=True)
        if grad is not None:
            return grad
    return torch.zeros_like(inputs)
