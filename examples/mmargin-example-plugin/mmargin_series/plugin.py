"""The example plugin's hook implementations (entry point ``series = "mmargin_series.plugin"``).

Registration hooks hand the host a factory per name; factories import the heavy modules
(torch) when a task calls them, so importing this module stays cheap. Two optional hooks
show how a space adds to each result and to the run's folder without the engine knowing
about series: ``mmargin_sample_report`` (per-sample extras) and ``mmargin_write_artifacts``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmargin.plugin import Register, hookimpl

if TYPE_CHECKING:  # only for annotations: importing them here would load torch
    from mmargin.plugin import Dataset, SampleResult


def _space(**options: Any) -> Any:
    from mmargin_series.space import series_space

    return series_space(**options)


def _distance() -> Any:
    from mmargin_series.distance import energy_distance

    return energy_distance()


def _sines(**options: Any) -> Any:
    from mmargin_series.data import load_sines

    return load_sines(**options)


def _model(**options: Any) -> Any:
    from mmargin_series.model import sine_filters

    return sine_filters(**options)


@hookimpl
def mmargin_register_spaces(register: Register) -> None:
    register("series", _space, help="1-D time series in a value range, optional step window")


@hookimpl
def mmargin_register_distances(register: Register) -> None:
    register("energy", _distance, help="Euclidean size of the change to a series")


@hookimpl
def mmargin_register_datasets(register: Register) -> None:
    register("sines", _sines, help="seeded noisy sines of 1, 2 or 3 cycles")


@hookimpl
def mmargin_register_models(register: Register) -> None:
    register("sine_filters", _model, help="filter bank scoring the energy at 1, 2, 3 cycles")


def _is_series(space: Any) -> bool:
    from mmargin_series.space import SeriesSpace

    return isinstance(space, SeriesSpace)


@hookimpl
def mmargin_sample_report(
    space: Any, model: Any, x: Any, x_adv: Any, labels: Any, goal: Any
) -> list[dict[str, Any]] | None:
    """Per changed series: the largest single-step change and the step where it is.

    Spends no model pass (``model`` is the engine's counted adapter: any pass made through
    it would be charged to the sample's budget)."""
    if not _is_series(space):
        return None
    delta = (x_adv - x).flatten(1).abs()
    peak, step = delta.max(dim=1)
    return [
        {"peak_change": float(p), "peak_step": int(s)} if float(p) > 0 else {}
        for p, s in zip(peak.tolist(), step.tolist(), strict=True)
    ]


@hookimpl
def mmargin_write_artifacts(
    space: Any, out: Path, results: Sequence[SampleResult], dataset: Dataset
) -> None:
    """``out/series/adversarials.csv``: per flipped series, its id, labels and values."""
    if not _is_series(space):
        return
    folder = Path(out) / "series"
    folder.mkdir(parents=True, exist_ok=True)
    position = {str(s): i for i, s in enumerate(dataset.ids)}
    with open(folder / "adversarials.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "label", "adv_label", "kind", "values"])
        for r in results:
            if r.status.value != "flipped" or r.adversarial is None or r.sample not in position:
                continue
            clean = dataset.x[position[r.sample]]
            for kind, values in (("clean", clean), ("adversarial", r.adversarial)):
                row = " ".join(f"{v:.6g}" for v in values.reshape(-1).tolist())
                writer.writerow([r.sample, r.label, r.adv_label, kind, row])


@hookimpl
def mmargin_render_sample(space: Any, result: Any, dataset_item: Any) -> str | None:
    """Clean and adversarial series as an inline SVG, for ``mmargin report``'s gallery."""
    if not _is_series(space) or result.adversarial is None:
        return None
    from mmargin_series.render import render_series

    return render_series(result, dataset_item)
