"""The engine's units (:class:`~mmargin.engine.driver.Units`): every sample is delivered in
exactly one unit, unit 0 holds the samples that cannot be searched, and running the units
apart (as shards or after a resume) gives the whole run's results bit for bit, for every
kind of space."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import engine_fakes as F  # the tests folder is on sys.path (conftest.py)
import numpy as np
import pytest

from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.driver import Units
from mmargin.engine.spec import DiscreteConfig, SearchSpec
from mmargin.results import SampleResult, Status
from mmargin.spaces import box

Runner = Callable[[Units | None], list[SampleResult]]


def _continuous(strategy: str) -> Runner:
    net = F.mlp(seed=5)
    x = F.continuous_data(23, seed=7)
    x[4] = np.nan  # a sample the space refuses: unit 0
    labels = F.labels_of(net, np.nan_to_num(x))

    def run(units: Units | None) -> list[SampleResult]:
        adapter = F.black_box(net)[0] if strategy == "decision" else F.torch_adapter(net)[0]
        spec = SearchSpec(budget=120, batch_size=5, strategy=strategy, exact="never")
        return minimal_flip(adapter, box(0.0, 1.0, sample_shape=(6,)), lp("l2"), x, labels,
                            spec=spec, units=units)  # fmt: skip

    return run


def _tokens(relaxed: bool) -> Runner:
    x, labels = F.token_cases(17, seed=9, length=(4, 6) if relaxed else (3, 7))
    x[3] = ()  # an empty input: refused by the space, unit 0

    def run(units: Units | None) -> list[SampleResult]:
        spec = SearchSpec(budget=150, batch_size=4)
        model = F.TokenModel(F.token_weights())
        if relaxed:
            return minimal_flip(model, F.RelaxedTokenSpace(), lp("l2"), x, labels, spec=spec,
                                units=units)  # fmt: skip
        space = F.TokenSpace(F.groups(), DiscreteConfig(method="greedy"))
        return minimal_flip(model, space, F.EditCount(), x, labels, spec=spec, units=units)

    return run


CASES: dict[str, Callable[[], Runner]] = {
    "gradient": lambda: _continuous("gradient"),
    "decision": lambda: _continuous("decision"),
    "greedy": lambda: _tokens(relaxed=False),
    "relaxed": lambda: _tokens(relaxed=True),
}


def _key(r: SampleResult) -> tuple[Any, ...]:
    adv = r.adversarial
    bits = np.asarray(adv).tobytes() if adv is not None else None
    return (r.sample, r.status, repr(r.margin), r.queries, r.adv_label, bits)


@pytest.mark.parametrize("case", sorted(CASES))
def test_units_apart_give_the_whole_run(case: str) -> None:
    run = CASES[case]()
    whole = run(None)
    delivered: dict[int, list[str]] = {}
    parts: list[SampleResult] = []

    def sink(unit: int, results: list[SampleResult]) -> None:
        assert unit not in delivered, f"unit {unit} delivered twice"
        delivered[unit] = [r.sample for r in results]
        parts.extend(results)

    for parity in (1, 0):  # odd units first: order must not matter
        picked = run(Units(select=lambda unit, ids, p=parity: unit % 2 == p, sink=sink))
        assert all(r.sample in {s for u, ss in delivered.items() if u % 2 == parity for s in ss}
                   for r in picked)  # fmt: skip
    assert sorted(s for ss in delivered.values() for s in ss) == sorted(r.sample for r in whole)
    assert all(r.status is Status.ERROR for r in parts if r.sample in delivered.get(0, []))
    assert delivered.get(0), "the refused sample is in unit 0"
    by_id = {r.sample: r for r in parts}
    assert [_key(by_id[r.sample]) for r in whole] == [_key(r) for r in whole]


def test_skipped_units_are_not_searched_and_progress_counts_only_run_samples() -> None:
    run_done: list[int] = []
    net = F.mlp(seed=5)
    x = F.continuous_data(12, seed=7)
    labels = F.labels_of(net, x)
    adapter = F.torch_adapter(net)[0]
    spec = SearchSpec(budget=60, batch_size=4, strategy="gradient", exact="never")
    out = minimal_flip(adapter, box(0.0, 1.0, sample_shape=(6,)), lp("l2"), x, labels,
                       spec=spec, progress=run_done.append,
                       units=Units(select=lambda unit, ids: unit == 2))  # fmt: skip
    assert [r.sample for r in out] == ["4", "5", "6", "7"] and run_done == [4]
