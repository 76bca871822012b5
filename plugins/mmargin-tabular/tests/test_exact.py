"""Exact margins under a schema, checked by brute force; the searches checked against them.

- linear: an integral MILP (L1, L∞) against enumeration of every integer / binary /
  category combination with the continuous feature solved in closed form;
- trees: the MILP against scikit-learn's own ``predict_proba`` on a grid of every value
  that can matter;
- search vs exact on the fraud models: the decision strategy on gradient boosting within
  5 % (median) of the MILP, the gradient strategy on the MLP within 2 % of the ReLU MILP.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mmargin.plugin import Status, Threshold, Untargeted
from mmargin.testing import SearchSpec, minimal_flip
from mmargin_tabular import models
from mmargin_tabular.adapters import SklearnAdapter
from mmargin_tabular.distances import make_distance
from mmargin_tabular.schema import parse_schema
from mmargin_tabular.space import TabularSpace, tabular_space


def exact_margin(model, space, distance, x, label, target, upper_bound, goal):
    """The core's one exact hook, as the engine calls it (through the plugin host)."""
    from mmargin import plugins

    return plugins.manager().hook.mmargin_exact_margin(
        model=model,
        space=space,
        distance=distance,
        x=x,
        label=label,
        target=target,
        upper_bound=upper_bound,
        goal=goal,
    )


MINI = {
    "features": {
        "c": {"lower": 0, "upper": 10, "cost": 1.0},
        "k": {"type": "integer", "lower": 0, "upper": 5, "cost": 0.7},
        "b": {"type": "binary", "cost": 1.5},
        "cat": {"type": "categorical", "categories": ["x", "y", "z"], "cost": 1.2},
        "fixed": {"lower": 0, "upper": 10, "mutable": False},
    }
}


def _mini_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 7))
    x[:, 0] = np.round(rng.uniform(0, 10, n), 2)
    x[:, 1] = rng.integers(0, 6, n)
    x[:, 2] = rng.integers(0, 2, n)
    x[np.arange(n), 3 + rng.integers(0, 3, n)] = 1.0
    x[:, 6] = np.round(rng.uniform(0, 10, n), 2)
    return x.astype(np.float32)


def _combos(x: np.ndarray):
    """Every valid setting of the discrete features (the continuous one left as is)."""
    for k, b, cat in itertools.product(range(6), (0, 1), range(3)):
        row = x.astype(np.float64).copy()
        row[1], row[2] = k, b
        row[3:6] = 0.0
        row[3 + cat] = 1.0
        yield row


@pytest.mark.parametrize("p", ["l1", "linf"])
@pytest.mark.parametrize("seed", range(3))
def test_linear_milp_matches_enumeration(p: str, seed: int) -> None:
    schema = parse_schema(MINI)
    space = TabularSpace(schema=schema)
    x_all = _mini_rows(200, seed)
    y = (x_all[:, 0] / 10 + x_all[:, 1] / 5 + x_all[:, 4] - x_all[:, 2] > 1.2).astype(int)
    model = LogisticRegression(C=10.0).fit(x_all.astype(np.float64), y)
    adapter = SklearnAdapter(model)
    dist = make_distance(p, schema, units="cost")
    w_c, w = float(dist.weights[0]), dist.weights.double().numpy()
    coef, b0 = model.coef_[0], float(model.intercept_[0])
    tau = 0.4
    level = math.log(tau / (1 - tau))
    for x in x_all[:6]:
        z0 = coef @ x + b0
        label = int(z0 >= level)
        found = exact_margin(adapter, space, dist, x, label, None, None, Threshold(tau))
        best = math.inf
        for row in _combos(x):
            rest = coef @ row - coef[0] * row[0] + b0
            need = (level - rest) / coef[0]  # c at which the log-odds reach the threshold
            lo, hi = (need, 10.0) if (coef[0] > 0) == (label == 0) else (0.0, need)
            if lo > hi or hi < 0 or lo > 10:
                continue
            c = float(np.clip(x[0], max(lo, 0.0), min(hi, 10.0)))
            parts = np.abs(row - x) * w
            parts[0] = abs(c - x[0]) * w_c
            parts[3:6] = 0.0
            cat_cost = 1.2 if not np.array_equal(row[3:6], x[3:6]) else 0.0
            cost = (parts.sum() + cat_cost) if p == "l1" else max(parts.max(), cat_cost)
            best = min(best, cost)
        assert found is not None and found.method == "linear-milp"
        assert found.margin == pytest.approx(best, rel=1e-3, abs=1e-4)
        if math.isfinite(best):
            adv = torch.as_tensor(found.adversarial[None], dtype=torch.float32)
            assert space.check(adv.numpy())[0] is None
            assert bool(Threshold(tau).is_adversarial(adapter(adv), torch.tensor([label])))


def test_linear_relaxation_is_reported_as_a_lower_bound() -> None:
    schema = parse_schema(MINI)
    x_all = _mini_rows(200, 0)
    y = (x_all[:, 1] + x_all[:, 2] > 3).astype(int)
    model = LogisticRegression().fit(x_all.astype(np.float64), y)
    found = exact_margin(SklearnAdapter(model), TabularSpace(schema=schema),
                         make_distance("l2", schema), x_all[0], int(y[0]), None, None,
                         Untargeted())  # fmt: skip
    assert found is not None and found.lower <= found.margin
    if not found.optimal:
        assert found.method.endswith("relaxed")


@pytest.mark.parametrize("kind", ["gbm", "forest"])
@pytest.mark.parametrize("p", ["l1", "l0", "linf"])
def test_tree_milp_matches_sklearn_on_a_grid(kind: str, p: str) -> None:
    schema = parse_schema({"features": {k: v for k, v in MINI["features"].items()
                                         if k in ("c", "k", "cat")}})  # fmt: skip
    rng = np.random.default_rng(1)
    x_all = _mini_rows(300, 3)[:, [0, 1, 3, 4, 5]]
    y = ((x_all[:, 0] > 4) ^ (x_all[:, 1] > 2) | (x_all[:, 3] == 1)).astype(int)
    y = np.where(rng.random(300) < 0.1, 1 - y, y)
    model = (GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=0)
             if kind == "gbm" else RandomForestClassifier(n_estimators=5, max_depth=3,
                                                          random_state=0))  # fmt: skip
    model.fit(x_all.astype(np.float64), y)
    space, dist, adapter = TabularSpace(schema=schema), make_distance(p, schema), \
        SklearnAdapter(model)  # fmt: skip
    goal = Threshold(0.5)
    thresholds = sorted({float(t) for est in np.ravel(getattr(model, "estimators_", []))
                         for f, t in zip(est.tree_.feature, est.tree_.threshold, strict=True)
                         if f == 0})  # fmt: skip
    for x in x_all[:4]:
        prob = model.predict_proba(x[None].astype(np.float64))[0, 1]
        label = int(prob >= 0.5)
        found = exact_margin(adapter, space, dist, x, label, None, None, goal)
        cs = {float(x[0]), 0.0, 10.0}
        for t in thresholds:
            f = np.float32(t)
            cs |= {float(np.nextafter(f, np.float32(-1e9))), float(f),
                   float(np.nextafter(f, np.float32(1e9)))}  # fmt: skip
        grid = np.array([[c, k, *np.eye(3)[cat]] for c in cs if 0 <= c <= 10
                         for k in range(6) for cat in range(3)])  # fmt: skip
        g64 = grid.astype(np.float32).astype(np.float64)
        if kind == "gbm":  # the MILP's own margins: 2e-5 in log-odds, 1e-5 in probability
            score, tol = model.decision_function(g64), 2e-5
        else:
            score, tol = model.predict_proba(g64)[:, 1] - 0.5, 1e-5
        flips = (score <= -tol) if label == 1 else (score >= tol)
        cost = dist.norm(torch.as_tensor(grid - x, dtype=torch.float32)).double().numpy()
        best = cost[flips].min() if flips.any() else math.inf
        assert found is not None and found.optimal
        assert found.margin == pytest.approx(best, rel=1e-5, abs=1e-6)


def test_decision_within_5_percent_of_milp_on_gradient_boosting(test_rows, flagged) -> None:
    x, y = test_rows
    model = models.fraud_gbm()
    idx = flagged(model.predict_proba(x.astype(np.float64))[:, 1], y, n=24)
    space = tabular_space("fraud", reference="fraud")
    dist = make_distance("l1", space.schema)
    adapter = SklearnAdapter(model)
    goal = Threshold(0.3)
    results = minimal_flip(adapter, space, dist, x[idx], y[idx], goal=goal,
                           spec=SearchSpec(budget=1000, exact="never"))  # fmt: skip
    ratios = []
    for r, i in zip(results, idx, strict=True):
        exact = exact_margin(adapter, space, dist, x[i], 1, None, None, goal)
        assert exact is not None and exact.optimal and r.status is Status.FLIPPED
        assert r.margin >= exact.margin * (1 - 1e-6)  # the MILP really is a lower bound
        ratios.append(r.margin / exact.margin)
    assert np.median(ratios) <= 1.05


def test_gradient_strategy_within_2_percent_of_milp_on_the_mlp(test_rows, flagged) -> None:
    """On the continuous features (the others frozen), where the ReLU MILP is exact."""
    import tomllib
    from importlib import resources

    raw = tomllib.loads(resources.files("mmargin_tabular").joinpath("schemas/fraud.toml")
                        .read_text(encoding="utf-8"))  # fmt: skip
    for spec in raw["features"].values():
        spec["mutable"] = spec.get("mutable", True) and spec.get("type") == "continuous"
    schema = parse_schema(raw)
    x, y = test_rows
    model = models.fraud_mlp()
    idx = flagged(model.predict_proba(x.astype(np.float64))[:, 1], y, n=30)
    space, dist = TabularSpace(schema=schema), make_distance("l1", schema)
    adapter, goal = SklearnAdapter(model), Threshold(0.3)
    spec = SearchSpec(budget=1000, strategy="gradient", exact="never")
    results = minimal_flip(adapter, space, dist, x[idx], y[idx], goal=goal, spec=spec)
    ratios = []
    for r, i in zip(results, idx, strict=True):
        exact = exact_margin(adapter, space, dist, x[i], 1, None, None, goal)
        assert exact is not None and exact.optimal
        if math.isfinite(exact.margin):
            assert r.status is Status.FLIPPED
            ratios.append(r.margin / exact.margin)
    assert len(ratios) >= 10 and min(ratios) >= 1 - 1e-3  # the MILP keeps a 2e-5 safety margin
    assert np.median(ratios) <= 1.02


def test_mlp_linf_with_free_discrete_features_is_integral(test_rows, flagged) -> None:
    """L∞ with integer and categorical features free: the integral MILP, a valid row."""
    x, y = test_rows
    model = models.fraud_mlp()
    (i,) = flagged(model.predict_proba(x.astype(np.float64))[:, 1], y, n=1)
    space = tabular_space("fraud")
    adapter = SklearnAdapter(model)
    found = exact_margin(adapter, space, make_distance("linf", space.schema), x[i],
                         1, None, None, Threshold(0.3))  # fmt: skip
    assert found is not None and found.method == "milp-integral" and found.optimal
    assert found.lower <= found.margin + 1e-9
    adv = found.adversarial[None].astype(np.float32)
    assert space.check(adv)[0] is None
    assert bool(Threshold(0.3).is_adversarial(adapter(torch.as_tensor(adv)), torch.tensor([1])))


@pytest.mark.parametrize("seed", range(3))
def test_integral_mlp_milp_matches_enumeration(seed: int) -> None:
    """Every discrete setting, the continuous feature on a fine grid: the MILP is as cheap
    as the best grid point (up to the grid step) and never cheaper than a real flip."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    schema = parse_schema(MINI)
    x_all = _mini_rows(300, 10 + seed)
    y = ((x_all[:, 0] > 5) ^ (x_all[:, 1] >= 3) | (x_all[:, 5] == 1)).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier((6,), max_iter=300, random_state=seed).fit(x_all.astype(float), y)
    adapter, space = SklearnAdapter(model), TabularSpace(schema=schema)
    dist = make_distance("l1", schema)
    w = dist.weights.double().numpy()
    grid = np.linspace(0, 10, 4001)
    for x in x_all[:3]:
        label = int(model.predict_proba(x[None].astype(np.float64))[0, 1] >= 0.5)
        found = exact_margin(adapter, space, dist, x, label, None, None, Threshold(0.5))
        assert found is not None and found.method == "milp-integral" and found.optimal
        best = math.inf
        for row in _combos(x):
            rows = np.repeat(row[None], grid.size, axis=0)
            rows[:, 0] = grid
            p1 = model.predict_proba(rows)[:, 1]
            ok = (p1 >= 0.5 + 1e-5) if label == 0 else (p1 < 0.5 - 1e-5)  # beyond SAFETY
            if ok.any():
                cost = np.abs(rows[ok] - x) @ w
                best = min(best, float(cost.min()))
        assert found.margin <= best + 1e-6
        assert found.margin >= best - 10 / 4000 - 1e-4  # one grid step (cost 1 per unit of c)
        if math.isfinite(found.margin):
            adv = found.adversarial
            assert space.check(adv[None].astype(np.float32))[0] is None
