"""The conformance kit on everything the tabular plugin registers: the ``tabular`` space,
its four schema-weighted distances, the ``sklearn`` adapter (linear, tree ensembles, MLP)
and the torch MLP, and the ``fraud`` and ``tabular-file`` loaders — through the registry."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mmargin import plugins
from mmargin.testing import (
    Case,
    Check,
    adapter_case,
    distance_case,
    loader_case,
    parametrize_with_checks,
    space_case,
    unchecked_registrations,
)
from mmargin.testing import (
    build_registered as _make,
)
from mmargin_tabular.data import MERCHANTS
from mmargin_tabular.schema import load_schema

COLUMNS = ["amount", "hour", "distance_from_home_km", "txn_count_24h", "device_age_days",
           "account_age_days", "avg_amount_30d", "online", "foreign"]  # fmt: skip
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN")


@functools.cache
def _rows() -> np.ndarray:
    data = _make("datasets", "fraud", n=400, fraud_rate=0.5, seed=3)
    return np.asarray(data.x[:8])


def _space() -> Any:
    return _make("spaces", "tabular", schema="fraud")


def _features_changed(delta: np.ndarray) -> np.ndarray:
    """``tabular-l0``'s definition: features changed, a one-hot block counting once."""
    index = np.asarray(load_schema("fraud").feature_index)
    changed = delta.reshape(len(delta), -1) != 0
    return np.array([len(set(index[row])) for row in changed], dtype=np.float64)


def _csv() -> str:
    import pandas as pd

    x = np.asarray(_make("datasets", "fraud", n=40, fraud_rate=0.5, seed=9).x)
    frame = pd.DataFrame({name: x[:, j] for j, name in enumerate(COLUMNS)})
    frame["merchant_category"] = [MERCHANTS[i] for i in x[:, 9:17].argmax(1)]
    frame["card_country"] = [COUNTRIES[i] for i in x[:, 17:].argmax(1)]
    frame["is_fraud"] = np.where(np.arange(len(x)) % 2 == 0, "fraud", "legit")
    path = Path(tempfile.mkdtemp(prefix="mmargin-tabular-")) / "tx.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _sklearn(model: str, **options: Any) -> Any:
    return _make("adapters", "sklearn", _make("models", model), **options)


CASES: list[Case] = [
    space_case("tabular", _space, _rows),
    *[
        distance_case(
            f"tabular-{p}",
            lambda p=p: _make("distances", f"tabular-{p}", "fraud"),
            (23,),
        )
        for p in ("l1", "l2", "linf")
    ],
    distance_case(
        "tabular-l0",
        lambda: _make("distances", "tabular-l0", "fraud"),
        (23,),
        reference=_features_changed,
    ),
    *[
        adapter_case(f"sklearn-{m}", lambda m=m: _sklearn(m), _rows)
        for m in ("fraud_logreg", "fraud_gbm", "fraud_forest", "fraud_mlp")
    ],
    *[
        adapter_case(f"sklearn-{m}", lambda m=m: _sklearn(m, schema="fraud"), _rows)
        for m in ("fraud_pipeline_logreg", "fraud_pipeline_hgb")
    ],
    adapter_case(
        "torch-fraud_torch_mlp",
        lambda: _make("adapters", "torch", _make("models", "fraud_torch_mlp")),
        _rows,
    ),
    loader_case("fraud", plugins.lookup("datasets", "fraud").factory, {"n": 300}, space=_space),
    loader_case(
        "tabular-file",
        plugins.lookup("datasets", "tabular-file").factory,
        {"path": _csv(), "schema": "fraud"},
        space=_space,
    ),
]


@parametrize_with_checks(CASES)
def test_tabular_conformance(case: Case, check: Check) -> None:
    check(case)


def test_every_tabular_registration_is_checked() -> None:
    """A space, distance, adapter, loader or model added without a case fails here."""
    missing = unchecked_registrations("tabular", CASES)
    assert not missing, f"tabular registrations without a conformance case: {missing}"
