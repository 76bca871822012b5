"""Encoded rows ↔ raw DataFrames, and the affine map a preprocessing step applies.

The engine searches over a schema's *encoding* (one float column per numeric feature, a
one-hot block per categorical). Models trained on a pandas DataFrame — a scikit-learn
``Pipeline`` whose ``ColumnTransformer`` one-hot encodes and scales the raw columns,
XGBoost, LightGBM — eat the raw columns instead. :func:`to_frame` decodes encoded rows
into such a DataFrame (the schema's feature names, ``int64`` integers, ``category``
categoricals over the schema's categories); :func:`affine_map` finds out whether a
preprocessing step is affine in the encoding (one-hot encoders, scalers, passthrough and
dropped columns are) and returns that map, so linear models and tree ensembles behind it
get gradients and exact margins on the encoding the engine searches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mmargin_tabular.schema import Schema

_PROBES = 16  # random valid rows the affine map must reproduce


def to_frame(schema: Schema, x: np.ndarray, names: Any = None) -> Any:
    """Encoded rows ``(N, schema.n_columns)`` as a DataFrame of raw columns (``names``:
    which columns, in which order — e.g. an estimator's ``feature_names_in_``)."""
    import pandas as pd

    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    columns: dict[str, Any] = {}
    for f, s in zip(schema.features, schema.slices, strict=True):
        if f.type == "categorical":
            codes = np.argmax(x[:, s], axis=1)
            codes = np.where(np.nanmax(x[:, s], axis=1) > 0, codes, -1)
            columns[f.name] = pd.Categorical.from_codes(codes, categories=list(f.categories))
        elif f.type in ("integer", "binary"):
            columns[f.name] = np.round(x[:, s.start]).astype(np.int64)
        else:
            columns[f.name] = x[:, s.start]
    frame = pd.DataFrame(columns)
    return frame if names is None else frame[list(names)]


def _dense(values: Any) -> np.ndarray:
    if hasattr(values, "toarray"):
        values = values.toarray()
    return np.asarray(values, dtype=np.float64)


def _probe_rows(schema: Schema, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random valid encoded rows (numbers inside the bounds, a category per block)."""
    x = np.zeros((n, schema.n_columns))
    for f, s in zip(schema.features, schema.slices, strict=True):
        if f.type == "categorical":
            x[np.arange(n), s.start + rng.integers(0, f.width, n)] = 1.0
            continue
        lo = f.lower if np.isfinite(f.lower) else -10.0 * f.scale
        hi = f.upper if np.isfinite(f.upper) else lo + 20.0 * f.scale
        v = rng.uniform(lo, hi, n)
        x[:, s.start] = np.round(v) if f.type in ("integer", "binary") else v
    return x


def affine_map(
    transform: Callable[[Any], Any], schema: Schema, names: Any = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(A, c)`` with ``transform(to_frame(x)) == x @ A.T + c`` for every valid encoded
    row ``x``, or ``None`` when the transform is not affine in the encoding (checked on
    random valid rows) or fails on them.

    Per categorical block and output, the constant that a one-hot block's sum-to-one leaves
    free is chosen so that the most entries are zero: a one-hot encoder's output column
    then reads exactly one encoded column (what a tree's split needs).
    """
    rng = np.random.default_rng(seed)
    base = _probe_rows(schema, rng, 1)[0]
    for f, s in zip(schema.features, schema.slices, strict=True):
        if f.type != "categorical":
            base[s.start] = float(np.clip(0.0, f.lower, f.upper))
    probes, where = [base], []
    for f, s in zip(schema.features, schema.slices, strict=True):
        if f.type == "categorical":
            for k in range(f.width):
                row = base.copy()
                row[s] = 0.0
                row[s.start + k] = 1.0
                probes.append(row)
                where.append((s.start + k, 1.0))
        else:
            row = base.copy()
            step = 1.0 if base[s.start] + 1.0 <= f.upper else -1.0
            row[s.start] += step
            probes.append(row)
            where.append((s.start, step))
    checks = _probe_rows(schema, rng, _PROBES)
    try:
        out = _dense(transform(to_frame(schema, np.vstack([*probes, checks]), names)))
    except Exception:  # noqa: BLE001 - a transform that fails here is just not affine
        return None
    if out.ndim != 2 or out.shape[0] != len(probes) + _PROBES or not np.isfinite(out).all():
        return None
    t0, moved, seen = out[0], out[1 : len(probes)], out[len(probes) :]
    a = np.zeros((out.shape[1], schema.n_columns))
    for (col, step), value in zip(where, moved, strict=True):
        a[:, col] = (value - t0) / step
    for cols in schema.groups:
        block = a[:, cols]
        for r in range(block.shape[0]):
            values, counts = np.unique(block[r], return_counts=True)
            block[r] -= values[np.argmax(counts)]
        a[:, cols] = block
    c = t0 - a @ base
    predicted = checks @ a.T + c
    tol = 1e-7 * (1.0 + np.abs(seen).max())
    return (a, c) if np.allclose(predicted, seen, rtol=1e-7, atol=tol) else None


def single_columns(a: np.ndarray) -> np.ndarray | None:
    """For an affine map whose every output reads one encoded column with a positive
    factor (one-hot encoders, scalers, passthrough), that column per output; else ``None``."""
    nonzero = np.abs(a) > 1e-12 * (1.0 + np.abs(a).max())
    if not np.all(nonzero.sum(axis=1) == 1):
        return None
    cols = np.argmax(nonzero, axis=1)
    if np.any(a[np.arange(a.shape[0]), cols] <= 0):
        return None
    return cols
