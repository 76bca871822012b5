"""Phase 2 of the decision strategy: shrink verified flips toward the clean input.

Rounds of a *boundary walk* in the spirit of HopSkipJump (Chen et al. 2020) — estimate the
boundary normal from random probes (each sample's own stream), jump to the nearest point
of the linearised boundary in the distance's geometry (weighted L1 / L2 / L∞ with box
and mask), else take a HopSkipJump step, and bisect back toward ``x`` — and, for spaces
with few coordinate groups, a *coordinate sweep* that undoes or shrinks one group at a
time (what reaches the axis-aligned boundaries of trees exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmargin.engine.decision_core import Ctx, bisect


def refine(ctx: Ctx, owner: Tensor, delta: Tensor, stop_at: Tensor) -> Tensor:
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


def _sweep(ctx: Ctx, owner: Tensor, delta: Tensor, stop_at: Tensor) -> Tensor:
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
        if shrink.numel():  # each row bisects as far as its own budget allows
            steps = (room[shrink] - 1).clamp(min=0, max=ctx.config.coordinate_steps)
            base = delta[shrink] * (1 - m[shrink])
            delta[shrink] = bisect(ctx, owner[shrink], base, delta[shrink], steps)
    return delta


@dataclass
class _Walk:
    """Per-row state of the boundary walk: jump overshoot, probe radius (relative to the
    current size), and the running average of the boundary-normal estimates."""

    kappa: Tensor
    sigma: Tensor
    normal: Tensor


def _walk(ctx: Ctx, owner: Tensor, delta: Tensor, walk: _Walk, rows: Tensor) -> Tensor:
    """One boundary-walk step: normal estimate (averaged with the previous ones), jump to
    the linearised boundary (else a HopSkipJump step), bisection back toward ``x``; a row
    keeps the new point only when it is smaller."""
    cfg = ctx.config
    n, d = delta.shape
    w = ctx.weights
    own = owner.repeat_interleave(cfg.probes)
    base = delta.repeat_interleave(cfg.probes, dim=0)
    xs = ctx.x[own].view(-1, *ctx.shape)
    noise = (
        ctx.streams.draw(
            own,
            lambda i, k, gen: ctx.space.random(
                ctx.x[i].view(1, *ctx.shape).expand(k, *ctx.shape), gen
            ),
        )
        .to(xs)
        .flatten(1)
    )
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
        cand = delta[miss].clone()
        adv = torch.zeros(miss.numel(), dtype=torch.bool, device=delta.device)
        for _ in range(3):  # rows that flipped stop asking
            todo = (~adv).nonzero().squeeze(1)
            if not todo.numel():
                break
            trial = ctx.final(owner[miss[todo]], delta[miss[todo]] + g[todo] * scale[todo, None])
            hit = ctx.ask(owner[miss[todo]], trial)
            cand[todo] = torch.where(hit[:, None], trial, cand[todo])
            adv[todo] = hit
            scale[todo] = torch.where(hit, scale[todo], scale[todo] / 2)
        out = _take_smaller(ctx, owner, out, miss[adv], cand[adv])
    return out


def _take_smaller(ctx: Ctx, owner: Tensor, out: Tensor, idx: Tensor, adv: Tensor) -> Tensor:
    """Bisect the adversarial rows ``adv`` toward ``x``; keep them where they beat ``out``."""
    if idx.numel():
        found = bisect(ctx, owner[idx], torch.zeros_like(adv), adv, ctx.config.bisect_steps)
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
