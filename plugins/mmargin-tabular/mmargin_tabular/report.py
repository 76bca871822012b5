"""The tabular plugin's per-sample report: which features a flip changed, in which units.

:func:`row_report` backs the ``mmargin_sample_report`` hook (see :mod:`mmargin_tabular.plugin`):
for every row, the table of changed features (before / after in the schema's raw terms,
rounded to each feature's precision, with its unit and a one-line ``text``; cost; change
in standard deviations) and the distance in several units. It reads the
schema only and spends no model pass.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from mmargin_tabular.schema import Schema


def _clean(value: float) -> float:
    """A derived figure without float32 noise (the shortest repr of its float32)."""
    return float(str(np.float32(value)))


def row_report(schema: Schema, x: Tensor, x_adv: Tensor) -> list[dict[str, Any]]:
    """Per row: the table of changed features and the distance in several units."""
    s = schema
    xs = x.detach().cpu().double().numpy()
    xa = x_adv.detach().cpu().double().numpy()
    cost_w, std_w = s.weights("cost", 1.0), s.weights("std", 1.0)
    out = []
    for row, adv in zip(xs, xa, strict=True):
        before, after = s.describe(row), s.describe(adv)
        changes, raw = [], []
        for f, sl in zip(s.features, s.slices, strict=True):
            if before[f.name] == after[f.name]:
                continue
            d = adv[sl] - row[sl]
            cost = float(np.sum(np.abs(d) * cost_w[sl]))
            entry: dict[str, Any] = {
                "feature": f.name, "before": before[f.name], "after": after[f.name],
                "unit": f.unit, "cost": _clean(cost),
                "text": f"{f.name}: {f.show(before[f.name])} → {f.show(after[f.name])}",
            }  # fmt: skip
            if f.type != "categorical":
                entry["change"] = f.value(float(d[0]))
                entry["std_change"] = _clean(float(d[0] / f.scale))
                raw.append(abs(float(d[0])))
            changes.append(entry)
        delta = adv - row
        out.append({
            "changes": changes,
            "features_changed": len(changes),
            "cost": _clean(float(np.sum(np.abs(delta) * cost_w))),
            "std_l1": _clean(float(np.sum(np.abs(delta) * std_w))),
            "std_linf": _clean(float(np.max(np.abs(delta) * s.weights("std", math.inf)))),
            "raw_l1_numeric": _clean(float(np.sum(raw))),
            "raw_l2_numeric": _clean(float(np.sqrt(np.sum(np.square(raw))))),
            "raw_linf_numeric": _clean(float(max(raw, default=0.0))),
            "categories_changed": sum(1 for c in changes if "change" not in c),
        })  # fmt: skip
    return out
