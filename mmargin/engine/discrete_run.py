"""Per-input work of the discrete strategy: the clean pass, the search, re-verification.

Called by :func:`mmargin.engine.discrete.discrete_flip` for each input; turns whatever
happens (a flip, no flip, a bad input, a model that raises) into one
:class:`~mmargin.results.SampleResult`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from mmargin import results
from mmargin.engine.discrete import DiscreteConfig, Found
from mmargin.goals import Goal
from mmargin.results import SampleResult, Status


def result_record(
    space: Any, distance: Any, sample: str, label: int, status: Status, **fields: Any
) -> SampleResult:
    """:func:`mmargin.results.result_record` for a discrete space and distance."""
    return results.result_record(
        sample, label, status, modality=space.modality, space=space.name,
        distance=distance.name, **fields,
    )  # fmt: skip


def decided_class(goal: Goal, scores: torch.Tensor) -> int:
    """The class the goal's decision rule gives one row of scores (arg-max by default)."""
    rule = getattr(goal, "decide", None)
    return int((rule(scores) if rule is not None else scores.argmax(dim=1))[0])


def _targets(goal: Goal, label: int) -> torch.Tensor | None:
    targets_for = getattr(goal, "targets_for", None)
    return targets_for(torch.tensor([label])) if targets_for is not None else None


def search_one(
    model: Any,
    space: Any,
    distance: Any,
    goal: Goal,
    spec: Any,
    config: DiscreteConfig,
    x: Any,
    label: int,
    sample: str,
) -> SampleResult:
    """Search one input, turning any failure of the model or the space into an error."""
    from mmargin.engine.discrete_search import Evaluator, search

    started = time.perf_counter()
    queries = 0
    try:
        targets = _targets(goal, label)
        with torch.no_grad():
            scores = model([x])
        queries = 1
        if scores.dim() != 2 or scores.shape[0] != 1:
            raise ValueError(
                f"model returned scores of shape {tuple(scores.shape)}, expected (1, K)"
            )
        pred = decided_class(goal, scores)
        if not bool(torch.isfinite(scores).all()):
            return result_record(
                space,
                distance,
                sample,
                label,
                Status.ERROR,
                queries=1,
                message="model returned NaN/inf scores for this input",
            )
        if targets is not None and int(targets[0]) == label:
            return result_record(
                space,
                distance,
                sample,
                label,
                Status.ERROR,
                queries=1,
                message="the target class equals the true label",
            )
        labels_t = torch.tensor([label])
        if pred != label:
            return result_record(
                space,
                distance,
                sample,
                label,
                Status.MISCLASSIFIED,
                pred_label=pred,
                adv_label=pred,
                margin=0.0,
                lower_bound=0.0,
                verified=True,
                queries=1,
                relative_margin=0.0,
                message="the model already misclassifies this input",
                adversarial=x,
                seconds=time.perf_counter() - started,
            )
        clean_loss = float(goal.loss(scores, labels_t, targets)[0])
        problem = space.problem(model, x)
        evaluator = Evaluator(
            model, problem, goal, label, targets, spec.budget - 2, spec.batch_size, clean_loss
        )
        found = search(evaluator, problem, config, spec.exact, model)
        queries = 1 + evaluator.queries
        return _finish(
            model, space, distance, goal, problem, found, x, label, pred, sample, queries, started
        )
    except Exception as exc:  # noqa: BLE001 - the model and the space are user code
        return result_record(
            space,
            distance,
            sample,
            label,
            Status.ERROR,
            queries=queries,
            message=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - started,
        )


def _finish(
    model: Any,
    space: Any,
    distance: Any,
    goal: Goal,
    problem: Any,
    found: Found,
    x: Any,
    label: int,
    pred: int,
    sample: str,
    queries: int,
    started: float,
) -> SampleResult:
    """Re-verify the best edits with a fresh query and build the result record."""
    notes = list(getattr(problem, "notes", []) or [])
    extras: dict[str, Any] = {"notes": notes} if notes else {}
    extras.update(found.info)
    common: dict[str, Any] = dict(pred_label=pred, strategy=f"discrete:{found.method}")

    def not_flipped(why: str, queries: int) -> SampleResult:
        return result_record(
            space, distance, sample, label, Status.NOT_FLIPPED, margin=math.inf,
            lower_bound=found.lower, queries=queries, message=why, extras=extras,
            seconds=time.perf_counter() - started, **common,
        )  # fmt: skip

    if found.edits is None:
        return not_flipped(found.message or "no flip found within the budget", queries)
    adversarial = problem.apply(found.edits)
    with torch.no_grad():
        scores = model([adversarial])
    queries += 1
    targets = _targets(goal, label)
    ok = bool(torch.isfinite(scores).all()) and bool(
        goal.is_adversarial(scores, torch.tensor([label]), targets)[0]
    )
    margin = float(sum(e.cost for e in found.edits))
    lower = found.lower
    measure = getattr(distance, "measure", None)
    if measure is not None:  # the distance's own view; the search's bound holds for costs
        measured = float(measure(x, adversarial, found.edits))
        if measured < margin:
            extras["edit_cost"], margin, lower = margin, measured, None
    if not ok:
        return not_flipped("a flip was found but failed re-verification", queries)
    seconds = time.perf_counter() - started
    size_fn = getattr(problem, "size", None)
    size = float(size_fn()) if size_fn is not None else math.nan
    report = getattr(problem, "report", None)
    extras["edits"] = [e.describe() for e in sorted(found.edits, key=lambda e: e.position)]
    if report is not None:
        extras.update(report(found.edits, adversarial))
    lower = None if lower is None else min(lower, margin)
    return result_record(
        space,
        distance,
        sample,
        label,
        Status.FLIPPED,
        adv_label=decided_class(goal, scores),
        margin=margin,
        lower_bound=lower,
        verified=True,
        queries=queries,
        seconds=seconds,
        relative_margin=margin / size if size and math.isfinite(size) and size > 0 else None,
        extras=extras,
        adversarial=adversarial,
        **common,
    )
