"""Models trained on raw pandas DataFrames: scikit-learn pipelines (ColumnTransformer with
OneHotEncoder + StandardScaler, then LogisticRegression or HistGradientBoosting), XGBoost
and LightGBM, fed decoded DataFrames by the sklearn adapter.

Oracles: every adversarial satisfies the schema (bounds, integers, directions, immutables,
allowed categories, one category per block) when decoded; on small all-integer grids the
exact margin equals the brute-force minimum over every valid row, scored by the model
itself; tree ensembles read from XGBoost / LightGBM dumps reproduce the libraries' own
margins."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch

from mmargin import evaluate
from mmargin.plugin import Status
from mmargin_tabular.adapters import SklearnAdapter
from mmargin_tabular.distances import make_distance
from mmargin_tabular.exact import sklearn_model
from mmargin_tabular.frames import affine_map, to_frame
from mmargin_tabular.schema import load_schema
from mmargin_tabular.space import TabularSpace

SCHEMA = {
    "name": "toy",
    "features": {
        "visits": {"type": "numeric", "integer": True, "lower": 0, "upper": 8, "cost": 1.0},
        "days": {"type": "integer", "lower": 0, "upper": 6, "cost": 0.5, "direction": "up"},
        "channel": {"type": "categorical", "categories": ["web", "shop", "phone"], "cost": 1.5,
                    "allowed": ["web", "shop"]},
        "region": {"type": "categorical", "categories": ["north", "south"], "mutable": False},
    },
}  # fmt: skip
GRID = [range(9), range(7), range(3), range(2)]


def _schema() -> Any:
    return load_schema(SCHEMA)


def _encode(values: np.ndarray) -> np.ndarray:
    """Rows ``(visits, days, channel index, region index)`` in the schema's encoding."""
    x = np.zeros((len(values), 7), dtype=np.float32)
    x[:, 0], x[:, 1] = values[:, 0], values[:, 1]
    x[np.arange(len(x)), 2 + values[:, 2]] = 1.0
    x[np.arange(len(x)), 5 + values[:, 3]] = 1.0
    return x


def _data(n: int = 600, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    """A raw training DataFrame (string categories), its labels and the encoded rows."""
    rng = np.random.default_rng(seed)
    values = np.stack([rng.integers(0, 9, n), rng.integers(0, 7, n), rng.integers(0, 3, n),
                       rng.integers(0, 2, n)], axis=1)  # fmt: skip
    z = 0.6 * values[:, 0] - 0.5 * values[:, 1] + 1.6 * (values[:, 2] == 2) - 1.0 * values[:, 3]
    y = (z + rng.normal(0, 0.8, n) > 1.5).astype(np.int64)
    x = _encode(values)
    frame = to_frame(_schema(), x)
    for name in ("channel", "region"):
        frame[name] = frame[name].astype(str)
    return frame, y, x


def _prep() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer([("cat", OneHotEncoder(), ["channel", "region"]),
                              ("num", StandardScaler(), ["visits", "days"])])  # fmt: skip


def _pipeline(kind: str) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    frame, y, _ = _data()
    final: Any = LogisticRegression()
    if kind == "hgb":
        final = HistGradientBoostingClassifier(max_iter=12, max_depth=3, random_state=0)
    elif kind == "xgb":
        xgb = pytest.importorskip("xgboost")
        final = xgb.XGBClassifier(n_estimators=12, max_depth=3, random_state=0, n_jobs=1)
    elif kind == "lgbm":
        lgb = pytest.importorskip("lightgbm")
        final = lgb.LGBMClassifier(n_estimators=12, max_depth=3, random_state=0, n_jobs=1,
                                   verbose=-1, min_child_samples=5)  # fmt: skip
    return Pipeline([("prep", _prep()), ("model", final)]).fit(frame, y)


def _brute_force(adapter: SklearnAdapter, x: np.ndarray, threshold: float) -> float:
    """The cheapest valid row (under the schema) whose fraud probability is < threshold."""
    space = TabularSpace(schema=_schema())
    grid = _encode(np.array(list(itertools.product(*GRID))))
    valid = np.array([p is None for p in space.check(grid)])
    lo, hi, _ = space.sample_box(x.astype(np.float64))
    valid &= np.all((grid >= lo - 1e-9) & (grid <= hi + 1e-9), axis=1)
    grid = grid[valid]
    p = np.exp(adapter.numpy_scores(grid)[:, 1])
    cost = make_distance("l1", _schema()).norm(torch.as_tensor(grid - x)).numpy()
    flips = p < threshold
    return float(cost[flips].min()) if flips.any() else float("inf")


def _flagged(adapter: SklearnAdapter, x: np.ndarray, threshold: float, n: int) -> np.ndarray:
    p = np.exp(adapter.numpy_scores(x)[:, 1])
    return x[p >= threshold][:n]


@pytest.mark.parametrize("kind", ["logreg", "hgb", "xgb", "lgbm"])
def test_exact_margins_of_dataframe_models_equal_brute_force(kind: str) -> None:
    model = _pipeline(kind)
    adapter = SklearnAdapter(model, schema=SCHEMA)
    assert adapter.raw is not None and adapter.raw.pre is not None
    assert sklearn_model(adapter) is not None  # linear through the encoder, or the trees
    _, _, x = _data(n=200, seed=1)
    rows = _flagged(adapter, x, 0.5, 8)
    assert len(rows) >= 5
    results = evaluate(model, rows, np.ones(len(rows), dtype=np.int64), "tabular-l1",
                       space="tabular", space_options={"schema": SCHEMA},
                       distance_options={"schema": SCHEMA}, goal="threshold", threshold=0.5,
                       positive=1, exact="only", budget=40)  # fmt: skip
    compared = 0
    for row, r in zip(rows, results, strict=True):
        truth = _brute_force(adapter, row, 0.5)
        if not np.isfinite(truth):
            assert r.status is Status.NOT_FLIPPED
            continue
        assert r.status is Status.FLIPPED and r.exact, (r.message, r.strategy)
        assert r.margin == pytest.approx(truth, rel=1e-5, abs=1e-6)
        compared += 1
    assert compared >= 3


@pytest.mark.parametrize("kind", ["logreg", "hgb"])
def test_every_adversarial_respects_the_schema(kind: str) -> None:
    model = _pipeline(kind)
    _, _, x = _data(n=200, seed=2)
    adapter = SklearnAdapter(model, schema=SCHEMA)
    rows = _flagged(adapter, x, 0.5, 6)
    space = TabularSpace(schema=_schema())
    runs = [("decision", "never"), ("auto", "auto")]
    if kind == "logreg":
        runs.append(("gradient", "never"))
    for strategy, exact in runs:
        results = evaluate(model, rows, np.ones(len(rows), dtype=np.int64), "tabular-l1",
                           space=space, distance_options={"schema": SCHEMA},
                           goal="threshold", threshold=0.5, strategy=strategy, exact=exact,
                           budget=150)  # fmt: skip
        flipped = [r for r in results if r.status is Status.FLIPPED]
        assert flipped
        for row, r in zip(rows, results, strict=True):
            if r.status is not Status.FLIPPED:
                continue
            adv = np.asarray(r.adversarial, dtype=np.float32)[None]
            assert space.check(adv) == [None]
            assert set(np.unique(adv[0, 2:])) <= {0.0, 1.0}  # never a fractional one-hot
            assert adv[0, 1] >= row[1]  # days only go up
            assert np.array_equal(adv[0, 5:], row[5:])  # region is immutable
            assert adv[0, 4] == 0 or row[4] == 1  # never into "phone" (not allowed)
            assert np.exp(adapter.numpy_scores(adv)[0, 1]) < 0.5  # the model itself agrees
            frame = to_frame(_schema(), adv)
            assert frame["channel"].iloc[0] in ("web", "shop", "phone")
            for change in r.extras["changes"]:
                assert "→" in change["text"]


def test_affine_map_of_a_column_transformer_and_none_for_a_nonlinear_one() -> None:
    from sklearn.preprocessing import PolynomialFeatures

    frame, y, x = _data(n=50)
    prep = _prep().fit(frame, y)
    found = affine_map(prep.transform, _schema())
    assert found is not None
    a, c = found
    assert np.allclose(x @ a.T + c, prep.transform(to_frame(_schema(), x)), atol=1e-9)
    from sklearn.pipeline import make_pipeline

    poly = make_pipeline(_prep(), PolynomialFeatures(2)).fit(frame, y)
    assert affine_map(poly.transform, _schema()) is None


def test_a_model_on_columns_the_schema_lacks_is_one_clear_error() -> None:
    from sklearn.linear_model import LogisticRegression

    frame, y, x = _data(n=100)
    model = LogisticRegression().fit(frame[["visits", "days"]].rename(
        columns={"visits": "n_visits"}), y)  # fmt: skip
    with pytest.raises(ValueError, match="no column\\(s\\) \\['n_visits'\\]"):
        SklearnAdapter(model, schema=SCHEMA)
    plain = LogisticRegression().fit(frame[["visits", "days"]], y)
    adapter = SklearnAdapter(plain, schema=SCHEMA)  # a subset of the raw columns is fine
    assert adapter.differentiable
    twin = adapter(torch.as_tensor(x)).exp()[:, 1].numpy()
    assert np.allclose(twin, plain.predict_proba(frame[["visits", "days"]])[:, 1], atol=1e-6)


@pytest.mark.parametrize("kind", ["xgb", "lgbm"])
def test_booster_dumps_reproduce_the_libraries_margins(kind: str) -> None:
    from mmargin_tabular.boosters import read_booster

    frame, y, _ = _data(n=400, seed=4)
    numeric = frame[["visits", "days"]].to_numpy(np.float64) + np.array([0.25, 0.5])
    if kind == "xgb":
        xgb = pytest.importorskip("xgboost")
        model: Any = xgb.XGBClassifier(n_estimators=15, max_depth=3, n_jobs=1).fit(numeric, y)
        margin = model.predict(numeric, output_margin=True)
    else:
        lgb = pytest.importorskip("lightgbm")
        model = lgb.LGBMClassifier(n_estimators=15, max_depth=3, n_jobs=1, verbose=-1,
                                   min_child_samples=5).fit(numeric, y)  # fmt: skip
        margin = model.predict(numeric, raw_score=True)
    ens = read_booster(model)
    assert ens is not None
    assert np.allclose(ens.scores(numeric)[:, 0], margin, atol=1e-5)
