"""Summary figures of lower bounds: certified robust accuracy and the bracket ratio, checked
against a direct count, through JSON and back, and in the CLI table."""

from __future__ import annotations

import json
import math

import pytest

from mmargin.cli import format_summary
from mmargin.results import SampleResult, Status
from mmargin.store import _summary
from mmargin.summary import summarize


def _result(i: int, status: Status, margin: float, lower: float | None,
            method: str | None) -> SampleResult:  # fmt: skip
    return SampleResult(
        sample=f"s{i}", modality="test", space="box", distance="linf", label=0, pred_label=0,
        adv_label=1, margin=margin, lower_bound=lower, verified=True, queries=1, seconds=0.0,
        status=status, strategy="gradient", bound_method=method,
    )  # fmt: skip


CASES = [
    (Status.FLIPPED, 0.30, 0.30, "milp"),
    (Status.FLIPPED, 0.20, 0.10, "crown"),
    (Status.FLIPPED, 0.40, 0.05, "interval"),
    (Status.FLIPPED, 0.25, 0.0, "crown"),
    (Status.FLIPPED, 0.10, None, None),
    (Status.MISCLASSIFIED, 0.0, 0.0, None),
    (Status.NOT_FLIPPED, math.inf, 0.5, "crown"),
]


def test_certified_accuracy_and_bracket_match_a_direct_count() -> None:
    results = [_result(i, *c) for i, c in enumerate(CASES)]
    summary = summarize(results, epsilons=[0.04, 0.08, 0.2])
    lows = [0.0 if c[0] is Status.MISCLASSIFIED or c[2] is None else c[2] for c in CASES]
    for eps in (0.04, 0.08, 0.2):
        direct = sum(low > eps for low in lows) / len(CASES)
        assert summary.certified_robust_accuracy[eps] == pytest.approx(direct)
        assert summary.certified_robust_accuracy[eps] <= summary.robust_accuracy[eps]
    ratios = sorted([1.0, 2.0, 8.0, math.inf])
    assert summary.bracket_ratio_median == pytest.approx((ratios[1] + ratios[2]) / 2)
    back = _summary(json.loads(json.dumps(summary.to_json())))
    assert back.certified_robust_accuracy == summary.certified_robust_accuracy
    assert back.bracket_ratio_median == summary.bracket_ratio_median
    table = format_summary("run", summary)
    assert "certified" in table and "bracket" in table


def test_no_lower_bounds_means_empty_certified_figures() -> None:
    results = [_result(0, Status.FLIPPED, 0.2, None, None)]
    summary = summarize(results)
    assert summary.certified_robust_accuracy == {} and summary.bracket_ratio_median is None
    assert "bracket" not in format_summary("run", summary)
    assert results[0].to_json()["bound_method"] is None
