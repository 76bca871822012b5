"""The conformance kit on every object the example plugin provides: what a third-party
plugin's test suite looks like."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from mmargin.plugin import Dataset, TorchAdapter
from mmargin.testing import (
    Case,
    Check,
    adapter_case,
    distance_case,
    loader_case,
    parametrize_with_checks,
    space_case,
)
from mmargin_series.data import load_sines
from mmargin_series.distance import energy_distance, energy_reference
from mmargin_series.model import sine_filters
from mmargin_series.space import series_space


@functools.cache
def _sines() -> Dataset:
    return load_sines(n=8, seed=1)


def _inputs() -> np.ndarray:
    return np.asarray(_sines().x)


def _adapter() -> Any:
    return TorchAdapter(sine_filters())


CASES: list[Case] = [
    space_case("series", series_space, _inputs),
    space_case("series-window", lambda: series_space(window=[16, 40]), _inputs),
    space_case("series-narrow", lambda: series_space(lower=-1.5, upper=1.5), _inputs),
    distance_case("energy", energy_distance, (64,), reference=energy_reference),
    adapter_case("sine_filters", _adapter, _inputs),
    loader_case("sines", load_sines, {"n": 30, "seed": 2}, space=series_space),
]


@parametrize_with_checks(CASES)
def test_example_conformance(case: Case, check: Check) -> None:
    check(case)
