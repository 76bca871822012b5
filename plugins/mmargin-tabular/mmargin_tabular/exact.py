"""Exact margins for the models a fraud team deploys, under the schema and the goal.

What each case guarantees (``ExactMargin.optimal``):

- **tree ensembles** (random forest, extra trees, decision tree, gradient boosting):
  :func:`mmargin.exact.trees.tree_ensemble_margin`, a MILP that encodes bounds,
  directions, integers and one-hot blocks exactly — exact for L0, L1, L2 and L∞.
- **linear models** with a binary decision (``LogisticRegression`` at any probability
  threshold, any linear ``decision_function`` at a raw threshold): when integer or
  categorical features are free, a small MILP with those columns integral (L1, L∞;
  exact). Otherwise, and for L2 or several classes, the core's ``linear_margin``
  (closed form / LP / QP), exact for the continuous relaxation: the returned point is
  then re-checked after the space rounds it, so the *reported* lower bound stays valid
  and equals the margin only when the relaxed optimum was already a valid row.
- **ReLU MLPs** (``MLPClassifier`` with ReLU, torch ``Linear``/``ReLU`` stacks): under L1
  with integer / categorical features free, the core's big-M ReLU model with those inputs
  integral and one-hot (exact); otherwise the core's ``relu_net_margin`` (L1 / L∞, cost
  weights folded into the first layer), exact when no discrete feature is free, else a
  lower bound as above.

Every exact point is asked to cross the boundary by :data:`SAFETY` so that the engine's
float32 re-check agrees: margins are exact up to that (relative 2e-5 in log-odds).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mmargin.exact.trees import Alternative, Tree, TreeEnsemble, tree_ensemble_margin
from mmargin.exact.types import ExactMargin

MAX_LEAVES = 20000  # larger forests are left to the decision-based search
MAX_HIDDEN = 256  # same limit as the core's ReLU MILP
SAFETY = 2e-5
"""How far past the boundary (relative, in log-odds or raw-score units) an exact point is
asked to be, so the engine's float32 re-check agrees; margins are exact up to it."""


# -- the problem a sample poses ------------------------------------------------------------
def sample_problem(space: Any, distance: Any, x: np.ndarray) -> dict[str, Any]:
    """Bounds (directions folded in), free columns, integer columns, one-hot groups and
    per-column weights of one flat row, from a tabular or a plain continuous space."""
    xf = np.asarray(x, dtype=np.float64).ravel()
    d = xf.size
    if hasattr(space, "sample_box"):
        lo, hi, free = space.sample_box(xf)
        schema = space.schema
        integer, groups = schema.integer.copy(), list(schema.groups)
    else:
        lo = np.broadcast_to(np.asarray(space.lower, dtype=np.float64), xf.shape).copy()
        hi = np.broadcast_to(np.asarray(space.upper, dtype=np.float64), xf.shape).copy()
        mask = np.ones(d) if space.mask is None else np.broadcast_to(space.mask, xf.shape)
        free = (np.asarray(mask).ravel() > 0) & (hi > lo)
        integer, groups = np.zeros(d, dtype=bool), []
    w = np.ones(d) if distance.weights is None else distance.weights.double().cpu().numpy()
    group_costs = [_switch_cost(distance, d, cols) for cols in groups]
    return {"x": xf, "lower": lo, "upper": hi, "free": free, "integer": integer,
            "groups": groups, "group_costs": group_costs, "weights": w.ravel()}  # fmt: skip


def _switch_cost(distance: Any, d: int, cols: np.ndarray) -> float:
    import torch

    delta = torch.zeros(1, d)
    delta[0, int(cols[0])], delta[0, int(cols[1])] = -1.0, 1.0
    return float(distance.norm(delta)[0])


def discrete_free(problem: dict[str, Any]) -> bool:
    """True when an integer column or a one-hot block may change (relaxations differ)."""
    free = problem["free"]
    return bool(np.any(free & problem["integer"]) or
                any(np.any(free[g]) for g in problem["groups"]))  # fmt: skip


def binary_side(
    goal: Any, label: int, target: int | None, n_classes: int
) -> tuple[int, float, bool] | None:
    """For a two-class decision: ``(class c, threshold T on c's log-odds / raw score,
    want_c)`` — the flip needs ``score_c >= T`` (``want_c``) or ``< T``. ``None`` when the
    goal is not a single half-space on one score."""
    from mmargin.goals import Targeted, Threshold, Untargeted

    if n_classes != 2:
        return None
    if goal is None or isinstance(goal, (Untargeted, Targeted)):
        if isinstance(goal, Targeted) and goal.target == label:
            return None
        return 1, 0.0, label == 0  # arg-max: class 1 iff log-odds > 0
    if isinstance(goal, Threshold):
        if goal.target is not None and goal.target == label:
            return None
        tau = goal.threshold
        level = math.log(tau / (1 - tau)) if goal.scores == "proba" else tau
        return goal.positive, level, label != goal.positive
    return None


# -- tree ensembles ------------------------------------------------------------------------
def ensemble_from_sklearn(est: Any) -> TreeEnsemble | None:
    """A :class:`TreeEnsemble` equal to a fitted scikit-learn tree classifier, or ``None``."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        RandomForestClassifier,  # fmt: skip
    )
    from sklearn.tree import DecisionTreeClassifier

    if isinstance(est, GradientBoostingClassifier):
        stages = est.estimators_
        k = stages.shape[1]
        trees = []
        for stage in stages:
            for out, reg in enumerate(stage):
                t = reg.tree_
                value = np.zeros((t.node_count, k))
                value[:, out] = t.value[:, 0, 0]
                trees.append(_tree(t, value))
        ens = TreeEnsemble(tuple(trees), int(est.n_features_in_), np.zeros(k),
                           float(est.learning_rate), "gb")  # fmt: skip
        x0 = np.zeros((1, ens.n_features))
        raw = np.atleast_1d(np.asarray(est.decision_function(x0), dtype=np.float64)[0])
        base = raw - ens.scores(x0)[0]
        ens = TreeEnsemble(ens.trees, ens.n_features, base, ens.scale, "gb")
    elif isinstance(est, (RandomForestClassifier, ExtraTreesClassifier, DecisionTreeClassifier)):
        members = [est] if isinstance(est, DecisionTreeClassifier) else list(est.estimators_)
        if getattr(est, "n_outputs_", 1) != 1:
            return None
        trees = []
        for m in members:
            t = m.tree_
            v = t.value[:, 0, :].astype(np.float64)
            trees.append(_tree(t, v / np.maximum(v.sum(axis=1, keepdims=True), 1e-300)))
        k = len(est.classes_)
        ens = TreeEnsemble(tuple(trees), int(est.n_features_in_), np.zeros(k),
                           1.0 / len(members), "forest")  # fmt: skip
    else:
        return None
    if sum(int((t.feature < 0).sum()) for t in ens.trees) > MAX_LEAVES:
        return None
    return ens


def _tree(t: Any, value: np.ndarray) -> Tree:
    feature = np.where(t.children_left < 0, -1, t.feature).astype(np.int64)
    return Tree(feature, t.threshold.astype(np.float64), t.children_left.astype(np.int64),
                t.children_right.astype(np.int64), value)  # fmt: skip


def tree_alternatives(ens: TreeEnsemble, goal: Any, label: int,
                      target: int | None) -> list[Alternative] | None:  # fmt: skip
    """The flip as linear conditions on the ensemble's aggregated scores."""
    from mmargin.goals import Targeted, Threshold, Untargeted

    k = ens.n_outputs
    if ens.kind == "gb" and k == 1:  # binary boosting: one log-odds score F
        side = binary_side(goal, label, target, 2)
        if side is None:
            return None
        c, level, want = side
        sign = 1.0 if c == 1 else -1.0  # log-odds of class 0 is −F
        tol = SAFETY * (1.0 + abs(level))
        return [(np.array([[sign]]), np.array([level + tol]))] if want else \
            [(np.array([[-sign]]), np.array([-level + tol]))]  # fmt: skip
    tol = SAFETY / 2  # probabilities (forests) or raw scores
    if isinstance(goal, Threshold):
        if ens.kind != "forest" or goal.scores != "proba" or k != 2:
            return None
        side = binary_side(goal, label, target, 2)
        if side is None:
            return None
        c, _, want = side
        row = np.eye(k)[c]
        tau = goal.threshold
        return [(row[None], np.array([tau + tol]))] if want else \
            [(-row[None], np.array([-tau + tol]))]  # fmt: skip
    if goal is not None and not isinstance(goal, (Untargeted, Targeted)):
        return None
    eye = np.eye(k)
    if target is not None:
        rows = np.stack([eye[target] - eye[j] for j in range(k) if j != target])
        return [(rows, np.full(k - 1, tol))]
    return [((eye[j] - eye[label])[None], np.array([tol])) for j in range(k) if j != label]


def tree_exact(ens: TreeEnsemble, problem: dict[str, Any], distance: Any, goal: Any,
               label: int, target: int | None) -> ExactMargin | None:  # fmt: skip
    """The tree-ensemble MILP for one sample, or ``None`` for goals it does not model."""
    alternatives = tree_alternatives(ens, goal, label, target)
    if alternatives is None:
        return None
    return tree_ensemble_margin(
        ens, problem["x"], alternatives, float(distance.p), lower=problem["lower"],
        upper=problem["upper"], free=problem["free"], weights=problem["weights"],
        integer=problem["integer"], groups=problem["groups"],
        group_costs=problem["group_costs"],
    )  # fmt: skip


# -- the hook's body ---------------------------------------------------------------------------
def exact_margin(model: Any, space: Any, distance: Any, x: np.ndarray, label: int,
                 target: int | None, upper_bound: float | None,
                 goal: Any) -> ExactMargin | None:  # fmt: skip
    """Dispatch one sample to the exact method its model allows (``None``: none applies)."""
    from mmargin.adapters import TorchAdapter
    from mmargin.distances import LpDistance
    from mmargin.goals import Threshold
    from mmargin.spaces import ContinuousSpace
    from mmargin_tabular.adapters import SklearnAdapter
    from mmargin_tabular.exact_nets import linear_exact, mlp_exact
    from mmargin_tabular.space import TabularSpace

    if not (isinstance(distance, LpDistance) and isinstance(space, ContinuousSpace)):
        return None
    tabular = isinstance(space, TabularSpace)
    if not isinstance(model, (SklearnAdapter, TorchAdapter)):
        model = None
    elif isinstance(model, TorchAdapter) and not (tabular or isinstance(goal, Threshold)):
        return None  # plain torch models in plain spaces: the core's own hook
    problem = sample_problem(space, distance, x)
    if tabular and not problem["free"].any():
        return ExactMargin(math.inf, math.inf, None, None,
                           "schema: no feature of this row may change", True)  # fmt: skip
    if model is None:
        return None
    if isinstance(model, TorchAdapter):
        from mmargin.exact.milp import extract_relu_layers

        if model.mean is not None or model.std is not None:
            return None
        layers = extract_relu_layers(model.module)
        head = "logits"
    else:
        if isinstance(goal, Threshold) and (goal.scores == "proba") != (model.scores == "proba"):
            return None  # the goal thresholds a different score than the adapter returns
        ens = model.cache.get("ensemble")
        if ens is None and "ensemble" not in model.cache:
            ens = model.cache["ensemble"] = ensemble_from_sklearn(model.estimator)
        if ens is not None:
            return tree_exact(ens, problem, distance, goal, label, target)
        net = model.net
        if net is None or (len(net.layers) > 1 and net.activation != "relu"):
            return None
        layers, head = net.folded(), net.head
    if layers is None:
        return None
    if len(layers) == 1:
        return linear_exact(layers, head, problem, distance, goal, label, target)
    return mlp_exact(layers, head, problem, distance, goal, label, target, upper_bound)
