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

from mmargin.exact.blocks import require_any
from mmargin.exact.builder import MilpBuilder
from mmargin.exact.limits import LIMITS, ExactLimits
from mmargin.exact.rules import Alternative as Alternative
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

    @property
    def n_leaves(self) -> int:
        """Leaves in all trees (what the MILP's size grows with)."""
        return sum(int((t.feature < 0).sum()) for t in self.trees)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Aggregated scores ``(N, n_outputs)`` of rows ``x`` (float32 comparisons)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        out = np.tile(self.base.astype(np.float64), (x.shape[0], 1))
        for tree in self.trees:
            for i, row in enumerate(x):
                out[i] += self.scale * tree.value[tree.leaf(row)]
        return out


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
    time_limit: float | None = None,
    limits: ExactLimits = LIMITS,
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
    model = MilpBuilder()
    columns = {j: _column_block(model, j, xf[j], np.array(sorted(ts)), lower[j], upper[j],
                                bool(free[j]), bool(integer[j]), w[j], p)
               for j, ts in sorted(thresholds.items())}  # fmt: skip
    cost_terms = [_column_cost(col) for col in columns.values()]  # cost = terms · v + const
    selectors: list[np.ndarray] = []
    for g, cols in enumerate(groups):
        orig = int(np.argmax(xf[cols]))
        movable = bool(np.all(free[cols]))
        sel = model.add(f"group{g}", len(cols), 0.0,
                        [1.0 if movable or c == orig else 0.0 for c in range(len(cols))],
                        integer=True)  # fmt: skip
        model.rows(f"group{g}.one", [(np.ones((1, len(cols))), sel)], 1.0, 1.0)
        selectors.append(sel)
        c_g = float(group_costs[g]) ** (2 if p == 2 else 1)
        cost_terms.append(({int(sel[orig]): -c_g}, c_g))
    leaf_idx, leaf_values = _leaves(model, ensemble, columns, selectors, in_group, groups)
    if not _flip_rows(model, ensemble, leaf_idx, leaf_values, alternatives):
        return ExactMargin(math.inf, math.inf, None, None, "tree-milp", True)
    if p == math.inf:
        t = int(model.add("t", 1, 0.0, np.inf, cost=1.0)[0])
        for terms, const in cost_terms:
            model.row("linf", {**terms, t: -1.0}, -np.inf, -const)
    else:
        for terms, const in cost_terms:
            model.offset += const
            if terms:
                model.add_cost(np.fromiter(terms, dtype=np.int64), list(terms.values()))
    res = model.solve(time_limit, limits)
    info = {"solve_time": time.perf_counter() - started, "variables": float(model.n)}
    if res.status == 2:
        return ExactMargin(math.inf, math.inf, None, None, "tree-milp", True, info)
    if res.x is None:
        return ExactMargin(math.inf, 0.0, None, None, "tree-milp", False,
                           {**info, "time_limit_hit": 1.0})  # fmt: skip
    adv = _decode(xf, res.x, columns, groups, selectors)
    scores = ensemble.scores(adv)[0]
    if not any(np.all(a @ scores >= b - 1e-12) for a, b in alternatives):
        return ExactMargin(math.inf, 0.0, None, None, "tree-milp", False,
                           {**info, "verification_failed": 1.0})  # fmt: skip
    margin = _norm(adv - xf, w, p, groups, group_costs)
    bound = res.bound if res.bound is not None else 0.0
    if p == 2:
        bound = math.sqrt(max(bound, 0.0))
    lower_b = max(0.0, min(bound, margin)) if res.status != 0 else margin
    return ExactMargin(margin, lower_b, adv, int(np.argmax(scores)) if scores.size > 1 else
                       int(scores[0] > 0), "tree-milp", res.status == 0, info)  # fmt: skip


def _column_block(model: MilpBuilder, j: int, x: float, thresholds: np.ndarray, lo: float,
                  hi: float, free: bool, integer: bool, weight: float,
                  p: float) -> _Column:  # fmt: skip
    """Block ``col{j}.le`` of monotone predicates ``[x_j <= θ_i]`` with the intervals that
    hold no valid value ruled out."""
    col = _column(x, thresholds, lo, hi, free, integer, weight, p)
    k = len(col.thresholds)
    col.p_index = model.add(f"col{j}.le", k, 0.0, 1.0, integer=True)
    for i in range(k - 1):  # monotone: x <= θ_i implies x <= θ_{i+1}
        model.row(f"col{j}.monotone", {int(col.p_index[i]): 1.0, int(col.p_index[i + 1]): -1.0},
                  -np.inf, 0.0)  # fmt: skip
    for i in range(k + 1):  # interval indicator z_i = p_i − p_{i−1} (p_{−1} = 0, p_k = 1)
        if not col.feasible[i]:
            model.row(f"col{j}.invalid", _z_terms(col, i), -np.inf, -_z_const(col, i))
    return col


def _column_cost(col: _Column) -> tuple[dict[int, float], float]:
    """The column's cost as ``terms · v + const`` over its interval indicators."""
    terms: dict[int, float] = {}
    const = 0.0
    for i in range(len(col.thresholds) + 1):
        if col.feasible[i] and col.costs[i] != 0:
            for var, coef in _z_terms(col, i).items():
                terms[var] = terms.get(var, 0.0) + coef * col.costs[i]
            const += _z_const(col, i) * col.costs[i]
    return terms, const


def _decode(xf: np.ndarray, sol: np.ndarray, columns: dict[int, _Column],
            groups: Sequence[np.ndarray], selectors: list[np.ndarray]) -> np.ndarray:  # fmt: skip
    """The row the solver chose: per column its interval's value, per group its category."""
    adv = xf.copy()
    for j, col in columns.items():
        p_val = np.round(sol[col.p_index]) if col.p_index.size else np.zeros(0)
        first = int(np.argmax(p_val)) if p_val.size and p_val.max() > 0.5 else len(p_val)
        adv[j] = col.values[first]
    for cols, sel in zip(groups, selectors, strict=True):
        adv[cols] = 0.0
        adv[cols[int(np.argmax(sol[sel]))]] = 1.0
    return adv


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


def _leaves(model: MilpBuilder, ensemble: TreeEnsemble, columns: dict[int, _Column],
            selectors: list[np.ndarray], in_group: np.ndarray,
            groups: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Block ``tree{k}.leaf`` per tree (weights summing to 1), confined by the predicates to
    the reachable leaf. Returns every leaf variable and its scaled output vector."""
    all_idx, all_values = [], []
    for k, tree in enumerate(ensemble.trees):
        leaf_nodes = np.flatnonzero(tree.feature < 0)
        idx = model.add(f"tree{k}.leaf", leaf_nodes.size, 0.0, 1.0)
        leaves = {int(n): int(v) for n, v in zip(leaf_nodes, idx, strict=True)}
        below: dict[int, list[int]] = {}
        for n in reversed(range(len(tree.feature))):  # children have larger ids in sklearn
            below[n] = [n] if tree.feature[n] < 0 else \
                below[int(tree.left[n])] + below[int(tree.right[n])]  # fmt: skip
        model.rows(f"tree{k}.one", [(np.ones((1, idx.size)), idx)], 1.0, 1.0)
        for n in range(len(tree.feature)):
            f = int(tree.feature[n])
            if f < 0:
                continue
            pred_terms, pred_const = _predicate(f, float(tree.threshold[n]), columns,
                                                selectors, in_group, groups)  # fmt: skip
            left = {leaves[m]: 1.0 for m in below[int(tree.left[n])]}
            right = {leaves[m]: 1.0 for m in below[int(tree.right[n])]}
            # Σ left leaves <= P and Σ right leaves <= 1 − P
            model.row(f"tree{k}.left", {**left, **{v: -c for v, c in pred_terms.items()}},
                      -np.inf, pred_const)  # fmt: skip
            model.row(f"tree{k}.right", {**right, **pred_terms}, -np.inf, 1.0 - pred_const)
        all_idx.append(idx)
        all_values.append(ensemble.scale * np.asarray(tree.value, dtype=np.float64)[leaf_nodes])
    return np.concatenate(all_idx), np.concatenate(all_values)


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


def _flip_rows(model: MilpBuilder, ensemble: TreeEnsemble, leaf_idx: np.ndarray,
               leaf_values: np.ndarray, alternatives: Sequence[Alternative]) -> bool:  # fmt: skip
    """The flip: one alternative holds on the scores ``base + leaf_values.T @ leaves`` (the
    shared :func:`~mmargin.exact.blocks.require_any`); False when none is reachable."""
    conditions = []
    for a, b in alternatives:
        a2 = np.atleast_2d(np.asarray(a, dtype=np.float64))
        lo, hi = _row_ranges(ensemble, a2)
        shift = a2 @ ensemble.base
        d = sp.csr_matrix(a2 @ leaf_values.T)
        conditions.append((d, np.asarray(b, dtype=np.float64) - shift, lo - shift, hi - shift))
    return require_any(model, leaf_idx, conditions)


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
