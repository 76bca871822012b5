"""The tree-ensemble MILP checked against brute force on tiny random ensembles.

The oracle enumerates every point that can matter — per column the clean value, the
bounds and the float32 neighbours of every threshold (all integers for integer columns),
per one-hot block every category — evaluates the ensemble with its own vectorised tree
walk and takes the cheapest flip. A piecewise-constant model attains its minimum on that
grid, so the MILP must match it exactly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mmargin.exact.trees import Tree, TreeEnsemble, tree_ensemble_margin

INF = math.inf


def _random_tree(rng: np.random.Generator, d: int, depth: int, k: int, cols: list[int]) -> Tree:
    """A full binary tree of ``depth`` splitting on ``cols`` with thresholds in [0, 4]."""
    n = 2 ** (depth + 1) - 1
    feature = np.full(n, -1)
    threshold = np.full(n, -2.0)
    left, right = np.full(n, -1), np.full(n, -1)
    for i in range(2**depth - 1):
        feature[i] = rng.choice(cols)
        threshold[i] = 0.5 if feature[i] >= d - 3 else float(np.round(rng.uniform(0, 4), 2))
        left[i], right[i] = 2 * i + 1, 2 * i + 2
    return Tree(feature, threshold, left, right, rng.normal(size=(n, k)))


def _scores(ens: TreeEnsemble, x: np.ndarray) -> np.ndarray:
    """An independent vectorised evaluation (float32 inputs, ``x <= θ`` goes left)."""
    x = x.astype(np.float32)
    out = np.tile(ens.base, (x.shape[0], 1)).astype(np.float64)
    rows = np.arange(x.shape[0])
    for t in ens.trees:
        node = np.zeros(x.shape[0], dtype=int)
        while np.any(t.feature[node] >= 0):
            inner = t.feature[node] >= 0
            f = np.where(inner, t.feature[node], 0)
            go_left = x[rows, f] <= t.threshold[node]
            node = np.where(inner, np.where(go_left, t.left[node], t.right[node]), node)
        out += ens.scale * t.value[node]
    return out


def _grid(ens, x, lo, hi, free, integer, groups):
    """Every candidate point that can matter (see the module docstring)."""
    in_group = set(c for g in groups for c in g)
    axes = []
    for j in range(x.size):
        if j in in_group:
            continue
        if not free[j]:
            axes.append([x[j]])
        elif integer[j]:
            axes.append(list(np.arange(lo[j], hi[j] + 1)))
        else:
            ts = [t.threshold[n] for t in ens.trees for n in range(len(t.feature))
                  if t.feature[n] == j]  # fmt: skip
            vals = {x[j], lo[j], hi[j]}
            for th in ts:
                f = np.float32(th)
                vals |= {float(np.nextafter(f, np.float32(-np.inf))), float(f),
                         float(np.nextafter(f, np.float32(np.inf)))}  # fmt: skip
            axes.append(sorted(v for v in vals if lo[j] <= v <= hi[j]))
    group_axes = []
    for g in groups:
        movable = all(free[c] for c in g)
        group_axes.append(list(range(len(g))) if movable else [int(np.argmax(x[g]))])
    numeric = [j for j in range(x.size) if j not in in_group]
    points = []
    for vals in itertools.product(*axes, *group_axes):
        row = x.astype(np.float64).copy()
        row[numeric] = vals[: len(numeric)]
        for g, c in zip(groups, vals[len(numeric) :], strict=True):
            row[g] = 0.0
            row[g[c]] = 1.0
        points.append(row)
    return np.array(points)


def _cost(points, x, w, p, groups, group_costs):
    in_group = np.zeros(x.size, dtype=bool)
    parts = []
    for g, c in zip(groups, group_costs, strict=True):
        in_group[g] = True
        parts.append(np.where(np.any(points[:, g] != x[g], axis=1), c, 0.0))
    d = np.abs(points[:, ~in_group] - x[~in_group]) * w[~in_group]
    if p == 0:
        d = (d > 0).astype(float)
    cols = np.concatenate([d, np.stack(parts, 1)], axis=1) if parts else d
    if p == INF:
        return cols.max(axis=1)
    if p == 2:
        return np.sqrt((cols**2).sum(axis=1))
    return cols.sum(axis=1)


def _case(seed: int, k: int = 1, with_group: bool = False):
    rng = np.random.default_rng(seed)
    d = 6 if with_group else 3
    cols = list(range(d)) if with_group else [0, 1, 2]
    trees = tuple(_random_tree(rng, d if with_group else 99, 3, k, cols) for _ in range(5))
    ens = TreeEnsemble(trees, d, rng.normal(size=k) * 0.3, 0.5)
    x = np.zeros(d)
    x[:3] = [float(np.float32(rng.uniform(0, 4))), float(rng.integers(0, 5)),
             float(np.float32(rng.uniform(0, 4)))]  # fmt: skip
    groups = [np.arange(3, 6)] if with_group else []
    if with_group:
        x[3 + rng.integers(0, 3)] = 1.0
    lo = np.zeros(d)
    hi = np.full(d, 4.0)
    hi[3:] = 1.0
    integer = np.zeros(d, dtype=bool)
    integer[1] = True
    return ens, x, lo, hi, integer, groups


@pytest.mark.parametrize("p", [1.0, 2.0, INF, 0.0])
@pytest.mark.parametrize("seed", range(6))
def test_binary_margin_matches_brute_force(p: float, seed: int) -> None:
    ens, x, lo, hi, integer, groups = _case(seed, with_group=seed % 2 == 1)
    free = np.ones(x.size, dtype=bool)
    free[0] = seed % 3 != 0  # sometimes a frozen column
    lo[2] = x[2] if seed % 4 == 1 else lo[2]  # sometimes only-up
    w = np.array([1.0, 0.5, 2.0, 0.7, 0.7, 0.7])[: x.size]
    group_costs = [1.0 if p == 0 else 1.4] * len(groups)
    s0 = _scores(ens, x[None])[0, 0]
    want_up = s0 <= 0
    alt = [(np.array([[1.0 if want_up else -1.0]]), np.array([1e-9]))]
    found = tree_ensemble_margin(ens, x, alt, p, lower=lo, upper=hi, free=free, weights=w,
                                 integer=integer, groups=groups,
                                 group_costs=group_costs)  # fmt: skip
    pts = _grid(ens, x, lo, hi, free, integer, groups)
    s = _scores(ens, pts)[:, 0]
    flips = s >= 1e-9 if want_up else s <= -1e-9
    best = _cost(pts[flips], x, w, p, groups, group_costs).min() if flips.any() else INF
    assert found.margin == pytest.approx(best, rel=1e-9, abs=1e-9)
    if math.isfinite(best):
        adv = found.adversarial
        assert found.optimal and found.lower == pytest.approx(best, rel=1e-6, abs=1e-9)
        assert (_scores(ens, adv[None])[0, 0] > 0) == want_up
        assert np.all(adv >= lo - 1e-12) and np.all(adv <= hi + 1e-12)
        assert np.all(adv[~free] == x[~free]) and np.all(adv[integer] == np.round(adv[integer]))
        for g in groups:
            assert sorted(adv[g]) == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("target", [None, 0, 2])
@pytest.mark.parametrize("seed", range(4))
def test_multiclass_argmax_matches_brute_force(target: int | None, seed: int) -> None:
    ens, x, lo, hi, integer, _ = _case(100 + seed, k=3)
    s0 = _scores(ens, x[None])[0]
    label = int(np.argmax(s0))
    if target == label:
        target = (label + 1) % 3
    eye = np.eye(3)
    if target is None:
        alts = [((eye[j] - eye[label])[None], np.array([1e-9])) for j in range(3) if j != label]
    else:
        rows = np.stack([eye[target] - eye[j] for j in range(3) if j != target])
        alts = [(rows, np.full(2, 1e-9))]
    free = np.ones(3, dtype=bool)
    found = tree_ensemble_margin(ens, x, alts, 1.0, lower=lo, upper=hi, free=free,
                                 integer=integer)  # fmt: skip
    pts = _grid(ens, x, lo, hi, free, integer, [])
    s = _scores(ens, pts)
    if target is None:
        flips = np.delete(s, label, axis=1).max(axis=1) >= s[:, label] + 1e-9
    else:
        flips = np.all(s[:, [target]] >= np.delete(s, target, axis=1) + 1e-9, axis=1)
    best = np.abs(pts[flips] - x).sum(axis=1).min() if flips.any() else INF
    assert found.margin == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_no_flip_when_every_column_is_frozen() -> None:
    ens, x, lo, hi, _, _ = _case(7)
    s0 = _scores(ens, x[None])[0, 0]
    alt = [(np.array([[1.0 if s0 <= 0 else -1.0]]), np.array([1e-9]))]
    found = tree_ensemble_margin(ens, x, alt, 1.0, lower=lo, upper=hi,
                                 free=np.zeros(3, dtype=bool))  # fmt: skip
    assert found.margin == INF and found.lower == INF and found.adversarial is None


def test_unreachable_alternative_is_infeasible_without_solving() -> None:
    ens, x, lo, hi, _, _ = _case(3)
    alt = [(np.array([[1.0]]), np.array([1e6]))]  # no leaf combination scores that high
    found = tree_ensemble_margin(ens, x, alt, 1.0, lower=lo, upper=hi, free=np.ones(3, bool))
    assert found.margin == INF and found.optimal


def test_scores_follow_float32_comparisons() -> None:
    """A value just above a float64 threshold that rounds onto it in float32 goes left."""
    t = Tree(np.array([0, -1, -1]), np.array([0.1, -2, -2]), np.array([1, -1, -1]),
             np.array([2, -1, -1]), np.array([[0.0], [-1.0], [1.0]]))  # fmt: skip
    ens = TreeEnsemble((t,), 1, np.zeros(1))
    assert float(np.float32(0.1)) > 0.1  # float32(0.1) lies above 0.1 ...
    assert ens.scores(np.array([[0.1]]))[0, 0] == 1.0  # ... so it goes right
    below = float(np.nextafter(np.float32(0.1), np.float32(0)))
    assert ens.scores(np.array([[below]]))[0, 0] == -1.0
