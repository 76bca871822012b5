"""Data: the synthetic generator and the CSV / Parquet loader, bad input included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmargin.plugin import Status, Threshold
from mmargin.testing import SearchSpec, minimal_flip
from mmargin_tabular import data as tabular_data
from mmargin_tabular import models
from mmargin_tabular.adapters import SklearnAdapter
from mmargin_tabular.data import MERCHANTS, generate_fraud, load_table
from mmargin_tabular.distances import make_distance
from mmargin_tabular.schema import Schema
from mmargin_tabular.space import tabular_space


def test_generator_is_deterministic_imbalanced_and_valid(schema: Schema) -> None:
    x1, y1 = generate_fraud(3000, seed=4)
    x2, y2 = generate_fraud(3000, seed=4)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(generate_fraud(3000, seed=5)[0], x1)
    assert 0.01 < y1.mean() < 0.035  # ~2 % fraud
    assert all(p is None for p in tabular_space(schema).check(x1))
    fraud, legit = x1[y1 == 1], x1[y1 == 0]
    assert np.median(fraud[:, 0] / fraud[:, 6]) > 2 * np.median(legit[:, 0] / legit[:, 6])
    assert np.median(fraud[:, 4]) < np.median(legit[:, 4]) / 5  # new devices
    assert abs(fraud[:, 17:].mean(0) - legit[:, 17:].mean(0)).max() < 0.12  # country: no signal


def _frame(n: int = 30) -> object:
    import pandas as pd

    x, y = generate_fraud(n, seed=9, fraud_rate=0.5)
    rows = {}
    for j, name in enumerate(["amount", "hour", "distance_from_home_km", "txn_count_24h",
                              "device_age_days", "account_age_days", "avg_amount_30d",
                              "online", "foreign"]):  # fmt: skip
        rows[name] = x[:, j]
    rows["merchant_category"] = [MERCHANTS[i] for i in x[:, 9:17].argmax(1)]
    rows["card_country"] = [("US", "GB", "DE", "FR", "BR", "IN")[i] for i in x[:, 17:].argmax(1)]
    rows["is_fraud"] = np.where(y == 1, "fraud", "legit")
    return pd.DataFrame(rows), x, y


def test_csv_round_trip(tmp_path: Path) -> None:
    frame, x, y = _frame()
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    ds = load_table(path, "fraud")
    assert np.allclose(ds.x, x, rtol=1e-6) and np.array_equal(ds.y, y)
    assert ds.ids[0] == "tx-0" and ds.meta["unseen_categories"] == {}
    only = load_table(path, "fraud", only_label=1)
    assert len(only) == int(y.sum()) and set(only.y) == {1}


def test_bad_rows_become_error_results_not_a_crash(tmp_path: Path) -> None:
    frame, _, _ = _frame(8)
    frame["hour"] = frame["hour"].astype(object)
    frame.loc[1, "amount"] = None  # missing value
    frame.loc[2, "merchant_category"] = "casino"  # unseen category
    frame.loc[3, "hour"] = "late"  # not a number
    frame.loc[4, "hour"] = 7.5  # not an integer
    frame.loc[5, "merchant_category"] = None
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    ds = load_table(path, "fraud")
    assert ds.meta["unseen_categories"] == {"merchant_category": ["casino"]}
    space = tabular_space("fraud")
    results = minimal_flip(SklearnAdapter(models.fraud_logreg()), space,
                           make_distance("l1", space.schema), ds.x, ds.y, ds.ids,
                           goal=Threshold(0.3), spec=SearchSpec(budget=60, strategy="decision",
                                                                exact="never"))  # fmt: skip
    messages = {r.sample: r.message for r in results if r.status is Status.ERROR}
    assert messages == {
        "bad-1": "feature 'amount' is missing",
        "bad-2": "feature 'merchant_category' is not one of its categories (an unseen "
        "category, or a one-hot block that does not sum to 1)",
        "bad-3": "feature 'hour' is missing",
        "bad-4": "feature 'hour' = 7.5 must be an integer",
        "bad-5": "feature 'merchant_category' is missing",
    }
    assert len(results) == 8


def test_file_level_problems_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame, _, _ = _frame(5)
    path = tmp_path / "cols.csv"
    frame.drop(columns=["hour", "online"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"no column\(s\) \['hour', 'online'\]"):
        load_table(path, "fraud")
    path = tmp_path / "labels.csv"
    bad = frame.copy()
    bad.loc[0, "is_fraud"] = "maybe"
    bad.to_csv(path, index=False)
    with pytest.raises(ValueError, match="unknown classes \\['maybe'\\]"):
        load_table(path, "fraud")
    with pytest.raises(ValueError, match="no label column 'y'"):
        load_table(path, "fraud", label="y")
    with pytest.raises(ValueError, match=r"expected a \.csv or \.parquet"):
        (tmp_path / "t.xlsx").write_text("x")
        load_table(tmp_path / "t.xlsx", "fraud")
    monkeypatch.setattr(tabular_data.importlib.util, "find_spec", lambda name: None)
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="needs pyarrow"):
        load_table(tmp_path / "t.parquet", "fraud")


def test_models_train_deterministically() -> None:
    a = models.fraud_gbm.__wrapped__(seed=0, n_estimators=5)
    b = models.fraud_gbm.__wrapped__(seed=0, n_estimators=5)
    x = generate_fraud(200, seed=3)[0].astype(np.float64)
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))


@pytest.mark.parametrize("name", ["logreg", "gbm", "pipeline_logreg"])
def test_models_match_the_recorded_manifest(name: str) -> None:
    import json

    from mmargin_tabular import train

    recorded = json.loads(train.MANIFEST.read_text(encoding="utf-8"))
    if recorded["versions"] != train.versions():
        pytest.skip(f"manifest recorded with {recorded['versions']}")
    assert train.describe(name) == recorded["models"][name]
