"""Summary figures of a run: accuracy, attack success, margin quantiles, robustness curve.

Margins in native units (``units``) are only comparable within one distance. The
relative margin (margin over the input's own size in the same distance: ‖x‖ for Lp
distances, the number of words or characters for text edits) depends on what "size"
means in each modality, so it compares runs of one modality and distance only.

Across runs, models and modalities, compare the figures measured against the random
baseline of :mod:`mmargin.engine.baseline` (the smallest random perturbation that flips
the same sample, in the same space and distance):

* ``random_ratio_median``: median of margin / random margin over flipped samples;
* ``normalised_auc``: the area under robust accuracy when each sample's ε is measured in
  units of its own random margin, ε from 0 to that margin
  (``normalised_scale = "random_margin"``). It equals the mean over samples of
  ``min(margin / random_margin, 1)`` (misclassified samples 0, samples no search flipped
  1): 1 means no sample flips before random noise would flip it, 0 that every sample
  flips at a vanishing fraction of its random margin.
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
    ``relative_margin_median`` compares runs of one modality and distance only;
    ``random_ratio_median`` and ``normalised_auc`` (on the scale ``normalised_scale``)
    compare any runs (``None`` without random margins, e.g. ``baseline_passes = 0``);
    ``units`` names the margins' native unit. Older run folders carried a ``curve_auc``
    scaled by the run's own largest margin; it is not comparable across runs and is no
    longer written (reading such a folder ignores it).
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
    random_ratio_median: float | None = None
    normalised_auc: float | None = None
    normalised_scale: str | None = None
    units: str | None = None
    indicator_counts: dict[str, int] = field(default_factory=dict)
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


NORMALISED_SCALE = "random_margin"
"""What ``normalised_auc`` is normalised by: each sample's random-perturbation margin."""


def summarize(
    results: Sequence[SampleResult], epsilons: Sequence[float] = (), units: str | None = None
) -> Summary:
    """Summary figures for a list of results of one distance (``units``: its unit label)."""
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
        random_ratio_median=random_ratio_median(flipped),
        normalised_auc=(auc := normalised_auc(ok)),
        normalised_scale=NORMALISED_SCALE if auc is not None else None,
        units=units,
        indicator_counts=indicator_counts(results),
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


def indicator_counts(results: Sequence[SampleResult]) -> dict[str, int]:
    """How many samples raised each attack-failure indicator (only those raised)."""
    counts: dict[str, int] = {}
    for r in results:
        for name in r.indicators:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def robust_accuracy(margins: np.ndarray, eps: float) -> float:
    """Fraction of samples whose margin exceeds ε (misclassified samples have margin 0)."""
    return float(np.mean(margins > eps)) if margins.size else math.nan


def random_ratio_median(flipped: Sequence[SampleResult]) -> float | None:
    """Median of margin / random margin over flipped samples that have one (``None``: none)."""
    ratios = [r.random_ratio for r in flipped if r.random_ratio is not None]
    return float(np.median(ratios)) if ratios else None


def scaled_margin(result: SampleResult) -> float | None:
    """A sample's margin in units of its random margin, clipped to [0, 1]: 0 when
    misclassified, 1 when no search flipped it, ``None`` when it has no random margin."""
    if result.status is Status.MISCLASSIFIED:
        return 0.0
    if result.status is Status.NOT_FLIPPED:
        return 1.0
    if result.status is Status.FLIPPED and result.random_ratio is not None:
        return min(result.random_ratio, 1.0)
    return None


def normalised_auc(results: Sequence[SampleResult]) -> float | None:
    """Area under robust accuracy vs ε / random margin on [0, 1] over the non-error
    ``results`` that have a scaled margin (``None`` when no sample has a random margin,
    i.e. the baseline was off): the mean of :func:`scaled_margin`."""
    if not any(r.random_margin is not None for r in results):
        return None
    scaled = [v for v in map(scaled_margin, results) if v is not None]
    return float(np.mean(scaled)) if scaled else None


def units_label(space: Any, distance: Any) -> str | None:
    """The native unit of a run's margins: the distance's own ``units`` when it names
    them (``words``, ``cost points``), else its name and the modality
    (``l2 of the image perturbation``)."""
    units = str(getattr(distance, "units", "") or "")
    if units:
        return units
    name, modality = str(getattr(distance, "name", "")), str(getattr(space, "modality", ""))
    return f"{name} of the {modality} perturbation" if name and modality else (name or None)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _quantile(values: np.ndarray, q: float) -> float:
    if values.size == 0:
        return math.nan
    return float(np.quantile(values, q, method="lower"))
