"""Exact minimal flips of decision-tree ensembles by mixed-integer programming.

The formulation of Kantchelian, Tygar and Joseph (ICML 2016), "Evasion and hardening of
tree ensemble classifiers": every threshold ``θ`` that some tree tests on column ``j`` gets
a binary predicate ``p = [x_j ≤ θ]`` (monotone along the sorted thresholds), every tree a
set of leaf weights that sum to 1 and that the predicates confine to the one reachable
leaf, and the ensemble's aggregated scores are linear in the leaf weights. Because a tree
ensemble only sees which *interval* between consecutive thresholds a value falls in, the
cost of a flip is separable per column: for each interval the solver is told the cost of
the cheapest *valid* value in it — the nearest point to ``x_j`` inside the interval, the
box and the allowed direction, an integer for integer columns (so integrality is exact,
not relaxed) — and one-hot blocks are encoded with one selector per category. L1, L2
(squared costs), L∞ and L0 all stay linear, so every margin returned is exact (up to
HiGHS's tolerances and ``time_limit``).

Comparisons follow scikit-learn: a tree sends ``x`` left when ``float32(x_j) <= θ``; the
returned point holds float32 values and is re-checked with :meth:`TreeEnsemble.scores`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from mmargin.exact.types import ExactMargin


@dataclass(frozen=True)
class Tree:
    """One binary tree: ``feature[n] < 0`` marks a leaf; ``value[n]`` is its output vector."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray

    def leaf(self, row: np.ndarray) -> int:
        """The leaf a float32 row reaches."""
        n = 0
        while self.feature[n] >= 0:
            go_left = np.float32(row[self.feature[n]]) <= self.threshold[n]
            n = int(self.left[n] if go_left else self.right[n])
        return n


@dataclass(frozen=True)
class TreeEnsemble:
    """Aggregated scores ``s = base + scale · Σ_trees value[leaf]`` (``n_outputs`` columns).

    Gradient boosting: ``scale`` is the learning rate and ``base`` the initial raw score;
    random forests: ``scale = 1 / n_trees`` and the values are per-class probabilities.
    """

    trees: tuple[Tree, ...]
    n_features: int
    base: np.ndarray
    scale: float = 1.0
    kind: str = "sum"
    info: dict[str, str] = field(default_factory=dict)

    @property
    def n_outputs(self) -> int:
        """Width of the score vector."""
        return int(self.base.shape[0])

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Aggregated scores ``(N, n_outputs)`` of rows ``x`` (float32 comparisons)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        out = np.tile(self.base.astype(np.float64), (x.shape[0], 1))
        for tree in self.trees:
            for i, row in enumerate(x):
                out[i] += self.scale * tree.value[tree.leaf(row)]
        return out


Alternative = tuple[np.ndarray, np.ndarray]
"""``(A, b)``: a flip is reached when ``A @ s >= b`` for the aggregated scores ``s``; the
solver needs one alternative of a list to hold (untargeted arg-max: one per other class)."""


def _f32_above(t: float) -> float:
    """The smallest float32 strictly greater than ``t``."""
    f = np.float32(t)
    return float(f if float(f) > t else np.nextafter(f, np.float32(np.inf)))


def _f32_at_most(t: float) -> float:
    """The largest float32 that is ``<= t``."""
    f = np.float32(t)
    return float(f if float(f) <= t else np.nextafter(f, np.float32(-np.inf)))


@dataclass
class _Column:
    """The thresholds of one column and, per interval, the cheapest valid value and its cost."""

    thresholds: np.ndarray
    values: np.ndarray
    costs: np.ndarray
    feasible: np.ndarray
    p_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))


def _column(x: float, thresholds: np.ndarray, lo: float, hi: float, free: bool, integer: bool,
            weight: float, p: float) -> _Column:  # fmt: skip
    """Intervals ``(θ_k, θ_k+1]`` of one column with their nearest valid value and cost."""
    edges = np.concatenate([[-np.inf], thresholds, [np.inf]])
    k = len(thresholds) + 1
    values, costs, feasible = np.zeros(k), np.zeros(k), np.zeros(k, dtype=bool)
    for i in range(k):
        if integer:
            a = math.floor(edges[i]) + 1 if np.isfinite(edges[i]) else -np.inf
            b = math.floor(edges[i + 1]) if np.isfinite(edges[i + 1]) else np.inf
        else:
            a = _f32_above(edges[i]) if np.isfinite(edges[i]) else -np.inf
            b = _f32_at_most(edges[i + 1]) if np.isfinite(edges[i + 1]) else np.inf
        if not free and not a <= x <= b:
            continue  # a frozen column stays in the interval that holds x
        a, b = (x, x) if not free else (max(a, lo), min(b, hi))
        if a > b:
            continue
        v = float(np.clip(x, a, b))
        feasible[i] = True
        values[i] = v
        d = abs(v - x) * weight
        costs[i] = (1.0 if v != x else 0.0) if p == 0 else (d * d if p == 2 else d)
    return _Column(thresholds, values, costs, feasible)


class _Builder:
    """Sparse rows ``lo <= A v <= hi`` over variables with bounds, costs and integrality."""

    def __init__(self) -> None:
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.cost: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[dict[int, float], float, float]] = []

    def var(self, lb: float, ub: float, cost: float = 0.0, integer: bool = False) -> int:
        self.lb.append(lb)
        self.ub.append(ub)
        self.cost.append(cost)
        self.integer.append(int(integer))
        return len(self.lb) - 1

    def row(self, terms: dict[int, float], lo: float, hi: float) -> None:
        self.rows.append((terms, lo, hi))

    def solve(self, time_limit: float) -> object:
        data, ri, ci = [], [], []
        for r, (terms, _, _) in enumerate(self.rows):
            for c, v in terms.items():
                ri.append(r)
                ci.append(c)
                data.append(v)
        a = sp.csr_matrix((data, (ri, ci)), shape=(len(self.rows), len(self.lb)))
        return milp(
            np.asarray(self.cost),
            integrality=np.asarray(self.integer),
            bounds=Bounds(np.asarray(self.lb), np.asarray(self.ub)),
            constraints=LinearConstraint(a, [r[1] for r in self.rows], [r[2] for r in self.rows]),
            options={"time_limit": max(time_limit, 1e-3), "mip_rel_gap": 1e-9, "disp": False},
        )


def tree_ensemble_margin(
    ensemble: TreeEnsemble,
    x: np.ndarray,
    alternatives: Sequence[Alternative],
    p: float,
    *,
    lower: np.ndarray,
    upper: np.ndarray,
    free: np.ndarray,
    weights: np.ndarray | None = None,
    integer: np.ndarray | None = None,
    groups: Sequence[np.ndarray] = (),
    group_costs: Sequence[float] = (),
    time_limit: float = 30.0,
) -> ExactMargin:
    """The exact smallest flip of a tree ensemble at one flat row ``x``.

    ``alternatives`` state the flip on the aggregated scores (see :data:`Alternative`).
    ``lower`` / ``upper`` bound each column (directions folded in), ``free`` marks the
    columns that may change, ``weights`` are per-column costs (``p`` = 1, 2 or inf:
    ``‖w ⊙ δ‖_p``; ``p = 0``: the number of columns / groups changed), ``integer`` marks
    integer columns. ``groups`` are one-hot blocks (one category active); switching
    group ``g`` costs ``group_costs[g]`` in the same units. Returns the flip with
    ``optimal`` true when HiGHS proved it; ``margin = inf`` when no flip exists.
    """
    started = time.perf_counter()
    xf = np.asarray(x, dtype=np.float64).ravel()
    d = xf.size
    w = np.ones(d) if weights is None else np.asarray(weights, dtype=np.float64)
    integer = np.zeros(d, dtype=bool) if integer is None else np.asarray(integer, dtype=bool)
    in_group = np.full(d, -1)
    for g, cols in enumerate(groups):
        in_group[cols] = g
    thresholds: dict[int, set[float]] = {}
    for tree in ensemble.trees:
        for f, t in zip(tree.feature, tree.threshold, strict=True):
            if f >= 0 and in_group[f] < 0:
                thresholds.setdefault(int(f), set()).add(float(t))
    model = _Builder()
    columns: dict[int, _Column] = {}
    for j, ts in thresholds.items():
        col = _column(xf[j], np.array(sorted(ts)), lower[j], upper[j], bool(free[j]),
                      bool(integer[j]), w[j], p)  # fmt: skip
        col.p_index = np.array([model.var(0, 1, integer=True) for _ in col.thresholds])
        k = len(col.thresholds)
        for i in range(k - 1):  # monotone: x <= θ_i implies x <= θ_{i+1}
            model.row({int(col.p_index[i]): 1.0, int(col.p_index[i + 1]): -1.0}, -np.inf, 0.0)
        for i in range(k + 1):  # interval indicator z_i = p_i − p_{i−1} (p_{−1} = 0, p_k = 1)
            if not col.feasible[i]:
                model.row(_z_terms(col, i), -np.inf, -_z_const(col, i))
        columns[j] = col
    cost_terms: list[tuple[dict[int, float], float]] = []  # per column / group: cost = t·v + c
    for col in columns.values():
        terms: dict[int, float] = {}
        const = 0.0
        for i in range(len(col.thresholds) + 1):
            if col.feasible[i] and col.costs[i] != 0:
                for var, coef in _z_terms(col, i).items():
                    terms[var] = terms.get(var, 0.0) + coef * col.costs[i]
                const += _z_const(col, i) * col.costs[i]
        cost_terms.append((terms, const))
    selectors: list[np.ndarray] = []
    for g, cols in enumerate(groups):
        orig = int(np.argmax(xf[cols]))
        movable = bool(np.all(free[cols]))
        sel = np.array([model.var(0, 1 if movable or c == orig else 0, integer=True)
                        for c in range(len(cols))])  # fmt: skip
        model.row({int(v): 1.0 for v in sel}, 1.0, 1.0)
        selectors.append(sel)
        c_g = float(group_costs[g]) ** (2 if p == 2 else 1)
        cost_terms.append(({int(sel[orig]): -c_g}, c_g))
    leaf_vars = _leaves(model, ensemble, columns, selectors, in_group, groups)
    score_terms = _score_terms(ensemble, leaf_vars)
    if not _flip_rows(model, ensemble, score_terms, alternatives):
        return ExactMargin(math.inf, math.inf, None, None, "tree-milp", True)
    offset = 0.0  # the constant part of the objective (HiGHS only sees the variable part)
    if p == math.inf:
        t = model.var(0.0, np.inf, cost=1.0)
        for terms, const in cost_terms:
            model.row({**terms, t: -1.0}, -np.inf, -const)
    else:
        for terms, const in cost_terms:
            offset += const
            for var, coef in terms.items():
                model.cost[var] += coef
    res = model.solve(time_limit)
    info = {"solve_time": time.perf_counter() - started, "variables": float(len(model.lb))}
    status = getattr(res, "status", -1)
    if status == 2:
        return ExactMargin(math.inf, math.inf, None, None, "tree-milp", True, info)
    sol = getattr(res, "x", None)
    if sol is None:
        return ExactMargin(math.inf, 0.0, None, None, "tree-milp", False,
                           {**info, "time_limit_hit": 1.0})  # fmt: skip
    adv = xf.copy()
    for j, col in columns.items():
        p_val = np.round(sol[col.p_index]) if col.p_index.size else np.zeros(0)
        first = int(np.argmax(p_val)) if p_val.size and p_val.max() > 0.5 else len(p_val)
        adv[j] = col.values[first]
    for cols, sel in zip(groups, selectors, strict=True):
        adv[cols] = 0.0
        adv[cols[int(np.argmax(sol[sel]))]] = 1.0
    scores = ensemble.scores(adv)[0]
    if not any(np.all(a @ scores >= b - 1e-12) for a, b in alternatives):
        return ExactMargin(math.inf, 0.0, None, None, "tree-milp", False,
                           {**info, "verification_failed": 1.0})  # fmt: skip
    margin = _norm(adv - xf, w, p, groups, group_costs)
    dual = getattr(res, "mip_dual_bound", None)
    bound = float(dual) + offset if dual is not None and math.isfinite(dual) else 0.0
    if p == 2:
        bound = math.sqrt(max(bound, 0.0))
    lower_b = max(0.0, min(bound, margin)) if status != 0 else margin
    return ExactMargin(margin, lower_b, adv, int(np.argmax(scores)) if scores.size > 1 else
                       int(scores[0] > 0), "tree-milp", status == 0, info)  # fmt: skip


def _z_terms(col: _Column, i: int) -> dict[int, float]:
    """Variable part of the interval indicator ``z_i = p_i − p_{i−1}``."""
    terms: dict[int, float] = {}
    k = len(col.thresholds)
    if i < k:
        terms[int(col.p_index[i])] = 1.0
    if i > 0:
        terms[int(col.p_index[i - 1])] = terms.get(int(col.p_index[i - 1]), 0.0) - 1.0
    return terms


def _z_const(col: _Column, i: int) -> float:
    """Constant part of ``z_i`` (1 for the last interval: ``p_k = 1``)."""
    return 1.0 if i == len(col.thresholds) else 0.0


def _leaves(model: _Builder, ensemble: TreeEnsemble, columns: dict[int, _Column],
            selectors: list[np.ndarray], in_group: np.ndarray,
            groups: Sequence[np.ndarray]) -> list[dict[int, int]]:  # fmt: skip
    """Leaf variables per tree, confined by the predicates to the reachable leaf."""
    out = []
    for tree in ensemble.trees:
        leaves: dict[int, int] = {}
        below: dict[int, list[int]] = {}
        for n in reversed(range(len(tree.feature))):  # children have larger ids in sklearn
            if tree.feature[n] < 0:
                leaves[n] = model.var(0.0, 1.0)
                below[n] = [n]
            else:
                below[n] = below[int(tree.left[n])] + below[int(tree.right[n])]
        model.row({v: 1.0 for v in leaves.values()}, 1.0, 1.0)
        for n in range(len(tree.feature)):
            f = int(tree.feature[n])
            if f < 0:
                continue
            pred_terms, pred_const = _predicate(f, float(tree.threshold[n]), columns,
                                                selectors, in_group, groups)  # fmt: skip
            left = {leaves[m]: 1.0 for m in below[int(tree.left[n])]}
            right = {leaves[m]: 1.0 for m in below[int(tree.right[n])]}
            # Σ left leaves <= P and Σ right leaves <= 1 − P
            model.row({**left, **{v: -c for v, c in pred_terms.items()}}, -np.inf, pred_const)
            model.row({**right, **pred_terms}, -np.inf, 1.0 - pred_const)
        out.append(leaves)
    return out


def _predicate(f: int, theta: float, columns: dict[int, _Column], selectors: list[np.ndarray],
               in_group: np.ndarray, groups: Sequence[np.ndarray]) -> tuple[dict[int, float],
                                                                            float]:  # fmt: skip
    """``[x_f <= θ]`` as ``terms · v + const``."""
    g = int(in_group[f])
    if g >= 0:  # a one-hot column is 0 or 1
        if theta >= 1.0:
            return {}, 1.0
        if theta < 0.0:
            return {}, 0.0
        pos = int(np.flatnonzero(groups[g] == f)[0])
        return {int(selectors[g][pos]): -1.0}, 1.0
    col = columns[f]
    i = int(np.searchsorted(col.thresholds, theta))
    return {int(col.p_index[i]): 1.0}, 0.0


def _score_terms(ensemble: TreeEnsemble, leaf_vars: list[dict[int, int]]) -> list[dict[int, float]]:
    """Per output column, the linear terms of the aggregated score (without ``base``)."""
    out: list[dict[int, float]] = [{} for _ in range(ensemble.n_outputs)]
    for tree, leaves in zip(ensemble.trees, leaf_vars, strict=True):
        for n, var in leaves.items():
            for k in range(ensemble.n_outputs):
                if tree.value[n][k] != 0:
                    out[k][var] = out[k].get(var, 0.0) + ensemble.scale * float(tree.value[n][k])
    return out


def _flip_rows(model: _Builder, ensemble: TreeEnsemble, score_terms: list[dict[int, float]],
               alternatives: Sequence[Alternative]) -> bool:  # fmt: skip
    """Add "one alternative holds"; False when no alternative is reachable at all."""
    ranges = [_row_ranges(ensemble, np.atleast_2d(a)) for a, _ in alternatives]
    usable = [i for i, (a, b) in enumerate(alternatives) if np.all(ranges[i][1] >= b)]
    if not usable:
        return False
    select = [model.var(0, 1, integer=True) for _ in usable] if len(usable) > 1 else []
    if select:
        model.row(dict.fromkeys(select, 1.0), 1.0, 1.0)
    for pos, i in enumerate(usable):
        a, b = np.atleast_2d(alternatives[i][0]), np.asarray(alternatives[i][1], dtype=float)
        for r in range(a.shape[0]):
            terms: dict[int, float] = {}
            for k in range(ensemble.n_outputs):
                for var, coef in score_terms[k].items():
                    terms[var] = terms.get(var, 0.0) + a[r, k] * coef
            rhs = float(b[r] - a[r] @ ensemble.base)
            if select:  # a_r · s >= b_r − M (1 − select)
                big = rhs - float(ranges[i][0][r] - a[r] @ ensemble.base)
                terms[select[pos]] = -big
                rhs -= big
            model.row(terms, rhs, np.inf)
    return True


def _row_ranges(ensemble: TreeEnsemble, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of ``a @ s`` over all leaf combinations (sum of per-tree extremes)."""
    lo = a @ ensemble.base
    hi = lo.copy()
    for tree in ensemble.trees:
        leaf_values = tree.value[tree.feature < 0] * ensemble.scale
        contrib = leaf_values @ a.T
        lo = lo + contrib.min(axis=0)
        hi = hi + contrib.max(axis=0)
    return lo, hi


def _norm(delta: np.ndarray, w: np.ndarray, p: float, groups: Sequence[np.ndarray],
          group_costs: Sequence[float]) -> float:  # fmt: skip
    """Size of a valid flip: per column ``w|δ|`` (or 1 for L0), per switched group its cost."""
    in_group = np.zeros(delta.size, dtype=bool)
    parts = []
    for cols, c in zip(groups, group_costs, strict=True):
        in_group[cols] = True
        if np.any(delta[cols] != 0):
            parts.append(float(c))
    rest = np.abs(delta[~in_group]) * w[~in_group]
    parts.extend((1.0 if p == 0 else float(v)) for v in rest[rest > 0])
    arr = np.asarray(parts, dtype=np.float64)
    if arr.size == 0:
        return 0.0
    if p == math.inf:
        return float(arr.max())
    if p == 2:
        return float(np.sqrt(np.sum(arr**2)))
    return float(arr.sum())
