"""Decision-based minimal-flip search: for models without gradients (tree ensembles, any
``predict_proba`` black box), using nothing but "is this input adversarial?".

1. **Find flips.** Candidate starting points, each made valid by ``space.finalize``:
   rows of other inputs (the batch, and ``space.reference`` when the space carries
   reference rows such as training data) nearest first; one move per coordinate group
   to its bound in each direction (when the space has few groups); and, for samples still
   without a flip, uniform noise of growing radius in the box.
2. **Shrink.** Every flip is bisected toward ``x`` along the segment; the best
   ``starts`` per sample are refined by rounds of
   - a *coordinate sweep* (spaces with at most ``coordinate_limit`` groups): for each
     changed group, largest cost first, try to undo it, else bisect its size alone —
     the move that reaches axis-aligned boundaries (trees) exactly;
   - a *boundary walk* in the spirit of HopSkipJump (Chen et al. 2020): estimate the
     boundary normal at the current point from ``probes`` random queries, jump to the
     nearest point of the linearised boundary in the distance's own geometry (weighted
     L1 / L2 / L∞ with box and mask), falling back to a HopSkipJump geometric step, and
     bisect back toward ``x``.

``hybrid_search`` (strategy ``hybrid``) runs the gradient strategy on the continuous
relaxation first and seeds this search with its flips: for spaces with integer or
categorical features, where rounding a relaxed flip can undo it.

Every model call counts one pass for each sample whose candidates it holds; no sample
ever goes past its budget. Works for any :class:`~mmargin.spaces.ContinuousSpace` and
:class:`~mmargin.distances.LpDistance`; returns the same :class:`SearchState` as the
gradient strategy. All points it keeps are finalised, verified adversarial inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mmargin.adapters import ModelAdapter
from mmargin.distances import LpDistance
from mmargin.engine.gradient import gradient_search
from mmargin.engine.state import SearchState, per_sample
from mmargin.goals import Goal
from mmargin.spaces import ContinuousSpace

if TYPE_CHECKING:
    from mmargin.engine.runner import SearchSpec

_BIG = 1e4  # an unbounded coordinate moves at most this many times (1 + |x|)


@dataclass(frozen=True)
class DecisionConfig:
    """Knobs of the decision strategy (the defaults are what the tests and benchmarks use)."""

    starts: int = 3
    max_starts: int = 8
    passes: int = 3
    ladder: int = 4
    reference_candidates: int = 24
    noise_rounds: int = 10
    bisect_steps: int = 10
    coordinate_steps: int = 7
    coordinate_limit: int = 64
    probes: int = 16
    chunk: int = 8192


class _Oracle:
    """Answers "adversarial?" for candidate rows and counts one pass per row's sample."""

    def __init__(self, model: ModelAdapter, goal: Goal, labels: Tensor, targets: Tensor | None,
                 budget: int, shape: tuple[int, ...], chunk: int) -> None:  # fmt: skip
        self.model, self.goal, self.labels, self.targets = model, goal, labels, targets
        self.budget, self.shape, self.chunk = budget, shape, chunk
        self.queries = torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)

    def left(self) -> Tensor:
        """Passes each sample still has."""
        return self.budget - self.queries

    @torch.no_grad()
    def ask(self, points: Tensor, owner: Tensor) -> Tensor:
        """Whether each flat row of ``points`` (belonging to sample ``owner``) is adversarial."""
        out = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
        for start in range(0, points.shape[0], self.chunk):
            rows = slice(start, start + self.chunk)
            own = owner[rows]
            scores = self.model(points[rows].view(-1, *self.shape))
            tg = self.targets[own] if self.targets is not None else None
            ok = self.goal.is_adversarial(scores, self.labels[own], tg)
            out[rows] = ok & torch.isfinite(scores).all(dim=1)
        self.queries.index_add_(0, owner, torch.ones_like(owner))
        return out


@dataclass
class _Ctx:
    """What every phase needs: the problem in flat rows ``(B, D)``."""

    space: ContinuousSpace
    distance: LpDistance
    oracle: _Oracle
    x: Tensor
    shape: tuple[int, ...]
    lo_cap: Tensor
    hi_cap: Tensor
    weights: Tensor
    groups: list[Tensor] | None
    config: DecisionConfig
    generator: torch.Generator | None

    def final(self, owner: Tensor, delta: Tensor) -> Tensor:
        """``finalize(x + delta) - x`` for flat rows."""
        xs = self.x[owner].view(-1, *self.shape)
        out = self.space.finalize(xs, xs + delta.view(-1, *self.shape)) - xs
        return out.flatten(1)

    def norm(self, delta: Tensor) -> Tensor:
        return self.distance.norm(delta.view(-1, *self.shape))

    def ask(self, owner: Tensor, delta: Tensor) -> Tensor:
        return self.oracle.ask(self.x[owner] + delta, owner)


def decision_search(
    model: ModelAdapter, space: ContinuousSpace, distance: LpDistance, goal: Goal, x: Tensor,
    labels: Tensor, targets: Tensor | None, spec: SearchSpec, generator: torch.Generator,
    config: DecisionConfig | None = None, seeds: Tensor | None = None,
) -> SearchState:  # fmt: skip
    """Search a batch with decisions only, within ``spec.search_passes()`` passes per sample.

    ``seeds`` (shaped like ``x``, zero rows for none) are perturbations from another search
    to try as starting points, scaled by 1-3 before the space finalises them.
    """
    config = config or DecisionConfig()
    ctx = _context(model, space, distance, goal, x, labels, targets, spec, generator, config)
    state = SearchState.empty(x)
    owner, delta = _find_flips(ctx, None if seeds is None else seeds.flatten(1))
    if owner.numel():
        owner, delta = _affordable(ctx, owner, delta, 0, config.bisect_steps // 2, share=0.4)
        delta = _bisect(ctx, owner, torch.zeros_like(delta), delta, config.bisect_steps // 2)
        _keep_best(ctx, state, owner, delta)
        table, starts = _pick_starts(ctx, owner, delta)
        for s in range(config.max_starts):
            rows = table[:, s] >= 0
            if not rows.any():
                break
            own = table[rows, s]
            share = ctx.oracle.left()[own] // max(config.starts - s, 1)
            _keep_best(ctx, state, own, _refine(ctx, own, starts[rows, s],
                                                ctx.oracle.queries[own] + share))  # fmt: skip
        for _ in range(config.passes):  # budget left: keep walking from the best point
            own = (torch.isfinite(state.best_norm) & (ctx.oracle.left() > 64)).nonzero()
            if not own.numel():
                break
            own = own.squeeze(1)
            best = state.best_delta.view(x.shape[0], -1)[own].clone()
            _keep_best(ctx, state, own, _refine(ctx, own, best, ctx.oracle.queries[own]
                                                + ctx.oracle.left()[own]))  # fmt: skip
    state.queries = ctx.oracle.queries.clone()
    return state


def hybrid_search(
    model: ModelAdapter, space: ContinuousSpace, distance: LpDistance, goal: Goal, x: Tensor,
    labels: Tensor, targets: Tensor | None, spec: SearchSpec, generator: torch.Generator,
) -> SearchState:  # fmt: skip
    """The gradient strategy for a third of the budget, then :func:`decision_search` seeded
    with its (relaxed) flips for the rest; the decision search alone without gradients."""
    if not model.differentiable:
        return decision_search(model, space, distance, goal, x, labels, targets, spec, generator)
    steps = spec.search_passes() // 6
    first = gradient_search(model, space, distance, goal, x, labels, targets, steps,
                            spec.gradient, generator)  # fmt: skip
    used = int(first.queries.max()) if first.queries.numel() else 0
    seeds = torch.where(per_sample(torch.isfinite(first.best_norm), x), first.best_delta, 0.0)
    rest = replace(spec, budget=max(spec.budget - used, 1))
    second = decision_search(model, space, distance, goal, x, labels, targets, rest, generator,
                             seeds=seeds)  # fmt: skip
    second.queries += first.queries
    lost = ~torch.isfinite(second.best_norm) & torch.isfinite(first.best_norm)
    second.best_delta[lost] = first.best_delta[lost]  # last resort: the line search checks it
    second.best_norm[lost] = first.best_norm[lost]
    return second


def _context(model: ModelAdapter, space: ContinuousSpace, distance: LpDistance, goal: Goal,
             x: Tensor, labels: Tensor, targets: Tensor | None, spec: SearchSpec,
             generator: torch.Generator, config: DecisionConfig) -> _Ctx:  # fmt: skip
    """Flat rows, per-coordinate reach (how far each may move each way), weights, groups."""
    shape = tuple(x.shape[1:])
    oracle = _Oracle(model, goal, labels, targets, spec.search_passes(), shape, config.chunk)
    flat = x.flatten(1)
    hi = space.project(x, torch.full_like(x, 1e30)).flatten(1).clamp(min=0)
    lo = space.project(x, torch.full_like(x, -1e30)).flatten(1).clamp(max=0)
    limit = _BIG * (1 + flat.abs())
    weights = torch.ones_like(flat[0]) if distance.weights is None else \
        distance.weights.to(flat).flatten()  # fmt: skip
    groups = getattr(space, "coordinate_groups", None)
    if groups is None and flat.shape[1] <= config.coordinate_limit:
        groups = [[j] for j in range(flat.shape[1])]
    if groups is not None and len(groups) > config.coordinate_limit:
        groups = None
    return _Ctx(space, distance, oracle, flat, shape, torch.maximum(lo, -limit),
                torch.minimum(hi, limit), weights,
                None if groups is None else [torch.as_tensor(g, device=x.device) for g in groups],
                config, generator)  # fmt: skip


# -- phase 1: flips -------------------------------------------------------------------------
def _find_flips(ctx: _Ctx, seeds: Tensor | None) -> tuple[Tensor, Tensor]:
    """Adversarial rows (owner, finalised delta) from seeds, axis moves, other rows, noise."""
    b, d = ctx.x.shape
    dev = ctx.x.device
    deltas = _axis_moves(ctx)
    if seeds is not None:
        deltas = [seeds * scale for scale in (1.0, 1.5, 2.0, 3.0)] + deltas
    owners = [torch.arange(b, device=dev)] * len(deltas)
    pool = ctx.x
    reference = getattr(ctx.space, "reference", None)
    if reference is not None and len(reference):
        ref = torch.as_tensor(reference, dtype=ctx.x.dtype, device=dev).flatten(1)
        pick = torch.randperm(ref.shape[0], generator=ctx.generator)[:512].to(dev)
        pool = torch.cat([ref[pick], ctx.x]) if ref.shape[1] == d else pool
    k = min(ctx.config.reference_candidates, pool.shape[0])
    if k:
        own = torch.arange(b, device=dev).repeat_interleave(pool.shape[0])
        cand = ctx.final(own, pool.repeat(b, 1) - ctx.x[own])
        size = ctx.norm(cand).view(b, -1)
        size = torch.where(size > 0, size, torch.full_like(size, math.inf))
        nearest = size.topk(k, dim=1, largest=False)
        ok = torch.isfinite(nearest.values)
        rows = (torch.arange(b, device=dev).unsqueeze(1) * pool.shape[0] + nearest.indices)[ok]
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


def _axis_moves(ctx: _Ctx) -> list[Tensor]:
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


def _affordable(ctx: _Ctx, owner: Tensor, delta: Tensor, spare: int, per_row: int = 1,
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


def _noise(ctx: _Ctx, owner: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """Uniform noise of growing radius for samples without a flip yet."""
    b, d = ctx.x.shape
    width = ctx.hi_cap - ctx.lo_cap
    found = torch.zeros(b, dtype=torch.bool, device=ctx.x.device)
    found[owner] = True
    owners, deltas = [owner], [delta]
    rounds = ctx.config.noise_rounds
    for r in range(rounds):
        need = (~found & (ctx.oracle.left() > ctx.config.bisect_steps + 4)).nonzero().squeeze(1)
        if not need.numel():
            break
        own = need.repeat(4)
        radius = 2.0 ** (r + 1 - rounds)
        u = torch.rand(own.numel(), d, generator=ctx.generator).to(ctx.x) * 2 - 1
        cand = ctx.final(own, radius * u * width[own])
        adv = ctx.ask(own, cand)
        found[own[adv]] = True
        owners.append(own[adv])
        deltas.append(cand[adv])
    return torch.cat(owners), torch.cat(deltas)


def _pick_starts(ctx: _Ctx, owner: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
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


def _keep_best(ctx: _Ctx, state: SearchState, owner: Tensor, delta: Tensor) -> None:
    """Fold finalised adversarial rows into the per-sample best (largest first, so the
    smallest row of a sample is written last)."""
    flat_best, sizes = state.best_delta.view(ctx.x.shape[0], -1), ctx.norm(delta)
    for r in torch.argsort(sizes, descending=True).tolist():
        i = int(owner[r])
        if float(sizes[r]) <= float(state.best_norm[i]):
            state.best_norm[i], flat_best[i] = sizes[r], delta[r]


# -- phase 2: shrink ------------------------------------------------------------------------
def _bisect(ctx: _Ctx, owner: Tensor, inner: Tensor, outer: Tensor, steps: int) -> Tensor:
    """Bisect between a non-adversarial ``inner`` and an adversarial ``outer`` delta (both
    flat rows); returns the finalised adversarial end. Skips samples out of budget."""
    lo = torch.zeros(owner.numel(), device=outer.device, dtype=outer.dtype)
    hi = torch.ones_like(lo)
    best = outer.clone()
    rows = torch.bincount(owner, minlength=ctx.x.shape[0])[owner]
    for _ in range(steps):
        live = (ctx.oracle.left()[owner] >= rows).nonzero().squeeze(1)
        if not live.numel():
            break
        mid = (lo[live] + hi[live]) / 2
        cand = ctx.final(owner[live], inner[live] + (outer[live] - inner[live]) * mid[:, None])
        adv = ctx.ask(owner[live], cand)
        hi[live] = torch.where(adv, mid, hi[live])
        lo[live] = torch.where(adv, lo[live], mid)
        best[live] = torch.where(adv[:, None], cand, best[live])
    return best


def _refine(ctx: _Ctx, owner: Tensor, delta: Tensor, stop_at: Tensor) -> Tensor:
    """Rounds of a boundary-walk step, then a coordinate sweep for the rows the walk did not
    improve (trees: the walk rarely helps, sweeps do), until the rows' budget share
    (``stop_at``: the query count at which to stop) is spent or two rounds bring nothing."""
    cfg = ctx.config
    n = owner.numel()
    walk = _Walk(torch.full((n,), 0.05, device=delta.device, dtype=delta.dtype),
                 torch.full((n,), 0.1, device=delta.device, dtype=delta.dtype),
                 torch.zeros_like(delta))  # fmt: skip
    stall = torch.zeros(n, dtype=torch.long, device=delta.device)
    need = cfg.probes + 2 * cfg.bisect_steps + 4
    while True:
        live = ((stop_at - ctx.oracle.queries[owner] > need) & (stall < 2)).nonzero().squeeze(1)
        if not live.numel():
            return delta
        before = ctx.norm(delta[live])
        delta[live] = _walk(ctx, owner[live], delta[live], walk, live)
        rows = live[ctx.norm(delta[live]) >= before * (1 - 1e-3)]
        if ctx.groups is not None and rows.numel():
            delta[rows] = _sweep(ctx, owner[rows], delta[rows], stop_at[rows])
        gained = ctx.norm(delta[live]) < before * (1 - 1e-4)
        stall[live] = torch.where(gained, torch.zeros_like(stall[live]), stall[live] + 1)


def _sweep(ctx: _Ctx, owner: Tensor, delta: Tensor, stop_at: Tensor) -> Tensor:
    """Undo or shrink one coordinate group at a time, costliest first."""
    assert ctx.groups is not None
    masks = torch.zeros(len(ctx.groups), delta.shape[1], device=delta.device, dtype=delta.dtype)
    for k, g in enumerate(ctx.groups):
        masks[k, g] = 1.0
    single = torch.tensor([g.numel() == 1 for g in ctx.groups], device=delta.device)
    cost = torch.stack([ctx.norm(delta * m) for m in masks], dim=1)
    order = cost.argsort(dim=1, descending=True)
    for slot in range(len(ctx.groups)):
        g = order[:, slot]
        m = masks[g]
        room = stop_at - ctx.oracle.queries[owner]
        rows = ((cost.gather(1, g[:, None]).squeeze(1) > 0) & (room > 0)).nonzero().squeeze(1)
        if not rows.numel():
            continue
        without = ctx.final(owner[rows], delta[rows] * (1 - m[rows]))
        adv = ctx.ask(owner[rows], without)
        delta[rows] = torch.where(adv[:, None], without, delta[rows])
        shrink = rows[~adv & single[g[rows]]]
        steps = min(ctx.config.coordinate_steps, int(room[shrink].min()) - 1) if shrink.numel() \
            else 0  # fmt: skip
        if steps > 0:
            base = delta[shrink] * (1 - m[shrink])
            delta[shrink] = _bisect(ctx, owner[shrink], base, delta[shrink], steps)
    return delta


@dataclass
class _Walk:
    """Per-row state of the boundary walk: jump overshoot, probe radius (relative to the
    current size), and the running average of the boundary-normal estimates."""

    kappa: Tensor
    sigma: Tensor
    normal: Tensor


def _walk(ctx: _Ctx, owner: Tensor, delta: Tensor, walk: _Walk, rows: Tensor) -> Tensor:
    """One boundary-walk step: normal estimate (averaged with the previous ones), jump to
    the linearised boundary (else a HopSkipJump step), bisection back toward ``x``; a row
    keeps the new point only when it is smaller."""
    cfg = ctx.config
    n, d = delta.shape
    w = ctx.weights
    own = owner.repeat_interleave(cfg.probes)
    base = delta.repeat_interleave(cfg.probes, dim=0)
    xs = ctx.x[own].view(-1, *ctx.shape)
    noise = ctx.space.random(xs, ctx.generator).flatten(1)
    radius = walk.sigma[rows] * (delta * w).norm(dim=1).clamp(min=1e-12)
    step = radius.repeat_interleave(cfg.probes)[:, None] * noise / w
    probe = ctx.space.project(xs, (base + step).view(-1, *ctx.shape)).flatten(1)
    phi = ctx.ask(own, probe).to(delta.dtype).view(n, cfg.probes) * 2 - 1
    mean = phi.mean(dim=1)
    grad = ((phi - mean[:, None])[:, :, None] * (probe - base).view(n, cfg.probes, d)).sum(1)
    uniform = mean.abs() == 1
    walk.sigma[rows] *= torch.where(uniform, torch.where(mean > 0, 2.0, 0.5), 1.0).to(delta)
    unit = grad * w / (grad * w).norm(dim=1, keepdim=True).clamp(min=1e-12)
    walk.normal[rows] = torch.where(uniform[:, None], walk.normal[rows],
                                    0.85 * walk.normal[rows] + unit)  # fmt: skip
    normal = walk.normal[rows] / w  # back to a gradient in input units
    level = (normal * delta).sum(dim=1) * (1 + walk.kappa[rows])
    out = delta.clone()
    idx = ((normal.abs().sum(dim=1) > 0) & (level > 0)).nonzero().squeeze(1)
    if not idx.numel():
        return out
    u = _halfspace(normal[idx] / w, level[idx], ctx.lo_cap[owner[idx]] * w,
                   ctx.hi_cap[owner[idx]] * w, ctx.distance.p)  # fmt: skip
    cand = ctx.final(owner[idx], u / w)
    adv = ctx.ask(owner[idx], cand)
    k = walk.kappa[rows[idx]]
    walk.kappa[rows[idx]] = torch.where(adv, (k / 2).clamp(min=0.01), (k * 2).clamp(max=1.0))
    out = _take_smaller(ctx, owner, out, idx[adv], cand[adv])
    miss = idx[~adv]
    if miss.numel():  # HopSkipJump: a step along the normal from the boundary point
        g = normal[miss] / normal[miss].norm(dim=1, keepdim=True).clamp(min=1e-12)
        scale = (delta[miss].norm(dim=1) / 2).clamp(min=1e-12)
        for _ in range(3):
            cand = ctx.final(owner[miss], delta[miss] + g * scale[:, None])
            adv = ctx.ask(owner[miss], cand)
            scale = torch.where(adv, scale, scale / 2)
            if adv.all():
                break
        out = _take_smaller(ctx, owner, out, miss[adv], cand[adv])
    return out


def _take_smaller(ctx: _Ctx, owner: Tensor, out: Tensor, idx: Tensor, adv: Tensor) -> Tensor:
    """Bisect the adversarial rows ``adv`` toward ``x``; keep them where they beat ``out``."""
    if idx.numel():
        found = _bisect(ctx, owner[idx], torch.zeros_like(adv), adv, ctx.config.bisect_steps)
        better = ctx.norm(found) < ctx.norm(out[idx])
        out[idx] = torch.where(better[:, None], found, out[idx])
    return out


def _halfspace(a: Tensor, c: Tensor, lo: Tensor, hi: Tensor, p: float) -> Tensor:
    """Per row, the smallest ``‖u‖_p`` with ``a·u >= c`` and ``lo <= u <= hi`` (when the box
    allows; else the box's best effort). L1 / L0: fill coordinates greedily by ``|a|``."""
    a64, c64, lo64, hi64 = a.double(), c.double(), lo.double(), hi.double()
    if p in (0.0, 1.0):
        cap = torch.where(a64 > 0, hi64, -lo64).clamp(min=0)
        gain = a64.abs() * cap
        order = a64.abs().argsort(dim=1, descending=True)
        g_sorted = gain.gather(1, order)
        before = g_sorted.cumsum(dim=1) - g_sorted
        need = (c64[:, None] - before).clamp(min=0)
        frac = torch.where(g_sorted > 0, (need / g_sorted.clamp(min=1e-300)).clamp(max=1), 0.0)
        u_sorted = frac * cap.gather(1, order) * a64.gather(1, order).sign()
        u = torch.zeros_like(a64).scatter(1, order, u_sorted)
        return u.to(a)
    direction = a64 if p == 2.0 else a64.sign()
    lam_lo, lam_hi = torch.zeros_like(c64), torch.ones_like(c64)

    def reach(lam: Tensor) -> Tensor:
        return (a64 * torch.minimum(torch.maximum(direction * lam[:, None], lo64), hi64)).sum(1)

    for _ in range(200):
        short = reach(lam_hi) < c64
        if not short.any():
            break
        lam_hi = torch.where(short, lam_hi * 4, lam_hi)
    for _ in range(60):
        mid = (lam_lo + lam_hi) / 2
        ok = reach(mid) >= c64
        lam_hi = torch.where(ok, mid, lam_hi)
        lam_lo = torch.where(ok, lam_lo, mid)
    u = torch.minimum(torch.maximum(direction * lam_hi[:, None], lo64), hi64)
    return u.to(a)
