"""Certified radii: bisection on ``eps`` over the bounds of :mod:`mmargin.exact.crown`.

:func:`certified_radius` finds, per sample, the largest radius at which no alternative of
a flip rule can hold: a certified lower bound on the minimal flip of every sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmargin.exact.crown import BoundConfig, Propagator, Region, propagator
from mmargin.exact.graph import Graph

if TYPE_CHECKING:
    from torch import Tensor

    from mmargin.exact.rules import FlipRule

__all__ = ["HALVINGS", "certified_radius", "rule_rows"]


HALVINGS = 12
"""How many times the bisection's start may be halved before a radius counts as 0."""


def rule_rows(rules: Sequence[FlipRule], n_out: int) -> tuple[np.ndarray, np.ndarray,
                                                              list[list[int]]]:  # fmt: skip
    """Stack the rules of a batch (same layout: as many alternatives with as many rows
    each) into ``rows (B, S, n_out)``, ``rhs (B, S)`` and the alternatives' row groups."""
    layout = [a.shape[0] for a, _ in rules[0].alternatives]
    rows, rhs = [], []
    for rule in rules:
        if [a.shape[0] for a, _ in rule.alternatives] != layout:
            raise ValueError("rules of one batch must share their layout")
        rows.append(np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1, n_out)
                                    for a, _ in rule.alternatives]))  # fmt: skip
        rhs.append(np.concatenate([np.asarray(b, dtype=np.float64).ravel()
                                   for _, b in rule.alternatives]))  # fmt: skip
    starts = np.cumsum([0, *layout])
    groups = [list(range(int(starts[i]), int(starts[i + 1]))) for i in range(len(layout))]
    return np.stack(rows), np.stack(rhs), groups


def certified_radius(
    graph: Graph,
    x: np.ndarray,
    rules: Sequence[FlipRule],
    p: float,
    *,
    lower: np.ndarray,
    upper: np.ndarray,
    weights: np.ndarray | None = None,
    start: np.ndarray | None = None,
    config: BoundConfig | None = None,
    device: Any = "cpu",
) -> np.ndarray:
    """The largest certified radius of each sample (rows of ``x`` ``(B, d)``, flat), by
    bisection on ``eps`` in ``[0, start]`` (``start``: e.g. the attack's margin; default
    the largest distance inside the box).

    ``rules[i]`` is sample ``i``'s flip rule on the outputs; ``lower``/``upper`` the box
    (``(B, d)`` or ``(d,)``), ``weights`` the per-feature costs of the ``p``-norm. A radius
    of ``r`` proves that no flip of size ``<= r`` exists (0 when nothing is proven, e.g. a
    sample the rule already flips). ``config.steps`` bisections after one check at
    ``start``: the answer is within ``start / 2**steps`` of the largest certified radius.
    """
    import torch

    cfg = config or BoundConfig()
    prop = propagator(graph, device)
    dt, dev = prop.dtype, prop.device
    xs = np.atleast_2d(np.asarray(x, dtype=np.float64))
    bsz, d = xs.shape
    w = np.ones(d) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), d)
    lo_a = np.broadcast_to(np.asarray(lower, dtype=np.float64), (bsz, d))
    hi_a = np.broadcast_to(np.asarray(upper, dtype=np.float64), (bsz, d))
    if start is None:
        span = np.maximum(hi_a - xs, xs - lo_a) * w
        start = span.max(1) if p == math.inf else np.linalg.norm(span, ord=p, axis=1)
    start = np.broadcast_to(np.asarray(start, dtype=np.float64), (bsz,))
    rows_np, rhs_np, groups = rule_rows(rules, graph.n_outputs)
    radii = np.zeros(bsz)
    w_t = torch.as_tensor(np.array(w), dtype=dt, device=dev)
    for s0 in range(0, bsz, cfg.chunk):
        sl = slice(s0, min(s0 + cfg.chunk, bsz))

        def t(a: np.ndarray, sl: slice = sl) -> Tensor:
            return torch.as_tensor(np.array(a[sl]), dtype=dt, device=dev)

        template = Region(t(xs), t(lo_a), t(hi_a), t(np.zeros(bsz)), float(p), w_t)
        top = t(np.where(np.isfinite(start), start, 0.0))
        with torch.no_grad():
            good = _bisect(prop, template, top, t(rows_np), t(rhs_np), groups, cfg)
        radii[sl] = good.cpu().numpy()
    return radii


def _bisect(prop: Propagator, template: Region, top: Tensor, rows: Tensor, rhs: Tensor,
            groups: Sequence[Sequence[int]], cfg: BoundConfig) -> Tensor:  # fmt: skip
    """Per sample, the largest ``eps`` in ``[0, top]`` certified by ``prop``: halving from
    ``top`` until certified (at most :data:`HALVINGS` times), then ``cfg.steps``
    bisections between the certified radius and its double — a precision relative to the
    radius, however far below ``top`` it lies."""
    import torch

    def ok(eps: Tensor) -> Tensor:
        region = Region(template.x0, template.lo, template.hi, eps, template.p, template.w)
        return prop.certified(region, rows, rhs, groups, cfg)

    zero = torch.zeros_like(top)
    live = ok(zero) & (top > 0)  # flipped already (or nothing to bisect): radius 0
    good, bad = zero.clone(), top.clone()
    found = torch.zeros_like(live)
    for _ in range(HALVINGS + 1):
        todo = live & ~found
        if not bool(todo.any()):
            break
        res = ok(torch.where(todo, bad, zero)) & todo
        good = torch.where(res, bad, good)
        found |= res
        bad = torch.where(todo & ~res, bad / 2, bad)
    whole = found & (good == top)
    bad = torch.where(found & ~whole, good * 2, bad)
    good = torch.where(found, good, zero)
    for _ in range(cfg.steps):
        mid = (good + bad) / 2
        res = ok(mid) & found & ~whole
        good = torch.where(res, mid, good)
        bad = torch.where(res | whole | ~found, bad, mid)
    return good
