"""The budget is a contract: for every strategy, the passes each result reports are the
passes an independent counter around the model saw, and never more than the budget —
tiny budgets and every finishing step (line search, exact nudges, verification, report,
decoding) included. Absurd budgets, restarts and seeds are refused up front."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import engine_fakes as F  # the tests folder is on sys.path (conftest.py)
import numpy as np
import pytest
import torch

from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.spec import DiscreteConfig, GradientConfig, SearchSpec
from mmargin.exact.types import ExactMargin
from mmargin.results import SampleResult, Status
from mmargin.spaces import box

BUDGETS = (1, 2, 5, 17, 150)


def _never_adversarial(x: np.ndarray, label: int, target: int | None, upper: float | None) -> Any:
    """An exact method whose point never verifies: the engine tries every nudge."""
    return ExactMargin(1.0, 0.0, x.copy(), None, "fake", False, plugin="fake")


def _report(model: Any, x: Any, x_adv: Any, labels: Any, goal: Any) -> list[dict[str, Any]]:
    """A report that spends two passes per sample through the counted model."""
    model(x_adv)
    model(x)
    return [{"report": "ok"}]


Run = Callable[[int], tuple[list[SampleResult], int]]


def _continuous(strategy: str, black: bool = False, extras: bool = False) -> Run:
    net = F.mlp(seed=4)
    x = F.continuous_data(12, seed=3)
    labels = F.labels_of(net, x)

    def run(budget: int) -> tuple[list[SampleResult], int]:
        adapter, counter = F.black_box(net) if black else F.torch_adapter(net)
        spec = SearchSpec(budget=budget, strategy=strategy, line_search_steps=6,
                          report_passes=2 if extras else 0,
                          gradient=GradientConfig(restarts=2))  # fmt: skip
        out = minimal_flip(adapter, box(0.0, 1.0, sample_shape=(6,)), lp("l2"), x, labels,
                           spec=spec, exact=_never_adversarial if extras else None,
                           report=_report if extras else None)  # fmt: skip
        return out, counter.rows if black else counter.passes

    return run


def _discrete(method: str, ranked: bool = False) -> Run:
    x, labels = F.token_cases(10)

    def run(budget: int) -> tuple[list[SampleResult], int]:
        model = F.TokenModel(F.token_weights(), differentiable=ranked)
        space = F.TokenSpace(F.groups(), DiscreteConfig(method=method), ranked=ranked)
        out = minimal_flip(model, space, F.EditCount(), x, labels,
                           spec=SearchSpec(budget=budget, exact="auto"))  # fmt: skip
        return out, model.rows

    return run


def _relaxed() -> Run:
    x, labels = F.token_cases(8)

    def run(budget: int) -> tuple[list[SampleResult], int]:
        model = F.TokenModel(F.token_weights())
        space = F.RelaxedTokenSpace()
        out = minimal_flip(model, space, lp("l2"), x, labels,
                           spec=SearchSpec(budget=budget, line_search_steps=5))  # fmt: skip
        return out, model.rows + space.backward_rows

    return run


CASES: dict[str, Run] = {
    "gradient": _continuous("gradient"),
    "gradient+exact+report": _continuous("gradient", extras=True),
    "decision": _continuous("decision", black=True),
    "decision+exact+report": _continuous("decision", black=True, extras=True),
    "hybrid": _continuous("hybrid"),
    "greedy": _discrete("greedy"),
    "greedy-ranked": _discrete("greedy", ranked=True),
    "beam": _discrete("beam"),
    "exhaustive": _discrete("exhaustive"),
    "relaxed": _relaxed(),
}


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_reported_queries_equal_counted_passes_and_fit_the_budget(case: str, budget: int) -> None:
    results, counted = CASES[case](budget)
    assert sum(r.queries for r in results) == counted
    assert max(r.queries for r in results) <= budget
    assert all(r.status is not Status.ERROR for r in results), [r.message for r in results]
    if budget == 1:  # the clean pass only: nothing searched, nothing invented
        assert all(r.status is not Status.FLIPPED for r in results)
    if budget == 150:
        assert any(r.status is Status.FLIPPED for r in results)
    if case.endswith("report") and budget == 150:
        flipped = [r for r in results if r.status is Status.FLIPPED]
        assert flipped and all(r.extras.get("report") == "ok" for r in flipped)


def test_a_report_past_the_budget_is_refused_not_charged_beyond_it() -> None:
    """No passes set aside for the report: it runs only on what the sample has left."""
    net = F.mlp(seed=4)
    x = F.continuous_data(6, seed=3)
    adapter, counter = F.torch_adapter(net)

    def greedy_report(model: Any, x: Any, x_adv: Any, labels: Any, goal: Any) -> Any:
        for _ in range(20):
            model(x_adv)
        return [{"report": "ok"}]

    results = minimal_flip(adapter, box(0.0, 1.0), lp("l2"), x, F.labels_of(net, x),
                           spec=SearchSpec(budget=60), report=greedy_report)  # fmt: skip
    assert sum(r.queries for r in results) == counter.passes
    assert max(r.queries for r in results) <= 60
    flipped = [r for r in results if r.status is Status.FLIPPED]
    assert flipped and all("report_skipped" in r.extras for r in flipped)


@pytest.mark.parametrize("budget", [1, 17, 1000])
def test_api_runs_with_exact_margins_stay_within_the_budget(budget: int) -> None:
    """The exact hook's nudges were once spent on top of the budget (1003 for 1000)."""
    import mmargin

    model = torch.nn.Linear(5, 3)
    x = F.continuous_data(8, seed=4, d=5)
    labels = F.labels_of(model, x)
    results = mmargin.evaluate(model, x, labels, "linf", space="box", budget=budget)
    assert max(r.queries for r in results) <= budget
    if budget == 1000:
        assert all(r.status is Status.FLIPPED and r.exact for r in results)


SWITCHES = ("unspent_refine", "exchange_reserve", "stretch_refine", "next_class",
            "skip_far_probes", "unspent_polish", "l1_slow_restart", "l1_slow_extend")  # fmt: skip
"""GradientConfig's true/false fields: each refuses anything else (1 included)."""


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: SearchSpec(budget=2**63 - 1), "search.budget"),
        (lambda: SearchSpec(budget=0), "search.budget"),
        (lambda: SearchSpec(budget=-5), "search.budget"),
        (lambda: SearchSpec(budget="many"), "search.budget"),  # type: ignore[arg-type]
        (lambda: SearchSpec(budget=True), "search.budget"),
        (lambda: SearchSpec(batch_size=0), "search.batch_size"),
        (lambda: SearchSpec(seed=2**63), "search.seed"),
        (lambda: SearchSpec(seed=-1), "search.seed"),
        (lambda: SearchSpec(strategy="fastest"), "search.strategy"),
        (lambda: SearchSpec(exact="maybe"), "search.exact"),
        (lambda: GradientConfig(restarts=10**6), "gradient.restarts"),
        (lambda: GradientConfig(restarts=-1), "gradient.restarts"),
        (lambda: GradientConfig(rtol=float("nan")), "gradient.rtol"),
        (lambda: GradientConfig(stretch_below=-0.1), "gradient.stretch_below"),
        (lambda: GradientConfig(stretch_below=float("inf")), "gradient.stretch_below"),
        *[((lambda f=f: GradientConfig(**{f: 1})), f"gradient.{f}") for f in SWITCHES],
    ],
)
def test_absurd_values_are_refused_up_front_naming_the_field(
    make: Callable[[], Any], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: expected"):
        make()


def test_the_budget_split_never_exceeds_the_budget() -> None:
    for budget in range(1, 60):
        for reserve in (0, 1, 5, 7):
            plan = SearchSpec(budget=budget).plan(reserve)
            assert plan.search >= 0 and plan.line_search >= 0
            assert plan.search + plan.line_search + 2 + reserve <= max(budget, 2 + reserve)
    assert SearchSpec(budget=1000).plan().search == 986  # the benchmarks' split is unchanged
