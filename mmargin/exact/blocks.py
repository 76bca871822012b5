"""Reusable blocks of the one MILP builder (:class:`mmargin.exact.builder.MilpBuilder`).

- :func:`perturbation`: the perturbed row ``x`` inside its box and mask, integer columns
  integral, one-hot groups with exactly one active column, and the weighted L1 or L∞
  norm of the change as the objective (optionally capped by a known ``radius``);
- :func:`network`: a traced network (:mod:`mmargin.exact.graph`): affine operations and
  sums as expressions, ReLU units and max-pools by big-M formulations with the bounds of
  :mod:`mmargin.exact.crown` (stable units and decided windows need no binary);
- :func:`require_any`: "one of these alternatives holds" for linear rows over a block,
  with one selector binary per alternative and big-M from each row's proven range — the
  flip condition of networks and tree ensembles alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmargin.exact.builder import MilpBuilder, Terms
from mmargin.exact.graph import Graph
from mmargin.exact.problem import FeatureConstraints


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


Expression = tuple[list[tuple[Any, np.ndarray]], np.ndarray]
"""A node's value as MILP terms and a constant: ``sum_k M_k @ v[idx_k] + c``."""


def network(model: MilpBuilder, graph: Graph, x_idx: np.ndarray,
            bounds: Sequence[tuple[np.ndarray, np.ndarray]]) -> Expression:  # fmt: skip
    """The traced network ``graph`` on block ``x_idx``; returns the output's expression.

    Affine nodes and sums compose expressions (no variables); each ReLU node ``k`` gets
    block ``relu{k}.a`` and, for its unstable units, switches ``relu{k}.s`` (big-M from
    ``bounds``, the flat lower / upper bounds of every node); each max-pool node gets
    ``pool{k}.y`` and one switch per input that can be its window's maximum.
    """
    exprs: list[Expression] = []
    for k, node in enumerate(graph.nodes):
        if node.kind == "input":
            exprs.append(([(sp.identity(node.size, format="csr"), x_idx)], np.zeros(node.size)))
        elif node.kind == "affine":
            assert node.op is not None
            mat = sp.csr_matrix(node.op.matrix())
            terms, c = exprs[node.inputs[0]]
            exprs.append(([(mat @ m, i) for m, i in terms], mat @ c + node.op.offset()))
        elif node.kind == "add":
            parts = [(sgn, exprs[i]) for sgn, i in zip(node.signs, node.inputs, strict=True)]
            const = sum((sgn * c for sgn, (_, c) in parts), np.zeros(node.size))
            exprs.append(([(sgn * m, i) for sgn, (t, _) in parts for m, i in t], const))
        elif node.kind == "relu":
            lo, hi = bounds[node.inputs[0]]
            exprs.append(_relu(model, f"relu{k}", exprs[node.inputs[0]], lo, hi))
        else:
            assert node.windows is not None
            lo, hi = bounds[node.inputs[0]]
            exprs.append(_maxpool(model, f"pool{k}", exprs[node.inputs[0]], node.windows, lo, hi))
    return exprs[-1]


def _rows_of(
    expr: Expression, rows: np.ndarray, scale: float = 1.0
) -> list[tuple[Any, np.ndarray]]:
    """The terms of ``expr`` restricted to ``rows`` (times ``scale``)."""
    return [(scale * sp.csr_matrix(m)[rows], i) for m, i in expr[0]]


def _relu(model: MilpBuilder, name: str, z: Expression, zl: np.ndarray,
          zu: np.ndarray) -> Expression:  # fmt: skip
    """``a = max(z, 0)``: active units (``zl >= 0``) equal ``z``, dead ones are 0, the
    others get a switch ``s`` with ``a >= z``, ``a <= zu s``, ``a <= z - zl (1 - s)``."""
    inf = math.inf
    c = z[1]
    act, dead = zl >= 0, zu <= 0
    a = model.add(f"{name}.a", zl.size, np.where(act, zl, 0.0), np.where(dead, 0.0, zu))
    ia, iu = np.flatnonzero(act), np.flatnonzero(~act & ~dead)
    if ia.size:
        model.rows(f"{name}.active", [(np.ones(ia.size), a[ia]), *_rows_of(z, ia, -1.0)],
                   c[ia], c[ia])  # fmt: skip
    s = model.add(f"{name}.s", iu.size, 0.0, 1.0, integer=True)
    if iu.size:
        one = np.ones(iu.size)
        model.rows(f"{name}.above", [(one, a[iu]), *_rows_of(z, iu, -1.0)], c[iu], inf)
        model.rows(f"{name}.on", [(one, a[iu]), (-zu[iu], s)], -inf, 0.0)
        model.rows(f"{name}.off", [(one, a[iu]), *_rows_of(z, iu, -1.0), (-zl[iu], s)], -inf,
                   c[iu] - zl[iu])  # fmt: skip
    return [(sp.identity(zl.size, format="csr"), a)], np.zeros(zl.size)


def _maxpool(model: MilpBuilder, name: str, z: Expression, windows: np.ndarray,
             zl: np.ndarray, zu: np.ndarray) -> Expression:  # fmt: skip
    """``y_o = max_{i in window o} z_i``: ``y_o >= z_i`` for every input that can be the
    maximum (upper bound at least the window's largest lower bound), and with one switch
    per such input (summing to 1 per window) ``y_o <= z_i + (U_o - zl_i)(1 - s)``."""
    inf = math.inf
    c = z[1]
    n_out = windows.shape[0]
    pairs_o, pairs_i = [], []
    ylo, yhi = np.empty(n_out), np.empty(n_out)
    for o, win in enumerate(windows):
        win = win[win >= 0]
        floor = zl[win].max()
        cand = win[zu[win] >= floor]
        ylo[o], yhi[o] = floor, zu[win].max()
        pairs_o.extend([o] * cand.size)
        pairs_i.extend(cand.tolist())
    po, pi = np.asarray(pairs_o), np.asarray(pairs_i)
    y = model.add(f"{name}.y", n_out, ylo, yhi)
    pick = sp.csr_matrix((np.ones(po.size), (np.arange(po.size), po)), shape=(po.size, n_out))
    model.rows(f"{name}.above", [(pick, y), *_rows_of(z, pi, -1.0)], c[pi], inf)
    counts = np.bincount(po, minlength=n_out)
    multi = counts[po] > 1  # a single candidate is the maximum: y = z_i (rows above + below)
    single = np.flatnonzero(~multi)
    if single.size:
        model.rows(f"{name}.only", [(pick[single], y), *_rows_of(z, pi[single], -1.0)],
                   -inf, c[pi[single]])  # fmt: skip
    sel = np.flatnonzero(multi)
    if sel.size:
        s = model.add(f"{name}.s", sel.size, 0.0, 1.0, integer=True)
        big = yhi[po[sel]] - zl[pi[sel]]
        model.rows(f"{name}.below", [(pick[sel], y), *_rows_of(z, pi[sel], -1.0), (big, s)],
                   -inf, c[pi[sel]] + big)  # fmt: skip
        outs = np.unique(po[sel])
        group = sp.csr_matrix((np.ones(sel.size), (np.searchsorted(outs, po[sel]),
                                                   np.arange(sel.size))),
                              shape=(outs.size, sel.size))  # fmt: skip
        model.rows(f"{name}.one", [(group, s)], 1.0, 1.0)
    return [(sp.identity(n_out, format="csr"), y)], np.zeros(n_out)


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
    return require_any_terms(model, [([(d, idx)], rhs, low, high)
                                     for d, rhs, low, high in conditions], name)  # fmt: skip


TermCondition = tuple[Terms, np.ndarray, np.ndarray, np.ndarray]
"""``(terms, rhs, low, high)``: rows ``sum_k M_k @ v[idx_k] >= rhs`` with the proven range
``[low, high]`` of their left-hand side."""


def require_any_terms(model: MilpBuilder, conditions: Sequence[TermCondition],
                      name: str = "flip") -> bool:  # fmt: skip
    """:func:`require_any` for conditions on several blocks (``terms``, as in
    :meth:`MilpBuilder.rows`)."""
    usable = [c for c in conditions if np.all(c[3] >= c[1])]
    if not usable:
        return False
    if len(usable) == 1:
        terms, rhs, _, _ = usable[0]
        model.rows(name, terms, rhs, math.inf)
        return True
    sel = model.add(f"{name}.select", len(usable), 0.0, 1.0, integer=True)
    model.rows(f"{name}.one", [(np.ones((1, len(usable))), sel)], 1.0, 1.0)
    for k, (terms, rhs, low, _) in enumerate(usable):
        big = rhs - low
        pick = np.zeros((len(rhs), len(usable)))
        pick[:, k] = -big
        model.rows(f"{name}.{k}", [*terms, (pick, sel)], rhs - big, math.inf)
    return True
