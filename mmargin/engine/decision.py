"""Decision-based minimal-flip search: for models without gradients (tree ensembles, any
``predict_proba`` black box), using nothing but "is this input adversarial?".

1. **Find flips.** Candidate starting points, each made valid by ``space.finalize``:
   the nearest rows, and rows spread a little further out, of a starting pool that does
   not depend on the batch (the space's ``reference`` rows, such as training data, and
   class-balanced rows of the run's data that the driver picks once); one move per
   coordinate group to its bound in each direction (when the space has few groups); and,
   for samples still without a flip, uniform noise of growing radius in the box, from
   each sample's own random stream.
2. **Shrink.** Every flip is bisected toward ``x`` along the segment; the best
   ``starts`` per sample are refined by rounds of boundary walks and coordinate sweeps
   (:mod:`mmargin.engine.decision_shrink`).

``hybrid_search`` (strategy ``hybrid``) runs the gradient strategy on the continuous
relaxation first and seeds this search with its flips: for spaces with integer or
categorical features, where rounding a relaxed flip can undo it.

Every model call counts one pass for each sample whose candidates it holds; no sample
ever goes past its budget. Works for any continuous space and Lp distance; returns the
same :class:`SearchState` as the gradient strategy. All points it keeps are finalised,
verified adversarial inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmargin.engine.decision_core import Ctx, bisect, keep_best, make_context
from mmargin.engine.decision_shrink import refine
from mmargin.engine.gradient import gradient_search
from mmargin.engine.problem import Problem
from mmargin.engine.spec import DecisionConfig, SearchSpec
from mmargin.engine.state import SearchState, Streams, per_sample

__all__ = ["DecisionConfig", "decision_search", "hybrid_search"]

_SPREAD_REACH = 512
"""The pool candidates: half are the nearest rows, the other half every ``stride``-th of
the next ones, as if the pool held at most this many rows (``stride = ⌈M / 512⌉``)."""

_EXTRA_NOISE_ROUNDS = 256
"""At most this many more rounds of whole-box noise for samples still without a flip."""


def decision_search(
    problem: Problem, budget: Tensor, spec: SearchSpec, streams: Streams,
    pool: Tensor | None = None, seeds: Tensor | None = None,
) -> SearchState:  # fmt: skip
    """Search the batch of ``problem`` with decisions only, within ``budget`` passes per
    sample (``(B,)``).

    ``pool`` holds starting rows ``(M, ...)`` that do not depend on the batch; ``seeds``
    (shaped like ``x``, zero rows for none) are perturbations from another search to try
    as starting points, scaled by 1-3 before the space finalises them.
    """
    x, config = problem.x, spec.decision
    ctx = make_context(problem, budget, streams, config)
    state = SearchState.empty(x)
    flat_pool = None if pool is None else pool.to(x).flatten(1)
    owner, delta = _find_flips(ctx, None if seeds is None else seeds.flatten(1), flat_pool)
    if owner.numel():
        owner, delta = _affordable(ctx, owner, delta, 0, config.bisect_steps // 2, share=0.4)
        delta = bisect(ctx, owner, torch.zeros_like(delta), delta, config.bisect_steps // 2)
        keep_best(ctx, state, owner, delta)
        table, starts = _pick_starts(ctx, owner, delta)
        for s in range(config.max_starts):
            rows = table[:, s] >= 0
            if not rows.any():
                break
            own = table[rows, s]
            share = ctx.oracle.left()[own] // max(config.starts - s, 1)
            keep_best(ctx, state, own, refine(ctx, own, starts[rows, s],
                                              ctx.oracle.queries[own] + share))  # fmt: skip
        for _ in range(config.passes):  # budget left: keep walking from the best point
            own = (torch.isfinite(state.best_norm) & (ctx.oracle.left() > 64)).nonzero()
            if not own.numel():
                break
            own = own.squeeze(1)
            best = state.best_delta.view(x.shape[0], -1)[own].clone()
            keep_best(ctx, state, own, refine(ctx, own, best, ctx.oracle.queries[own]
                                              + ctx.oracle.left()[own]))  # fmt: skip
    state.queries = ctx.oracle.queries.clone()
    return state


def hybrid_search(
    problem: Problem, budget: int, spec: SearchSpec, streams: Streams, classes: int,
    pool: Tensor | None = None,
) -> SearchState:  # fmt: skip
    """The gradient strategy for a sixth of the passes, then :func:`decision_search` seeded
    with its (relaxed) flips for each sample's rest; the decision search alone without
    gradients."""
    x = problem.x
    per_sample_budget = torch.full((x.shape[0],), budget, dtype=torch.long, device=x.device)
    if not problem.model.differentiable:
        return decision_search(problem, per_sample_budget, spec, streams, pool)
    first = gradient_search(problem, budget // 3, spec.gradient, streams, classes)
    seeds = torch.where(per_sample(torch.isfinite(first.best_norm), x), first.best_delta, 0.0)
    rest = per_sample_budget - first.queries
    second = decision_search(problem, rest, spec, streams, pool, seeds=seeds)
    second.queries += first.queries
    if "zero_gradients" in first.flags:  # the decision phase searched them anyway
        second.flags["zero_gradients"] = first.flags["zero_gradients"]
    lost = ~torch.isfinite(second.best_norm) & torch.isfinite(first.best_norm)
    second.best_delta[lost] = first.best_delta[lost]  # last resort: the line search checks it
    second.best_norm[lost] = first.best_norm[lost]
    return second


# -- phase 1: flips -------------------------------------------------------------------------
def _find_flips(ctx: Ctx, seeds: Tensor | None, pool: Tensor | None) -> tuple[Tensor, Tensor]:
    """Adversarial rows (owner, finalised delta) from seeds, axis moves, the nearest rows of
    the starting pool, noise."""
    b, d = ctx.x.shape
    dev = ctx.x.device
    deltas = _axis_moves(ctx)
    if seeds is not None:
        deltas = [seeds * scale for scale in (1.0, 1.5, 2.0, 3.0)] + deltas
    owners = [torch.arange(b, device=dev)] * len(deltas)
    pool = pool if pool is not None and pool.shape[1] == d else ctx.x[:0]
    k = min(ctx.config.reference_candidates, pool.shape[0])
    if k:
        own = torch.arange(b, device=dev).repeat_interleave(pool.shape[0])
        cand = ctx.final(own, pool.repeat(b, 1) - ctx.x[own])
        size = ctx.norm(cand).view(b, -1)
        size = torch.where(size > 0, size, torch.full_like(size, math.inf))
        values, indices = _spread_nearest(size, k)
        ok = torch.isfinite(values)
        rows = (torch.arange(b, device=dev).unsqueeze(1) * pool.shape[0] + indices)[ok]
        owners.append(own[rows])
        deltas.append(cand[rows])
    owner = torch.cat(owners) if owners else torch.zeros(0, dtype=torch.long, device=dev)
    delta = torch.cat(deltas) if deltas else torch.zeros(0, d, device=dev)
    if owner.numel():
        delta = ctx.final(owner, delta)
        moved = delta.abs().sum(dim=1) > 0
        owner, delta = _affordable(ctx, owner[moved], delta[moved], spare=ctx.config.bisect_steps)
        adv = ctx.ask(owner, delta)
        owner, delta = owner[adv], delta[adv]
    return _noise(ctx, owner, delta)


def _spread_nearest(size: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``k`` pool rows per sample (``size``: ``(B, M)`` distances): the ``k // 2`` nearest,
    then every ``stride``-th of the next ones. The nearest rows of a large pool are mostly
    the sample's own class (no flip): rows a little further out, spread over more
    directions, give the refinement more and more varied flips to start from, while the
    nearest ones keep the closest flips when the pool has them."""
    m = size.shape[1]
    stride = max(1, -(-m // _SPREAD_REACH))
    near = k // 2
    nearest = size.topk(min(near + (k - near) * stride, m), dim=1, largest=False)
    spread = slice(near, None, stride)
    values = torch.cat([nearest.values[:, :near], nearest.values[:, spread][:, : k - near]], 1)
    indices = torch.cat([nearest.indices[:, :near], nearest.indices[:, spread][:, : k - near]], 1)
    return values, indices


def _axis_moves(ctx: Ctx) -> list[Tensor]:
    """Moves along one coordinate group at a time: a single coordinate toward each bound at
    ``ladder`` sizes (the whole way, then 1/8, 1/64 ... of it: trees are not
    monotone along an axis, so the bound alone may miss a nearby flip); a one-hot block to
    each of its categories. The space finalises them."""
    if ctx.groups is None:
        return []
    moves = []
    for g in ctx.groups:
        for cap in (ctx.hi_cap, ctx.lo_cap) if g.numel() == 1 else ():
            for k in range(ctx.config.ladder if bool(cap[:, g].abs().gt(0).any()) else 0):
                moves.append(torch.zeros_like(ctx.x))
                moves[-1][:, g] = cap[:, g] / 8.0**k
        for c in g.tolist() if g.numel() > 1 else ():
            moves.append(torch.zeros_like(ctx.x))
            moves[-1][:, g] = -ctx.x[:, g]
            moves[-1][:, c] += 1.0
    return moves


def _affordable(ctx: Ctx, owner: Tensor, delta: Tensor, spare: int, per_row: int = 1,
                share: float = 1.0) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Keep the first rows of each sample that fit ``share`` of its remaining budget minus
    ``spare``, at ``per_row`` passes a row (rows of equal owner keep their order)."""
    if not owner.numel():
        return owner, delta
    order = torch.argsort(owner, stable=True)
    owner, delta = owner[order], delta[order]
    counts = torch.bincount(owner, minlength=ctx.x.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    first = torch.arange(owner.numel(), device=owner.device) - starts[owner]
    room = ((ctx.oracle.left()[owner] * share).long() - spare).clamp(min=0)
    keep = first * per_row < room
    return owner[keep], delta[keep]


def _noise(ctx: Ctx, owner: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """Uniform noise of growing radius for samples without a flip yet; then, while a
    sample has spent less than half its budget, more draws over the whole box (a flip
    that is hard to find at random, such as a far target class, gets its chance)."""
    b, d = ctx.x.shape
    width = ctx.hi_cap - ctx.lo_cap
    found = torch.zeros(b, dtype=torch.bool, device=ctx.x.device)
    found[owner] = True
    owners, deltas = [owner], [delta]
    rounds = ctx.config.noise_rounds
    for r in range(rounds + (_EXTRA_NOISE_ROUNDS if rounds else 0)):
        need = ~found & (ctx.oracle.left() > ctx.config.bisect_steps + 4)
        if r >= rounds:
            need &= ctx.oracle.queries < ctx.oracle.budget // 2
        need = need.nonzero().squeeze(1)
        if not need.numel():
            break
        own = need.repeat(4)
        radius = 2.0 ** (min(r, rounds - 1) + 1 - rounds)
        u = ctx.streams.draw(own, lambda _i, k, gen: torch.rand(k, d, generator=gen)).to(ctx.x)
        u = u * 2 - 1
        cand = ctx.final(own, radius * u * width[own])
        adv = ctx.ask(own, cand)
        found[own[adv]] = True
        owners.append(own[adv])
        deltas.append(cand[adv])
    return torch.cat(owners), torch.cat(deltas)


def _pick_starts(ctx: Ctx, owner: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """The ``starts`` smallest flips per sample: owners ``(B, S)`` (−1: none) and deltas."""
    (b, d), s = ctx.x.shape, ctx.config.max_starts
    table = torch.full((b, s), -1, dtype=torch.long, device=ctx.x.device)
    starts = torch.zeros(b, s, d, device=ctx.x.device, dtype=ctx.x.dtype)
    filled = [0] * b
    for i in torch.argsort(ctx.norm(delta), stable=True).tolist():
        o, f = int(owner[i]), filled[int(owner[i])]
        if f < s and not any(torch.equal(starts[o, j], delta[i]) for j in range(f)):
            table[o, f], starts[o, f], filled[o] = o, delta[i], f + 1
    return table, starts
