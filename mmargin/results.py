"""Typed per-sample results and the run summary.

A result is frozen; ``margin`` is an *upper bound* on the true minimal perturbation (an
adversarial example of that size exists and was re-checked against the model), ``inf``
when no flip was found within the budget, ``0`` when the model already misclassifies the
sample and ``nan`` when the sample could not be searched (status ``error``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class Status(StrEnum):
    """What happened to one sample."""

    FLIPPED = "flipped"
    NOT_FLIPPED = "not_flipped"
    MISCLASSIFIED = "misclassified"
    ERROR = "error"


@dataclass(frozen=True)
class SampleResult:
    """The outcome of the minimal-flip search on one input.

    ``lower_bound`` is set where an exact method or certificate proves no smaller flip
    exists (``lower_bound == margin`` means the margin is exact). ``relative_margin`` is
    ``margin / size(x)``: the margin over the input's own size in the same distance (‖x‖
    for Lp distances, the number of words / characters for edits): it depends on each
    modality's notion of size, so it is for comparing runs of one modality and distance
    only. ``random_margin`` is the size of the smallest flipping *random* perturbation in
    the same space and distance (``inf``: none within its passes; ``None``: not measured)
    and ``random_ratio = margin / random_margin`` the unit-free figure for comparisons
    across runs and modalities (see :mod:`mmargin.engine.baseline`).
    ``adversarial`` is the verified adversarial input (a numpy array for continuous spaces,
    whatever the space uses otherwise); it is left out of ``to_json``. ``indicators`` names
    the attack-failure indicators raised for the sample (:mod:`mmargin.engine.indicators`);
    ``flip_rate`` is the share of repeated passes on which the flip held (non-deterministic
    models only).
    """

    sample: str
    modality: str
    space: str
    distance: str
    label: int
    pred_label: int | None
    adv_label: int | None
    margin: float
    lower_bound: float | None
    verified: bool
    queries: int
    seconds: float
    status: Status
    strategy: str
    relative_margin: float | None = None
    random_margin: float | None = None
    random_ratio: float | None = None
    bound_method: str | None = None
    """How ``lower_bound`` was proven: ``milp``, ``crown``, ``interval``, a closed form ..."""
    message: str = ""
    extras: Mapping[str, Any] = field(default_factory=dict)
    indicators: list[str] = field(default_factory=list)
    flip_rate: float | None = None
    adversarial: Any = field(default=None, repr=False, compare=False)

    @property
    def exact(self) -> bool:
        """True when the margin is proven minimal: the lower bound equals the margin up to
        the flip tolerance every reported adversarial must clear (relative 1e-3, absolute
        1e-5 in the distance's units) — see :func:`mmargin.goals.flip_tolerance`."""
        return self.lower_bound is not None and math.isclose(
            self.lower_bound, self.margin, rel_tol=1e-3, abs_tol=1e-5
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``inf``/``nan`` become the strings ``"inf"``/``"nan"``)."""
        out = asdict(self)
        out.pop("adversarial")
        out["status"] = self.status.value
        for key in FLOAT_FIELDS:
            out[key] = _json_float(out[key])
        out["extras"] = {k: _json_value(v) for k, v in self.extras.items()}
        return out


FLOAT_FIELDS = ("margin", "lower_bound", "relative_margin", "random_margin", "random_ratio")
"""The result fields that may hold ``inf`` / ``nan`` (spelled as strings in JSON)."""


def result_record(
    sample: str, label: int, status: Status, *, modality: str, space: str, distance: str,
    **fields: Any,
) -> SampleResult:  # fmt: skip
    """A result with neutral defaults (no prediction, margin ``nan``, nothing verified, no
    queries) that ``fields`` override: how every strategy builds its records."""
    defaults: dict[str, Any] = dict(
        pred_label=None, adv_label=None, margin=math.nan, lower_bound=None, verified=False,
        queries=0, seconds=0.0, strategy="none",
    )  # fmt: skip
    return SampleResult(
        sample=sample, modality=modality, space=space, distance=distance, label=label,
        status=status, **{**defaults, **fields},
    )  # fmt: skip


def _json_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def to_frame(results: Sequence[SampleResult]) -> pd.DataFrame:
    """The results as a pandas DataFrame, one row per sample (adversarials left out)."""
    import pandas as pd

    rows = []
    for r in results:
        row = asdict(r)
        row.pop("adversarial")
        row["status"] = r.status.value
        extras = row.pop("extras")
        row.update({f"extras.{k}": v for k, v in extras.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def adversarial_arrays(results: Sequence[SampleResult]) -> dict[str, np.ndarray]:
    """The verified adversarial arrays keyed by sample id (for ``adversarials.npz``)."""
    import numpy as np

    return {
        r.sample: np.asarray(r.adversarial)
        for r in results
        if r.status is Status.FLIPPED and r.adversarial is not None
    }
