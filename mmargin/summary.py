"""Summary figures of a run: accuracy, attack success, margin quantiles, robustness curve.

Margins in native units are only comparable within one distance, so the summary also
carries the relative margin ‖δ‖/‖x‖ and the normalised area under the robust-accuracy
curve, which mean the same thing for pixels, features or samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmargin.results import SampleResult, Status, _json_value


@dataclass(frozen=True)
class Summary:
    """The headline figures of a run (``nan`` where a figure has no samples to stand on).

    Margin quantiles are over correctly classified samples, with ``inf`` for samples not
    flipped within budget (so a median of ``inf`` says most samples resisted).
    ``robust_accuracy`` maps ε to the fraction of non-error samples still classified
    correctly under every perturbation of size ≤ ε (upper bound, from the found margins).
    """

    distance: str
    samples: int
    errors: int
    clean_accuracy: float
    attack_success: float
    margin_median: float
    margin_q25: float
    margin_q75: float
    relative_margin_median: float
    exact_fraction: float
    queries_mean: float
    seconds_total: float
    robust_accuracy: dict[float, float] = field(default_factory=dict)
    curve_auc: float = math.nan
    certified_robust_accuracy: dict[float, float] = field(default_factory=dict)
    """ε → fraction of non-error samples proven correct under every perturbation ≤ ε
    (lower bound above ε); empty when no sample has a lower bound."""
    bracket_ratio_median: float | None = None
    """Median of margin / lower bound over flipped samples with a lower bound (1: exact)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite numbers as strings, ε keys as strings)."""
        out = asdict(self)
        out["robust_accuracy"] = {f"{k:g}": v for k, v in self.robust_accuracy.items()}
        out["certified_robust_accuracy"] = {
            f"{k:g}": v for k, v in self.certified_robust_accuracy.items()
        }
        return {k: _json_value(v) for k, v in out.items()}


def default_epsilons(margins: np.ndarray, count: int = 4) -> list[float]:
    """A few round ε values spanning the finite margins (quartiles, 2 significant digits)."""
    finite = margins[np.isfinite(margins) & (margins > 0)]
    if finite.size == 0:
        return []
    picks = np.quantile(finite, np.linspace(0.2, 0.8, count))
    return sorted({float(f"{p:.2g}") for p in picks})


def summarize(results: Sequence[SampleResult], epsilons: Sequence[float] = ()) -> Summary:
    """Summary figures for a list of results of one distance."""
    ok = [r for r in results if r.status is not Status.ERROR]
    correct = [r for r in ok if r.status is not Status.MISCLASSIFIED]
    flipped = [r for r in correct if r.status is Status.FLIPPED]
    margins = np.array([r.margin for r in correct], dtype=float)
    all_margins = np.array([r.margin for r in ok], dtype=float)
    eps_list = list(epsilons) or default_epsilons(margins)
    relative = [r.relative_margin for r in flipped if r.relative_margin is not None]
    return Summary(
        distance=results[0].distance if results else "",
        samples=len(results),
        errors=len(results) - len(ok),
        clean_accuracy=_ratio(len(correct), len(ok)),
        attack_success=_ratio(len(flipped), len(correct)),
        margin_median=_quantile(margins, 0.5),
        margin_q25=_quantile(margins, 0.25),
        margin_q75=_quantile(margins, 0.75),
        relative_margin_median=float(np.median(relative)) if relative else math.nan,
        exact_fraction=_ratio(sum(r.exact for r in flipped), len(flipped)),
        queries_mean=float(np.mean([r.queries for r in ok])) if ok else math.nan,
        seconds_total=float(sum(r.seconds for r in results)),
        robust_accuracy={e: robust_accuracy(all_margins, e) for e in eps_list},
        curve_auc=curve_auc(all_margins),
        **certified_figures(ok, eps_list),
    )


def certified_figures(ok: Sequence[SampleResult], eps_list: Sequence[float]) -> dict[str, Any]:
    """Certified robust accuracy per ε (lower bounds above ε; misclassified samples count
    as not robust) and the median bracket ratio margin / lower bound of flipped samples
    (``inf`` where the lower bound is 0), both empty / ``None`` without lower bounds."""
    if not any(r.lower_bound is not None and r.status is not Status.MISCLASSIFIED for r in ok):
        return {"certified_robust_accuracy": {}, "bracket_ratio_median": None}
    lows = np.array([0.0 if r.lower_bound is None or r.status is Status.MISCLASSIFIED
                     else r.lower_bound for r in ok], dtype=float)  # fmt: skip
    ratios = [r.margin / r.lower_bound if r.lower_bound > 0 else math.inf
              for r in ok if r.status is Status.FLIPPED and r.lower_bound is not None]  # fmt: skip
    return {
        "certified_robust_accuracy": {e: float(np.mean(lows > e)) for e in eps_list},
        "bracket_ratio_median": float(np.median(ratios)) if ratios else None,
    }


def robust_accuracy(margins: np.ndarray, eps: float) -> float:
    """Fraction of samples whose margin exceeds ε (misclassified samples have margin 0)."""
    return float(np.mean(margins > eps)) if margins.size else math.nan


def curve_auc(margins: np.ndarray) -> float:
    """Area under robust accuracy vs ε on [0, ε_max], divided by ε_max (unit-free, in [0, 1]).

    ε_max is the largest finite margin, so a model whose samples all sit at the same
    distance scores 1 and one whose margins are spread thin scores low.
    """
    finite = margins[np.isfinite(margins)]
    if finite.size == 0 or finite.max() <= 0:
        return math.nan
    grid = np.linspace(0.0, float(finite.max()), 201)
    curve = np.array([robust_accuracy(margins, e) for e in grid])
    return float(np.trapezoid(curve, grid) / grid[-1])


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _quantile(values: np.ndarray, q: float) -> float:
    if values.size == 0:
        return math.nan
    return float(np.quantile(values, q, method="lower"))
