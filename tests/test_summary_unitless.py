"""The unit-free summary figures against independent computations: the normalised AUC is
the integral of robust accuracy over ε / random margin (checked by numerical integration
of the curve itself), the median ratio on a linear model is the median |cos| between the
random direction and the weights (closed form), and both survive a run folder round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from mmargin.adapters import TorchAdapter
from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.baseline import streams, with_random
from mmargin.engine.spec import SearchSpec
from mmargin.results import SampleResult, Status, result_record
from mmargin.spaces import box
from mmargin.store import load_run, write_run
from mmargin.summary import NORMALISED_SCALE, summarize, units_label


def _results(seed: int = 0, n: int = 40) -> list[SampleResult]:
    """Flipped samples with random margins (some never flipped by noise), misclassified,
    not flipped and error samples, mixed."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["flipped", "flipped", "flipped", "mis", "not", "error"])
        common = dict(modality="toy", space="box", distance="l2")
        if kind == "flipped":
            margin = float(rng.uniform(0.1, 2.0))
            r = result_record(str(i), 0, Status.FLIPPED, margin=margin, **common)
            noise = math.inf if rng.uniform() < 0.1 else float(margin * rng.uniform(0.5, 20))
            out.append(with_random(r, (noise, 8)))
        elif kind == "mis":
            out.append(result_record(str(i), 0, Status.MISCLASSIFIED, margin=0.0, **common))
        elif kind == "not":
            r = result_record(str(i), 0, Status.NOT_FLIPPED, margin=math.inf, **common)
            out.append(with_random(r, (float(rng.uniform(1, 5)), 8)))
        else:
            out.append(result_record(str(i), 0, Status.ERROR, **common))
    return out


def _curve_area(results: list[SampleResult], points: int = 10001) -> float:
    """∫₀¹ robust accuracy at ε = t · random margin dt, by the trapezoid rule."""
    rows = [r for r in results if r.status is not Status.ERROR]
    grid = np.linspace(0.0, 1.0, points)

    def robust(r: SampleResult, t: float) -> bool:
        if r.status is Status.MISCLASSIFIED:
            return False
        if r.status is Status.NOT_FLIPPED:
            return True
        assert r.random_margin is not None
        if math.isinf(r.random_margin):  # noise never flipped it: any t > 0 is past it
            return t == 0
        return r.margin > t * r.random_margin

    curve = np.array([np.mean([robust(r, t) for r in rows]) for t in grid])
    return float(np.trapezoid(curve, grid))


def test_normalised_auc_is_the_area_under_the_scaled_robustness_curve() -> None:
    for seed in range(3):
        results = _results(seed)
        summary = summarize(results)
        assert summary.normalised_auc is not None
        assert math.isclose(summary.normalised_auc, _curve_area(results), abs_tol=2e-4)
        assert summary.normalised_scale == NORMALISED_SCALE
        ratios = [r.margin / r.random_margin for r in results
                  if r.status is Status.FLIPPED and r.random_margin is not None]  # fmt: skip
        assert summary.random_ratio_median == float(np.median(ratios))


def test_without_random_margins_the_unitless_figures_are_absent() -> None:
    results = [result_record("a", 0, Status.FLIPPED, margin=1.0, modality="toy", space="box",
                             distance="l2")]  # fmt: skip
    summary = summarize(results)
    assert summary.normalised_auc is None and summary.random_ratio_median is None
    assert summary.normalised_scale is None


def test_linear_median_ratio_is_the_median_cosine(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(2)
    w, b = torch.randn(5, generator=gen), 0.1

    class Linear(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x @ w + b
            return torch.stack([torch.zeros_like(s), s], dim=1)

    x = np.random.default_rng(4).normal(size=(9, 5)).astype(np.float32)
    labels = (x @ w.numpy() + b > 0).astype(np.int64)
    spec = SearchSpec(budget=300, baseline_passes=64)
    results = minimal_flip(TorchAdapter(Linear()), box(), lp("l2"), x, labels, spec=spec)
    space = box()
    cosines = []
    for xi, g in zip(x, streams(0, [str(i) for i in range(len(x))]), strict=True):
        u = space.random(torch.as_tensor(xi[None]), g)[0]
        cosines.append(abs(float(u @ w)) / float(w.norm()))
    summary = summarize(results, units=units_label(space, lp("l2")))
    assert summary.random_ratio_median is not None
    assert math.isclose(summary.random_ratio_median, float(np.median(cosines)), rel_tol=5e-3)
    assert summary.normalised_auc is not None
    assert math.isclose(summary.normalised_auc, float(np.mean(np.minimum(cosines, 1))),
                        rel_tol=5e-3)  # fmt: skip
    write_run(tmp_path, results, summary, {"task": {"name": "t"}})
    back = load_run(tmp_path)
    assert back.summary == summary
    assert [r.random_ratio for r in back.results] == [r.random_ratio for r in results]


def test_units_name_the_distance_or_the_modality() -> None:
    assert units_label(box(modality="image"), lp("linf")) == "linf of the image perturbation"
    assert units_label(box(), lp("l1", units="cost points")) == "cost points"
