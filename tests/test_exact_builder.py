"""The one MILP builder and its blocks against brute force on tiny problems.

Every block that linear, ReLU-network and tree-ensemble margins share is checked on a
problem small enough to enumerate: integer features, one-hot groups with a switching
cost, per-feature weights, box and mask, ReLU units, tree leaves and predicates, and the
flip conditions of untargeted, targeted and threshold goals. The oracle enumerates every
valid row (all features discrete) and takes the cheapest one the model itself calls a
flip, so the solver must match it exactly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mmargin.exact.builder import MilpBuilder
from mmargin.exact.milp import forward
from mmargin.exact.problem import ExactModel, FeatureConstraints, feature_constraints
from mmargin.exact.rules import FlipRule, argmax_rule, flip_rule
from mmargin.exact.solve import exact_margin
from mmargin.exact.trees import Tree, TreeEnsemble
from mmargin.goals import Targeted, Threshold, Untargeted

INF = math.inf


def test_named_blocks_and_a_knapsack_against_enumeration() -> None:
    rng = np.random.default_rng(0)
    value, weight = rng.integers(1, 20, 8).astype(float), rng.integers(1, 10, 8).astype(float)
    model = MilpBuilder()
    take = model.add("take", 8, 0.0, 1.0, cost=-value, integer=True)
    model.rows("capacity", [(weight[None], take)], -INF, 20.0)
    with pytest.raises(ValueError, match="exists already"):
        model.add("take", 1)
    assert np.array_equal(model.block("take"), take) and model.row_names == {"capacity": 1}
    sol = model.solve()
    best = max(value @ np.array(c) for c in itertools.product((0, 1), repeat=8)
               if weight @ np.array(c) <= 20)  # fmt: skip
    assert sol.status == 0 and -sol.value == pytest.approx(best)
    assert weight @ np.round(sol["take"]) <= 20


def _rows(cons: FeatureConstraints, ranges: list[list[float]]) -> np.ndarray:
    """Every valid row: the numeric columns over ``ranges``, each group over its categories."""
    numeric = [j for j in range(cons.x.size) if not cons.in_groups[j]]
    out = []
    for vals in itertools.product(*ranges, *[range(g.size) for g in cons.groups]):
        row = cons.x.copy()
        row[numeric] = vals[: len(numeric)]
        for g, c in zip(cons.groups, vals[len(numeric) :], strict=True):
            row[g] = 0.0
            row[g[c]] = 1.0
        out.append(row)
    rows = np.array(out)
    keep = np.all((rows >= cons.lower - 1e-12) & (rows <= cons.upper + 1e-12), axis=1)
    return rows[keep & np.all(cons.free | (rows == cons.x), axis=1)]


def _cost(cons: FeatureConstraints, rows: np.ndarray) -> np.ndarray:
    """Weighted L1 / L∞ of every row's change (groups by their column weights)."""
    d = np.abs(rows - cons.x) * cons.weights
    return d.max(axis=1) if cons.p == INF else d.sum(axis=1)


def _discrete_case(seed: int, p: float) -> FeatureConstraints:
    """Two integer features in [0, 4] (one only up), one frozen, a one-hot group of 3."""
    rng = np.random.default_rng(seed)
    x = np.array([float(rng.integers(0, 5)), float(rng.integers(0, 5)), 2.0, 0.0, 0.0, 0.0])
    x[3 + rng.integers(0, 3)] = 1.0
    lower = np.array([0.0, x[1], 0.0, 0.0, 0.0, 0.0])  # column 1 may only go up
    upper = np.array([4.0, 4.0, 4.0, 1.0, 1.0, 1.0])
    free = np.array([True, True, False, True, True, True])
    weights = np.array([0.7, 1.3, 1.0, 0.6, 0.6, 0.6])
    return feature_constraints(x, p, lower=lower, upper=upper, free=free, weights=weights,
                               integer=[True, True, True, False, False, False],
                               groups=[np.arange(3, 6)], name="tiny")  # fmt: skip


def _grid(cons: FeatureConstraints) -> np.ndarray:
    return _rows(cons, [list(range(5)), list(range(5)), [2.0]])


def _relu(seed: int, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(o, i)), rng.normal(size=o) * 0.5)
            for i, o in itertools.pairwise(sizes)]  # fmt: skip


def _oracle(scores: np.ndarray, rule: FlipRule, cost: np.ndarray) -> float:
    flips = np.array([rule.holds(s) for s in scores])
    return float(cost[flips].min()) if flips.any() else INF


@pytest.mark.parametrize("p", [1.0, INF])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("hidden", [[], [5], [4, 3]])
def test_net_blocks_match_enumeration(p: float, seed: int, hidden: list[int]) -> None:
    """Linear (no hidden layer) and ReLU nets, untargeted and targeted, integral inputs."""
    cons = _discrete_case(seed, p)
    layers = _relu(seed, [6, *hidden, 3])
    label = int(np.argmax(forward(layers, cons.x)))
    rows = _grid(cons)
    scores = np.array([forward(layers, r) for r in rows])
    form = ExactModel("logits", layers=layers)
    for target in (None, (label + 1) % 3):
        goal = Untargeted() if target is None else Targeted(target)
        found = exact_margin(form, cons, label, target, None, goal)
        rule = argmax_rule(3, label, target)
        best = _oracle(scores, rule, _cost(cons, rows))
        assert found is not None and found.optimal
        assert found.method == ("linear-milp" if not hidden else "milp-integral")
        assert found.margin == pytest.approx(best, rel=1e-9, abs=1e-9)
        if math.isfinite(best):
            adv = found.adversarial
            assert rule.holds(forward(layers, adv)) and cons.valid(adv)
            assert np.all(adv[~cons.free] == cons.x[~cons.free])
            assert found.lower == pytest.approx(best, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("p", [1.0, INF])
@pytest.mark.parametrize("tau", [0.2, 0.5, 0.8])
def test_probability_threshold_becomes_a_logit_threshold(p: float, tau: float) -> None:
    """A one-output logistic net decided at P(1) >= τ: the MILP's flip is the cheapest row
    whose probability crosses τ by the safety margin, both ways."""
    for seed in range(4):
        cons = _discrete_case(10 + seed, p)
        layers = _relu(10 + seed, [6, 4, 1])
        prob = 1.0 / (1.0 + np.exp(-forward(layers, cons.x)[0]))
        label = int(prob >= tau)
        found = exact_margin(ExactModel("logit", layers=layers), cons, label, None, None,
                             Threshold(tau))  # fmt: skip
        rule = flip_rule("logit", 1, Threshold(tau), label, None)
        assert rule is not None and found is not None and found.optimal
        rows = _grid(cons)
        logit = np.array([forward(layers, r)[0] for r in rows])
        level = math.log(tau / (1 - tau))
        safety = 2e-5 * (1 + abs(level))
        flips = logit >= level + safety if label == 0 else logit <= level - safety
        cost = _cost(cons, rows)
        best = float(cost[flips].min()) if flips.any() else INF
        assert found.margin == pytest.approx(best, rel=1e-9, abs=1e-9)


def _stump_forest(seed: int) -> TreeEnsemble:
    """Depth-2 trees over an integer column (0) and a one-hot group (columns 1-3)."""
    rng = np.random.default_rng(seed)
    trees = []
    for _ in range(4):
        feature = np.array([0, int(rng.integers(1, 4)), int(rng.integers(1, 4)), -1, -1, -1, -1])
        threshold = np.array([float(rng.integers(0, 4)) + 0.5, 0.5, 0.5, -2, -2, -2, -2])
        left, right = np.array([1, 3, 5, -1, -1, -1, -1]), np.array([2, 4, 6, -1, -1, -1, -1])
        value = rng.dirichlet(np.ones(2), size=7)
        trees.append(Tree(feature, threshold, left, right, value))
    return TreeEnsemble(tuple(trees), 4, np.zeros(2), 0.25, "forest")


@pytest.mark.parametrize("goal", [Untargeted(), Threshold(0.4), Threshold(0.6, positive=0)])
@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, INF])
@pytest.mark.parametrize("seed", range(4))
def test_tree_blocks_with_onehot_and_integer_match_enumeration(goal, p: float, seed: int) -> None:
    """A 2-feature forest (an integer and a categorical) through the core's dispatcher."""
    ens = _stump_forest(seed)
    x = np.array([float(seed % 5), 0.0, 0.0, 0.0])
    x[1 + seed % 3] = 1.0
    cons = feature_constraints(x, p, lower=[0, 0, 0, 0], upper=[4, 1, 1, 1],
                               integer=[True, False, False, False], weights=[0.8, 1, 1, 1],
                               groups=[np.arange(1, 4)],
                               group_costs=[1.0 if p == 0 else 1.5])  # fmt: skip
    probs = ens.scores(x)[0]
    label = int(np.argmax(probs)) if isinstance(goal, Untargeted) else \
        int((probs[goal.positive] >= goal.threshold) == (goal.positive == 1))  # fmt: skip
    found = exact_margin(ExactModel("proba", ensemble=ens), cons, label, None, None, goal)
    assert found is not None and found.optimal
    rows = _rows(cons, [list(range(5))])
    s = ens.scores(rows)
    if isinstance(goal, Untargeted):
        flips = s[:, 1 - label] - s[:, label] >= 1e-5
    else:
        c = goal.positive
        want = label != c
        flips = s[:, c] >= goal.threshold + 1e-5 if want else s[:, c] <= goal.threshold - 1e-5
    changed = np.abs(rows[:, 0] - x[0]) * 0.8
    switched = np.where(np.any(rows[:, 1:] != x[1:], axis=1), 1.5, 0.0)
    if p == 0:
        changed, switched = (changed > 0) * 1.0, (switched > 0) * 1.0
    parts = np.stack([changed, switched], 1)
    cost = {0.0: parts.sum(1), 1.0: parts.sum(1), 2.0: np.sqrt((parts**2).sum(1)),
            INF: parts.max(1)}[p]  # fmt: skip
    best = float(cost[flips].min()) if flips.any() else INF
    assert found.margin == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_box_mask_and_radius_in_the_perturbation_block() -> None:
    """A continuous linear model in a masked box: the MILP path equals the LP's optimum,
    and a radius that cuts off every flip makes the problem infeasible."""
    from mmargin.exact.linear import linear_margin
    from mmargin.exact.milp import net_margin

    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(3, 5)), rng.normal(size=3)
    x = rng.uniform(0.2, 0.8, size=5)
    label = int(np.argmax(w @ x + b))
    mask = np.array([1, 0, 1, 1, 0], dtype=bool)
    weights = np.array([1.0, 1.0, 2.0, 0.5, 1.0])
    for p in (1.0, INF):
        cons = feature_constraints(x, p, lower=0.0, upper=1.0, free=mask, weights=weights)
        milp = net_margin([(w, b)], argmax_rule(3, label, None), cons)
        lin = linear_margin(w, b, x, label, p, lower=0.0, upper=1.0, mask=mask, weights=weights)
        assert milp.margin == pytest.approx(lin.margin, rel=1e-6)
        assert np.all(milp.adversarial[~mask] == x[~mask])
        capped = net_margin([(w, b)], argmax_rule(3, label, None), cons,
                            upper_bound=0.5 * lin.margin)  # fmt: skip
        assert capped.info.get("upper_bound_infeasible") == 1.0
        assert capped.margin == pytest.approx(lin.margin, rel=1e-6)


def test_rules_refuse_goals_that_are_not_linear_on_the_outputs() -> None:
    assert flip_rule("softmax", 3, Threshold(0.3), 0, None) is None  # 3-class threshold
    assert flip_rule("logit", 1, Threshold(0.3, scores="raw"), 0, None) is None
    assert flip_rule("decision", 1, Threshold(0.3), 0, None) is None  # proba of raw scores
    assert flip_rule("ovr", 2, Threshold(0.3), 0, None) is None
    raw = flip_rule("decision", 1, Threshold(0.25, scores="raw"), 0, None)
    assert raw is not None and raw.holds(np.array([0.3])) and not raw.holds(np.array([0.2]))
    torch_raw = flip_rule("logits", 2, Threshold(1.5, scores="raw"), 1, None)
    assert torch_raw is not None and torch_raw.holds(np.array([9.0, 1.0]))
    assert not torch_raw.holds(np.array([-9.0, 2.0]))
    with pytest.raises(ValueError, match="label"):
        flip_rule("logits", 3, Untargeted(), 5, None)


def test_nothing_free_means_no_flip_whatever_the_model() -> None:
    x = np.array([1.0, 2.0])
    cons = feature_constraints(x, 1.0, free=False, name="schema")
    found = exact_margin(None, cons, 0, None, None, Untargeted())
    assert found is not None and found.margin == INF and found.lower == INF
    assert found.method == "schema: no feature of this row may change"
    assert exact_margin(None, feature_constraints(x, 1.0), 0, None, None, Untargeted()) is None
