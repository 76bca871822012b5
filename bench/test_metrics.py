"""The benchmark's optimality computation on hand-made distance arrays (numpy + pytest only)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_metrics", Path(__file__).resolve().parent / "metrics.py"
)
assert _spec is not None and _spec.loader is not None
metrics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(metrics)

INF = math.inf
BEST = np.array([0.0, 1.0, 2.0, 4.0])  # one misclassified sample (distance 0)


def test_per_sample_best_takes_the_minimum_and_keeps_inf() -> None:
    a = np.array([1.0, INF, 3.0])
    b = np.array([2.0, INF, 0.5])
    np.testing.assert_array_equal(metrics.per_sample_best([a, b]), [1.0, INF, 0.5])


def test_the_best_scores_one_and_a_method_that_always_fails_scores_zero() -> None:
    assert metrics.attackbench_optimality(BEST, BEST) == pytest.approx(1.0)
    never = np.array([0.0, INF, INF, INF])  # only the misclassified sample, at 0
    assert metrics.attackbench_optimality(never, BEST) == pytest.approx(0.0)


def test_hand_computed_value() -> None:
    # eps* = 4, clean accuracy 3/4: A0 = 3; A* = mean(0, 1, 2, 4) = 7/4;
    # the method is clipped to (0, 2, 2, 4): A = 2  ->  1 - (2 - 7/4) / (3 - 7/4) = 0.8
    method = np.array([0.0, 2.0, 2.0, INF])
    assert metrics.attackbench_optimality(method, BEST) == pytest.approx(0.8)


def test_trapezoid_variant_reproduces_the_reference_code() -> None:
    assert metrics.attackbench_optimality_trapz(BEST, BEST) == pytest.approx(1.0)
    # reference curves: best at (0, .75) (1, .5) (2, .25) (4, 0) -> area 1.25;
    # never-succeeding method at (0, .75) (4, 0) -> area 1.5: 1 - 0.25 / 1.75
    never = np.array([0.0, INF, INF, INF])
    assert metrics.attackbench_optimality_trapz(never, BEST) == pytest.approx(1 - 0.25 / 1.75)


def test_scale_invariant_and_monotone() -> None:
    method = np.array([0.0, 1.5, 2.0, 5.0])
    worse = method * 1.2
    score = metrics.attackbench_optimality(method, BEST)
    assert metrics.attackbench_optimality(method * 7.0, BEST * 7.0) == pytest.approx(score)
    assert metrics.attackbench_optimality(worse, BEST) < score < 1.0


def test_samples_nobody_breaks_stay_robust_for_every_curve() -> None:
    best = np.array([0.5, 1.0, INF])
    assert metrics.attackbench_optimality(best, best) == pytest.approx(1.0)
    # eps* = 1, A0 = 1, A* = (0.5 + 1 + 1) / 3; the method reaches A = 1 -> score 0
    assert metrics.attackbench_optimality(np.array([1.0, 1.0, INF]), best) == pytest.approx(0.0)


def test_undefined_cases_and_bad_inputs() -> None:
    zeros = np.zeros(3)
    assert math.isnan(metrics.attackbench_optimality(zeros, zeros))
    with pytest.raises(ValueError, match="below the per-sample best"):
        metrics.attackbench_optimality(np.array([0.0, 0.5, 2.0, 4.0]), BEST)
    with pytest.raises(ValueError, match="distances"):
        metrics.attackbench_optimality(np.array([1.0]), BEST)
    with pytest.raises(ValueError, match="NaN"):
        metrics.attackbench_optimality(np.array([0.0, 1.0, math.nan, 4.0]), BEST)


def test_success_rate_and_median_over_correct_samples() -> None:
    dist = np.array([0.0, 1.0, INF, 3.0])
    correct = np.array([False, True, True, True])
    assert metrics.success_rate(dist, correct) == pytest.approx(2 / 3)
    assert metrics.median_distance(dist, correct) == pytest.approx(3.0)
