"""Reusable blocks of the one MILP builder (:class:`mmargin.exact.builder.MilpBuilder`).

- :func:`perturbation`: the perturbed row ``x`` inside its box and mask, integer columns
  integral, one-hot groups with exactly one active column, and the weighted L1 or L∞
  norm of the change as the objective (optionally capped by a known ``radius``);
- :func:`relu_layers`: ReLU units by the big-M formulation with interval bounds (stable
  units need no binary);
- :func:`require_any`: "one of these alternatives holds" for linear rows over a block,
  with one selector binary per alternative and big-M from each row's proven range — the
  flip condition of networks and tree ensembles alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mmargin.exact.builder import MilpBuilder
from mmargin.exact.problem import FeatureConstraints, Layers


def interval(
    w: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of ``w @ h + b`` over the box ``lo <= h <= hi`` (interval arithmetic)."""
    mid, rad = 0.5 * (lo + hi), 0.5 * (hi - lo)
    c = w @ mid + b
    r = np.abs(w) @ rad
    return c - r, c + r


def perturbation(model: MilpBuilder, cons: FeatureConstraints, lo: np.ndarray, hi: np.ndarray,
                 radius: float | None = None) -> np.ndarray:  # fmt: skip
    """Block ``x`` (the perturbed row, in ``[lo, hi]``) and the norm of ``x - cons.x``.

    L∞ (``cons.p = inf``): block ``t`` with ``w_j |x_j - x0_j| <= t <= radius``, cost 1.
    L1: blocks ``dp``/``dm`` (``x = x0 + dp - dm``) costing ``w`` each, total ``<= radius``.
    Integer columns and one-hot columns are integral; each group sums to 1 (rows
    ``onehot``). Frozen columns have ``lo = hi = x0``. Returns the indices of ``x``.
    """
    x0, w = cons.x, cons.weights
    onehot = cons.in_groups
    xv = model.add("x", x0.size, lo, hi, integer=(cons.integer | onehot) & cons.free)
    fi = np.flatnonzero(cons.free)
    nf, inf = fi.size, math.inf
    if cons.p == inf:
        t = model.add("t", 1, 0.0, inf if radius is None else radius, cost=1.0)
        col = -np.ones((nf, 1))
        model.rows("linf.upper", [(w[fi], xv[fi]), (col, t)], -inf, w[fi] * x0[fi])
        model.rows("linf.lower", [(w[fi], xv[fi]), (-col, t)], w[fi] * x0[fi], inf)
    elif cons.p == 1.0:
        dp = model.add("dp", nf, 0.0, hi[fi] - x0[fi], cost=w[fi])
        dm = model.add("dm", nf, 0.0, x0[fi] - lo[fi], cost=w[fi])
        ones = np.ones(nf)
        model.rows("l1.split", [(ones, xv[fi]), (-ones, dp), (ones, dm)], x0[fi], x0[fi])
        if radius is not None:
            model.rows("l1.radius", [(w[fi][None], dp), (w[fi][None], dm)], -inf, radius)
    else:
        raise ValueError(f"the MILP perturbation block supports p = 1 or inf, got {cons.p}")
    for k, g in enumerate(cons.groups):
        model.rows(f"onehot{k}", [(np.ones((1, g.size)), xv[g])], 1.0, 1.0)
    return xv


def relu_layers(model: MilpBuilder, layers: Layers, h_idx: np.ndarray, lo: np.ndarray,
                hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """ReLU layers ``a = max(W h + b, 0)`` on block ``h_idx`` (bounded by ``[lo, hi]``).

    Interval bounds ``[l, u]`` per unit: active units (``l >= 0``) are equalities, dead
    ones (``u <= 0``) are fixed at 0, the others get a switch ``s`` with
    ``a >= W h + b``, ``a <= u s`` and ``a <= W h + b - l (1 - s)``. Blocks
    ``relu{k}.a`` / ``relu{k}.s``. Returns the last block and its bounds.
    """
    inf = math.inf
    for k, (w, b) in enumerate(layers, start=1):
        zl, zu = interval(w, b, lo, hi)
        act, dead = zl >= 0, zu <= 0
        a = model.add(f"relu{k}.a", w.shape[0], np.where(act, zl, 0.0), np.where(dead, 0.0, zu))
        ia, iu = np.flatnonzero(act), np.flatnonzero(~act & ~dead)
        if ia.size:
            model.rows(
                f"relu{k}.active", [(np.ones(ia.size), a[ia]), (-w[ia], h_idx)], b[ia], b[ia]
            )
        s = model.add(f"relu{k}.s", iu.size, 0.0, 1.0, integer=True)
        if iu.size:
            one = np.ones(iu.size)
            model.rows(f"relu{k}.above", [(one, a[iu]), (-w[iu], h_idx)], b[iu], inf)
            model.rows(f"relu{k}.on", [(one, a[iu]), (-zu[iu], s)], -inf, 0.0)
            model.rows(f"relu{k}.off", [(one, a[iu]), (-w[iu], h_idx), (-zl[iu], s)], -inf,
                       b[iu] - zl[iu])  # fmt: skip
        h_idx, lo, hi = a, np.maximum(zl, 0.0), np.maximum(zu, 0.0)
    return h_idx, lo, hi


Condition = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(D, rhs, low, high)``: rows ``D @ v >= rhs`` over one block, with ``low``/``high`` the
proven range of ``D @ v`` (for reachability and big-M)."""


def require_any(model: MilpBuilder, idx: np.ndarray, conditions: Sequence[Condition],
                name: str = "flip") -> bool:  # fmt: skip
    """Require that one condition holds (all its rows) over block ``idx``.

    Conditions whose rows cannot all be reached (``high < rhs``) are dropped; with one
    left its rows are hard, with several each gets a selector (block ``{name}.select``,
    summing to 1) and its rows are relaxed by ``(rhs - low) (1 - select)``. Returns
    ``False`` when no condition is reachable (no flip exists).
    """
    usable = [c for c in conditions if np.all(c[3] >= c[1])]
    if not usable:
        return False
    if len(usable) == 1:
        d, rhs, _, _ = usable[0]
        model.rows(name, [(d, idx)], rhs, math.inf)
        return True
    sel = model.add(f"{name}.select", len(usable), 0.0, 1.0, integer=True)
    model.rows(f"{name}.one", [(np.ones((1, len(usable))), sel)], 1.0, 1.0)
    for k, (d, rhs, low, _) in enumerate(usable):
        big = rhs - low
        pick = np.zeros((d.shape[0], len(usable)))
        pick[:, k] = -big
        model.rows(f"{name}.{k}", [(d, idx), (pick, sel)], rhs - big, math.inf)
    return True
