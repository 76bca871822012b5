"""Tabular data: a synthetic card-transaction generator and a CSV / Parquet loader.

The generator (:func:`generate_fraud`) is documented in :data:`FRAUD_STORY`; it is
deterministic by seed and its columns follow the built-in ``fraud`` schema. The loader
(:func:`load_table`) reads a user's own file through a schema: numbers are parsed per
feature, categoricals one-hot encoded, and every bad value becomes a per-row problem that
the ``tabular`` space reports as an ``error`` result (one bad row never sinks a run).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from mmargin_tabular.schema import Schema, load_schema

MERCHANTS = ("grocery", "restaurant", "fuel", "online_retail", "electronics", "travel",
             "jewelry", "gaming")  # fmt: skip
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN")

FRAUD_STORY = """
Synthetic card transactions (one row = one authorisation request), 2 % fraud by default.

Legitimate rows: the cardholder's 30-day average ticket ``avg_amount_30d`` is log-normal
(median 55); ``amount`` scatters around it (log-normal, sd 0.6); hours follow a day-time
profile (peak 12-19 h); ``distance_from_home_km`` is exponential (mean 8 km, 5 % travellers
at 50-3000 km, who are also often ``foreign``); ``txn_count_24h`` ~ Poisson(2); the device
has been seen for ``device_age_days`` ~ exponential(400); accounts are 30-7000 days old;
30 % are ``online``; merchant categories follow everyday shopping (groceries, restaurants,
fuel, online retail ...).

Fraud rows draw each of six independent signals with probability 0.35-0.6, so frauds
differ and overlap with unusual legitimate behaviour: a large ticket relative to the
cardholder's average (x3-x20), night hours (0-5 h), far from home, a burst of transactions
(Poisson(7)), a new device (exponential(4) days), card-not-present / foreign. Fraud prefers
electronics, jewelry, gaming and online retail; accounts are a little younger. The card
country carries no signal by design (it is an immutable feature that a model should not
need). Labels are the generating class: 1 = fraud, 0 = legit.
"""


def generate_fraud(
    n: int = 10000, seed: int = 0, fraud_rate: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic transactions encoded for the ``fraud`` schema, and their labels.

    Deterministic for a given ``(n, seed, fraud_rate)``; see :data:`FRAUD_STORY`. Returns a
    float32 array ``(n, 23)`` in the schema's column order and int64 labels (1 = fraud).
    """
    if n < 1 or not 0.0 <= fraud_rate <= 1.0:
        raise ValueError(f"need n >= 1 and fraud_rate in [0, 1], got {n} and {fraud_rate}")
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fraud_rate).astype(np.int64)
    fraud = y == 1

    def signal(p: float) -> np.ndarray:
        return fraud & (rng.random(n) < p)

    big, night, far, burst, new_dev, cnp = (signal(p) for p in (0.55, 0.45, 0.4, 0.4, 0.5, 0.6))
    avg = np.exp(rng.normal(np.log(55.0), 0.7, n))
    ratio = np.where(big, rng.uniform(3.0, 20.0, n), np.exp(rng.normal(0.0, 0.6, n)))
    amount = np.clip(avg * ratio, 1.0, 20000.0)
    day_hours = np.clip(np.round(rng.normal(15.0, 3.5, n)), 0, 23)
    hour = np.where(night, rng.integers(0, 6, n), day_hours)
    traveller = ~fraud & (rng.random(n) < 0.05)
    distance = rng.exponential(8.0, n)
    distance = np.where(traveller, rng.uniform(50.0, 3000.0, n), distance)
    distance = np.where(far, rng.uniform(80.0, 2500.0, n), distance)
    txn = np.where(burst, rng.poisson(7.0, n), rng.poisson(2.0, n))
    device = np.where(new_dev, rng.exponential(4.0, n), rng.exponential(400.0, n))
    account = np.where(fraud, rng.uniform(10.0, 4000.0, n), rng.uniform(30.0, 7000.0, n))
    online = np.where(cnp, 1, rng.random(n) < 0.3).astype(float)
    foreign = (traveller & (rng.random(n) < 0.6)) | (cnp & (rng.random(n) < 0.45))
    foreign |= rng.random(n) < 0.02
    legit_mix = np.array([0.26, 0.2, 0.15, 0.2, 0.06, 0.06, 0.02, 0.05])
    fraud_mix = np.array([0.05, 0.04, 0.04, 0.27, 0.25, 0.1, 0.13, 0.12])
    merchant = np.where(fraud, _choice(rng, fraud_mix, n), _choice(rng, legit_mix, n))
    country = rng.integers(0, len(COUNTRIES), n)
    x = np.zeros((n, 9 + len(MERCHANTS) + len(COUNTRIES)), dtype=np.float32)
    numeric = (np.round(amount, 2), hour, np.round(distance, 1), np.minimum(txn, 100),
               np.minimum(np.floor(device), 3650), np.floor(account), np.round(avg, 2),
               online, foreign.astype(float))  # fmt: skip
    for j, column in enumerate(numeric):
        x[:, j] = column
    x[np.arange(n), 9 + merchant] = 1.0
    x[np.arange(n), 9 + len(MERCHANTS) + country] = 1.0
    return x, y


def _choice(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    return rng.choice(len(probs), size=n, p=probs / probs.sum())


def fraud_split(split: str = "test", n: int | None = None, seed: int = 0,
                fraud_rate: float = 0.02) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The train (seed ``seed``, 10000 rows) or test (seed ``seed + 1``, 4000 rows) split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    size = n if n is not None else (10000 if split == "train" else 4000)
    return generate_fraud(size, seed=seed + (split == "test"), fraud_rate=fraud_rate)


# -- user files ------------------------------------------------------------------------------
def read_frame(path: str | Path) -> Any:
    """A pandas DataFrame from a ``.csv`` or ``.parquet`` / ``.pq`` file."""
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such file: {file}")
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq"):
        if importlib.util.find_spec("pyarrow") is None:
            raise ImportError(
                f"{file.name}: reading Parquet needs pyarrow, which is not installed; "
                "`pip install 'mmargin-tabular[parquet]'` or convert the file to CSV"
            )
        return pd.read_parquet(file)
    if suffix == ".csv":
        return pd.read_csv(file, keep_default_na=True)
    raise ValueError(f"{file.name}: expected a .csv or .parquet file, got {suffix or 'no suffix'}")


def encode_frame(frame: Any, schema: Schema) -> tuple[np.ndarray, dict[str, Any]]:
    """Encode a DataFrame's feature columns for the schema.

    Missing or non-numeric values become NaN; a categorical's missing value gives NaN
    columns and an unseen category all-zero columns, so the ``tabular`` space reports
    the row as an ``error`` naming the feature. Columns the schema needs but the frame
    lacks raise ``ValueError`` listing them. Returns ``(x, problems)``, where ``problems``
    counts unseen categories per feature.
    """
    import pandas as pd

    missing = [f.name for f in schema.features if f.name not in frame.columns]
    if missing:
        raise ValueError(
            f"the data has no column(s) {missing} that schema {schema.name!r} needs; "
            f"found {list(frame.columns)}"
        )
    x = np.zeros((len(frame), schema.n_columns), dtype=np.float32)
    unseen: dict[str, list[str]] = {}
    for f, s in zip(schema.features, schema.slices, strict=True):
        column = frame[f.name]
        if f.type != "categorical":
            x[:, s.start] = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            continue
        values = column.astype("string")
        known = {c: i for i, c in enumerate(f.categories)}
        for row, value in enumerate(values):
            if value is pd.NA:
                x[row, s] = np.nan
            elif value in known:
                x[row, s.start + known[value]] = 1.0
            else:
                unseen.setdefault(f.name, []).append(str(value))
    problems = {name: sorted(set(v)) for name, v in unseen.items()}
    return x, {"unseen_categories": problems}


def encode_labels(frame: Any, schema: Schema, column: str) -> np.ndarray:
    """Integer labels from a label column (class names per ``schema.classes`` or integers)."""
    import pandas as pd

    if column not in frame.columns:
        raise ValueError(f"the data has no label column {column!r}; found {list(frame.columns)}")
    values = frame[column]
    bad = values.isna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"label column {column!r} has {int(bad.sum())} missing values "
                         f"(rows {rows}...)")  # fmt: skip
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype=np.float64)
        if not np.all(numbers == np.round(numbers)):
            raise ValueError(f"label column {column!r} must hold integers or class names")
        return numbers.astype(np.int64)
    names = {c: i for i, c in enumerate(schema.classes)}
    unknown = sorted(set(values.astype(str)) - set(names))
    if unknown:
        raise ValueError(f"label column {column!r}: unknown classes {unknown}; the schema's "
                         f"classes are {list(schema.classes)}")  # fmt: skip
    return np.array([names[v] for v in values.astype(str)], dtype=np.int64)


def load_table(path: str | Path, schema: str | Any, label: str | None = None,
               only_label: int | None = None) -> Any:  # fmt: skip
    """A :class:`mmargin.data.Dataset` from a user's CSV / Parquet file and a schema."""
    from mmargin.plugin import Dataset

    sch = load_schema(schema)
    frame = read_frame(path)
    x, problems = encode_frame(frame, sch)
    y = encode_labels(frame, sch, label or sch.label)
    ids = [f"{Path(path).stem}-{i}" for i in range(len(y))]
    if only_label is not None:
        keep = np.flatnonzero(y == only_label)
        x, y, ids = x[keep], y[keep], [ids[i] for i in keep]
    meta = {"source": str(path), "schema": sch.name, "columns": sch.columns, **problems}
    return Dataset(x, y, ids, meta)
