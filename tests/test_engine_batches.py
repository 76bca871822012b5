"""Batch independence: a sample's result does not depend on which samples share its batch.

Every strategy runs the same samples with batch sizes 1, 7 and 64 and in single-class
batches; statuses must be identical and margins equal up to float rounding: relative
1e-3 (the line search's resolution is 2**-12 of the flip's scale, and a batched float32
matrix product may round differently from a single row's). The decision and hybrid
strategies start from class-balanced rows of the run's data picked once per run, so their
single-class check keeps the run and makes every batch single-class; the others are also
run on one class's samples alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import engine_fakes as F  # the tests folder is on sys.path (conftest.py)
import numpy as np
import pytest

from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.spec import DiscreteConfig, GradientConfig, SearchSpec
from mmargin.goals import Targeted
from mmargin.results import SampleResult
from mmargin.spaces import box

RTOL = 1e-3


PER_CLASS = 8


def _balanced() -> tuple[Any, np.ndarray, np.ndarray]:
    """8 samples of each of 3 classes, shuffled (so batches of 7 and 64 mix classes)."""
    net = F.mlp(seed=5)
    pool = F.continuous_data(400, seed=7)
    labels = F.labels_of(net, pool)
    keep = np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(3)])
    keep = np.random.default_rng(0).permutation(keep)
    return net, pool[keep], labels[keep]


Runner = Callable[[Any, np.ndarray, list[str], int], list[SampleResult]]


def _continuous(strategy: str, targeted: bool = False) -> tuple[Any, Any, Runner]:
    net, x, labels = _balanced()

    def run(xs: Any, ys: np.ndarray, ids: list[str], batch: int) -> list[SampleResult]:
        adapter = F.black_box(net)[0] if strategy == "decision" else F.torch_adapter(net)[0]
        spec = SearchSpec(budget=200, batch_size=batch, strategy=strategy, exact="never",
                          gradient=GradientConfig(restarts=2))  # fmt: skip
        goal = Targeted(2) if targeted else None
        return minimal_flip(adapter, box(0.0, 1.0, sample_shape=(6,)), lp("l2"), xs, ys, ids,
                            goal=goal, spec=spec)  # fmt: skip

    return x, labels, run


def _discrete(method: str) -> tuple[Any, Any, Runner]:
    x, labels = F.token_cases(24, seed=8)

    def run(xs: Any, ys: np.ndarray, ids: list[str], batch: int) -> list[SampleResult]:
        space = F.TokenSpace(F.groups(), DiscreteConfig(method=method))
        return minimal_flip(F.TokenModel(F.token_weights()), space, F.EditCount(), xs, ys, ids,
                            spec=SearchSpec(budget=300, batch_size=batch))  # fmt: skip

    return x, labels, run


def _relaxed() -> tuple[Any, Any, Runner]:
    x, labels = F.token_cases(24, seed=9, length=(4, 5))

    def run(xs: Any, ys: np.ndarray, ids: list[str], batch: int) -> list[SampleResult]:
        return minimal_flip(F.TokenModel(F.token_weights()), F.RelaxedTokenSpace(), lp("l2"),
                            xs, ys, ids, spec=SearchSpec(budget=200, batch_size=batch))  # fmt: skip

    return x, labels, run


CASES: dict[str, Callable[[], tuple[Any, Any, Runner]]] = {
    "gradient": lambda: _continuous("gradient"),
    "gradient-targeted": lambda: _continuous("gradient", targeted=True),
    "decision": lambda: _continuous("decision"),
    "hybrid": lambda: _continuous("hybrid"),
    "greedy": lambda: _discrete("greedy"),
    "beam": lambda: _discrete("beam"),
    "exhaustive": lambda: _discrete("exhaustive"),
    "relaxed": _relaxed,
}
POOLED = ("decision", "hybrid")


def _by_id(results: list[SampleResult]) -> dict[str, SampleResult]:
    return {r.sample: r for r in results}


def _same(a: dict[str, SampleResult], b: dict[str, SampleResult], what: str) -> None:
    for sample, r in b.items():
        ref = a[sample]
        assert r.status is ref.status, (what, sample, ref.status, r.status, r.message)
        if math.isfinite(ref.margin):
            assert r.margin == pytest.approx(ref.margin, rel=RTOL), (what, sample)
        else:
            assert not math.isfinite(r.margin) or math.isnan(ref.margin), (what, sample)


@pytest.mark.parametrize("case", sorted(CASES))
def test_results_do_not_depend_on_the_batch(case: str) -> None:
    x, labels, run = CASES[case]()
    ids = [f"s{i}" for i in range(len(labels))]
    reference = _by_id(run(x, labels, ids, 1))
    assert sum(r.status.value == "flipped" for r in reference.values()) >= len(ids) // 2
    for batch in (7, 64):
        _same(reference, _by_id(run(x, labels, ids, batch)), f"batch of {batch}")
    order = np.argsort(labels, kind="stable")  # every batch holds one class
    counts = np.bincount(labels)
    size = int(np.gcd.reduce(counts[counts > 0]))
    sorted_x = x[order]
    _same(reference, _by_id(run(sorted_x, labels[order], [ids[i] for i in order], size)),
          "single-class batches")  # fmt: skip
    if case not in POOLED:  # one class's samples alone
        one = np.flatnonzero(labels == labels[0])
        alone = run(x[one], labels[one], [ids[i] for i in one], 64)
        _same(reference, _by_id(alone), "a single-class run")
