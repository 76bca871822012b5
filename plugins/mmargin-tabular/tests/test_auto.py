"""``strategy = "auto"`` never reports ``not_flipped`` for a row that another strategy it
could have run flips with a verified flip: on the shipped fraud models (where ``auto``
once lost 5 of 11 flagged rows to gradient points that stopped flipping once finalised,
while ``hybrid`` flipped all 11), every row ``hybrid`` flips, ``auto`` flips too, and so
does ``gradient`` with the exact hook (its unverified points no longer hide the solver's
verified flip), and no row is left with a flip that failed re-verification. Also:
``evaluate(goal="threshold", threshold=...)`` judges by that threshold (the oracle: the
model's own probability)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mmargin import evaluate
from mmargin.plugin import Status
from mmargin_tabular import models
from mmargin_tabular.adapters import SklearnAdapter


def _run(model: Any, x: np.ndarray, strategy: str, threshold: float = 0.3) -> list[Any]:
    return evaluate(model, x, np.ones(len(x), dtype=np.int64), "tabular-l1", space="tabular",
                    space_options={"schema": "fraud"}, distance_options={"schema": "fraud"},
                    goal="threshold", threshold=threshold, positive=1, strategy=strategy,
                    budget=600)  # fmt: skip


@pytest.mark.parametrize("name", ["logreg", "pipeline_logreg"])
def test_auto_keeps_every_verified_flip(name: str, test_rows: Any, flagged: Any) -> None:
    model = models.FACTORIES[name]()
    x, y = test_rows
    adapter = SklearnAdapter(model, schema="fraud")
    proba = np.exp(adapter.numpy_scores(x)[:, 1])
    rows = x[flagged(proba, y, 0.3, 11)]
    hybrid = _run(model, rows, "hybrid")
    # auto (hybrid on this rounding space) and plain gradient + the exact hook: a gradient
    # point that no longer flips once rounded must not hide the exact solver's flip
    for strategy in ("auto", "gradient"):
        found = _run(model, rows, strategy)
        for a, h in zip(found, hybrid, strict=True):
            assert "failed re-verification" not in a.message, (strategy, a.sample)
            if h.status is Status.FLIPPED:
                assert a.status is Status.FLIPPED, (strategy, a.sample, a.message)
            if a.status is Status.FLIPPED:
                adv = np.asarray(a.adversarial, dtype=np.float32)[None]
                assert np.exp(adapter.numpy_scores(adv)[0, 1]) < 0.3
        assert sum(a.status is Status.FLIPPED for a in found) == len(rows), strategy


def test_threshold_goal_of_evaluate_uses_the_threshold(test_rows: Any) -> None:
    model = models.fraud_logreg()
    x, _ = test_rows
    p = model.predict_proba(x[:300].astype(np.float64))[:, 1]
    rows = x[:300][(p >= 0.2) & (p < 0.6)][:4]
    assert len(rows) >= 2
    for threshold in (0.15, 0.7):
        results = _run(model, rows, "auto", threshold)
        p_rows = model.predict_proba(rows.astype(np.float64))[:, 1]
        for r, pr in zip(results, p_rows, strict=True):
            flagged = pr >= threshold
            assert (r.status is Status.MISCLASSIFIED) == (not flagged)
            if r.status is Status.FLIPPED:
                adv = np.asarray(r.adversarial, dtype=np.float64)[None]
                assert model.predict_proba(adv)[0, 1] < threshold
