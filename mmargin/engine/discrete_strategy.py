"""The discrete strategies under the driver: greedy, beam and exhaustive edit searches.

For each correctly classified input the space prepares a
:class:`~mmargin.protocols.DiscreteProblem` (positions, candidate edits, costs); the
search (:mod:`mmargin.engine.discrete_search`) finds the fewest (cheapest) edits that
flip the model within the budget, and the distance measures the result. The driver does
the clean pass, the re-verification and the records, as for every other strategy; a
failure of one input's search (its tokenizer, its model call) is that input's error.

The model adapter of a discrete space maps a *list of inputs* (strings for text) to a
score tensor ``(B, K)``; every input scored counts as one pass, a gradient ranking as
the passes its :class:`~mmargin.protocols.Ranking` declares.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mmargin.engine.counting import CountingAdapter
from mmargin.engine.discrete_search import Evaluator, search
from mmargin.engine.driver import DISCRETE, Batch, Candidate, Run, run_batches
from mmargin.engine.spec import DISCRETE_METHODS, DiscreteConfig, ReportFn, SearchSpec
from mmargin.goals import Goal
from mmargin.protocols import DiscreteSpace
from mmargin.results import SampleResult


def discrete_config(space: DiscreteSpace, spec: SearchSpec) -> DiscreteConfig:
    """The search knobs: the spec's, else the space's own, with the strategy's method."""
    config = spec.discrete or space.search_config or DiscreteConfig()
    if spec.strategy in DISCRETE_METHODS:
        config = replace(config, method=spec.strategy)
    elif spec.strategy not in ("auto", "discrete"):
        raise ValueError(
            f"strategy {spec.strategy!r} cannot search the discrete space "
            f"{space.name!r}; use auto, greedy, beam or exhaustive"
        )
    if spec.exact == "only":
        config = replace(config, method="exhaustive")
    return config


@dataclass
class DiscreteSearch:
    """Greedy, beam or exhaustive search of each input's edits. ``model`` (the caller's
    adapter, not the counted one) is what the space prepares problems with."""

    config: DiscreteConfig
    model: Any
    name: str = "discrete"

    def search(self, run: Run, batch: Batch, rows: list[int]) -> list[Candidate]:
        """One candidate per input ``rows`` of ``batch``; a failure stays with its input."""
        out = []
        for i in rows:
            started = time.perf_counter()
            spent = [0]
            try:
                out.append(self._one(run, batch, i, spent))
            except Exception as exc:  # noqa: BLE001 - the model and the space are user code
                out.append(Candidate(queries=spent[0], error=f"{type(exc).__name__}: {exc}",
                                     method=f"discrete:{self.config.method}"))  # fmt: skip
            out[-1].seconds = time.perf_counter() - started
        return out

    def _one(self, run: Run, batch: Batch, i: int, spent: list[int]) -> Candidate:
        x = batch.inputs[i]
        labels = batch.labels[i : i + 1]
        targets = batch.targets[i : i + 1] if batch.targets is not None else None
        clean_loss = float(run.goal.loss(batch.scores[i : i + 1], labels, targets)[0])
        problem = run.space.problem(self.model, x)
        budget = run.spec.budget - 2 - run.spec.report_passes - run.spec.baseline_passes
        ev = Evaluator(run.model, problem, run.goal, int(labels[0]), targets, budget,
                       run.spec.batch_size, clean_loss)  # fmt: skip
        try:
            found = search(ev, problem, self.config, run.spec.exact, run.model)
        finally:
            spent[0] = ev.queries
        extras: dict[str, Any] = {"notes": list(problem.notes)} if problem.notes else {}
        extras.update(found.info)
        method = f"discrete:{found.method}"
        if found.edits is None:
            why = found.message or "no flip found within the budget"
            return Candidate(None, math.inf, found.lower, method, ev.queries, message=why,
                             extras=extras)  # fmt: skip
        adversarial = problem.apply(found.edits)
        margin, lower = float(sum(e.cost for e in found.edits)), found.lower
        measured = float(run.distance.measure(x, adversarial, found.edits))
        if measured < margin:  # the distance's own view; the search's bound holds for costs
            extras["edit_cost"], margin, lower = margin, measured, None
        extras["edits"] = [e.describe() for e in sorted(found.edits, key=lambda e: e.position)]
        extras.update(problem.report(found.edits, adversarial))
        size = float(problem.size())
        scale = size if math.isfinite(size) and size > 0 else None
        return Candidate(adversarial, margin, lower, method, ev.queries, scale, extras=extras)


def flip_discrete(
    model: Any, space: DiscreteSpace, distance: Any, x: Sequence[Any] | np.ndarray,
    labels: np.ndarray, ids: list[str], *, goal: Goal, spec: SearchSpec,
    report: ReportFn | None = None, progress: Callable[[int], None] | None = None,
) -> list[SampleResult]:  # fmt: skip
    """The driver on a discrete space (see :func:`mmargin.engine.minimal_flip`).

    ``distance`` names the units and ``measure(x, x_adv, edits)`` gives the final margin.
    Exact-margin hooks are not consulted: exhaustive enumeration is this strategy's exact
    method.
    """
    config = discrete_config(space, spec)
    inputs = list(x)
    run = Run(CountingAdapter(model), space, distance, goal, spec, report)
    problems = space.check(inputs)
    return run_batches(run, DISCRETE, DiscreteSearch(config, model), inputs, labels, ids,
                       problems, progress)  # fmt: skip
