"""The engine's front door: search a dataset batch by batch and return verified results.

It owns everything that is the same for every modality: input checks, the clean pass
(samples already misclassified get margin 0), batching and device placement, the query
budget, the choice of strategy, exact margins where a plugin has them, the line search,
re-verification of every adversarial, and isolation of failures — a model that raises or
returns NaN on some samples marks those samples ``error`` and the run goes on.

Strategies live in :data:`STRATEGIES` (name → search function returning a
:class:`~mmargin.engine.state.SearchState`); a space may add per-sample figures to the
results through an optional ``report(model, x, x_adv, labels) -> list[dict]`` method.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmargin.adapters import ModelAdapter
from mmargin.distances import LpDistance
from mmargin.engine.decision import decision_search, hybrid_search
from mmargin.engine.finish import line_search, verify
from mmargin.engine.gradient import GradientConfig, gradient_search
from mmargin.engine.state import SearchState
from mmargin.exact.types import ExactMargin
from mmargin.goals import Goal, Untargeted, decide
from mmargin.results import SampleResult, Status, result_record
from mmargin.spaces import ContinuousSpace

ExactFn = Callable[[np.ndarray, int, "int | None", "float | None"], "ExactMargin | None"]
"""``exact(x, label, target, upper_bound)`` → an exact margin, or None when not applicable."""


@dataclass(frozen=True)
class SearchSpec:
    """How hard and how to search: the query budget is forward + backward passes per sample.

    The budget covers the clean pass, the search, the line search and the verification;
    ``exact`` is ``"auto"`` (use an exact method where a plugin has one), ``"never"`` or
    ``"only"`` (skip the search and report exact margins only).
    """

    budget: int = 1000
    batch_size: int = 128
    strategy: str = "auto"
    exact: str = "auto"
    line_search_steps: int = 12
    seed: int = 0
    gradient: GradientConfig = field(default_factory=GradientConfig)

    def search_passes(self) -> int:
        """Passes left for the search after the clean pass, line search and verification."""
        return max(self.budget - 2 - self.line_search_steps, 2)


SearchFn = Callable[
    [ModelAdapter, ContinuousSpace, LpDistance, Goal, Tensor, Tensor, "Tensor | None",
     SearchSpec, torch.Generator],
    SearchState,
]  # fmt: skip


def _gradient(
    model: ModelAdapter, space: ContinuousSpace, distance: LpDistance, goal: Goal, x: Tensor,
    labels: Tensor, targets: Tensor | None, spec: SearchSpec, generator: torch.Generator,
) -> SearchState:  # fmt: skip
    if not model.differentiable:
        raise ValueError("the gradient strategy needs a differentiable model adapter")
    steps = spec.search_passes() // 2
    return gradient_search(model, space, distance, goal, x, labels, targets, steps,
                           spec.gradient, generator)  # fmt: skip


STRATEGIES: dict[str, SearchFn] = {
    "gradient": _gradient, "decision": decision_search, "hybrid": hybrid_search,
}  # fmt: skip
"""Search strategies by name; ``auto`` picks ``gradient`` for differentiable models and
``decision`` (when installed) otherwise."""


@dataclass
class _Context:
    model: ModelAdapter
    space: ContinuousSpace
    distance: LpDistance
    goal: Goal
    spec: SearchSpec
    exact: ExactFn | None
    generator: torch.Generator

    def result(self, sample: str, label: int, status: Status, **fields: Any) -> SampleResult:
        return result_record(
            sample, label, status, modality=self.space.modality, space=self.space.name,
            distance=self.distance.name, **fields,
        )  # fmt: skip


def minimal_flip(
    model: ModelAdapter,
    space: ContinuousSpace,
    distance: LpDistance,
    x: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[str] | None = None,
    *,
    goal: Goal | None = None,
    spec: SearchSpec | None = None,
    exact: ExactFn | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SampleResult]:
    """The smallest verified flip for every sample of ``x`` (shape ``(N, ...)``).

    Raises :class:`~mmargin.errors.InvalidInputError` only when the batch as a whole cannot
    be used (wrong shape); per-sample problems become ``error`` results.
    """
    if getattr(space, "discrete", False):  # edits of discrete inputs: mmargin.engine.discrete
        from mmargin.engine.discrete import discrete_flip

        return discrete_flip(model, space, distance, x, labels, ids, goal=goal, spec=spec,
                             exact=exact, progress=progress)  # fmt: skip
    goal_: Goal = goal if goal is not None else Untargeted()
    spec = spec or SearchSpec()
    if spec.strategy != "auto" and spec.strategy not in (*STRATEGIES, "exact"):
        raise ValueError(f"strategy: expected auto, exact or one of {sorted(STRATEGIES)}, "
                         f"got {spec.strategy!r}")  # fmt: skip
    x = np.asarray(x)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    ids = [str(i) for i in (ids if ids is not None else range(len(labels)))]
    if len(labels) != x.shape[0] or len(ids) != x.shape[0]:
        raise ValueError(f"got {x.shape[0]} inputs, {len(labels)} labels and {len(ids)} ids")
    problems = space.check(x)
    ctx = _Context(model, space, distance, goal_, spec, exact,
                   torch.Generator().manual_seed(spec.seed))  # fmt: skip

    results: list[SampleResult | None] = [None] * len(ids)
    for i, problem in enumerate(problems):
        if problem is not None:
            results[i] = ctx.result(ids[i], int(labels[i]), Status.ERROR, message=problem)
    good = [i for i, p in enumerate(problems) if p is None]
    for start in range(0, len(good), spec.batch_size):
        chunk = good[start : start + spec.batch_size]
        found = _isolated(ctx, x[chunk], labels[chunk], [ids[i] for i in chunk])
        for i, result in zip(chunk, found, strict=True):
            results[i] = result
        if progress is not None:
            progress(len(chunk))
    if progress is not None and len(good) < len(ids):
        progress(len(ids) - len(good))
    return [r for r in results if r is not None]


def _isolated(
    ctx: _Context, x: np.ndarray, labels: np.ndarray, ids: list[str]
) -> list[SampleResult]:
    """Search a batch; if anything in it raises, search its halves apart (recursively), so
    one bad sample costs a few extra batches, not a retry of every sample on its own."""
    try:
        return _search_batch(ctx, x, labels, ids)
    except Exception as exc:  # noqa: BLE001 - the model is user code: any failure is per-sample
        if len(ids) == 1:
            message = f"{type(exc).__name__}: {exc}"
            return [ctx.result(ids[0], int(labels[0]), Status.ERROR, message=message)]
        half = len(ids) // 2
        return _isolated(ctx, x[:half], labels[:half], ids[:half]) + _isolated(
            ctx, x[half:], labels[half:], ids[half:]
        )


def choose_strategy(model: ModelAdapter, requested: str) -> str:
    """The strategy a run uses: the requested one, or the best installed for the model."""
    if requested != "auto":
        return requested
    if model.differentiable:
        return "gradient"
    if "decision" in STRATEGIES:
        return "decision"
    raise ValueError("the model has no gradients and no decision-based strategy is installed")


@dataclass
class _Batch:
    """Working arrays of one batch while it is searched."""

    x: Tensor
    labels: Tensor
    targets: Tensor | None
    queries: Tensor
    best: Tensor
    norms: Tensor
    lower: list[float | None]
    methods: list[str]


def _search_batch(
    ctx: _Context, x_np: np.ndarray, labels_np: np.ndarray, ids: list[str]
) -> list[SampleResult]:
    started = time.perf_counter()
    device = ctx.model.device
    x = torch.as_tensor(x_np, dtype=torch.float32, device=device)
    labels = torch.as_tensor(labels_np, dtype=torch.long, device=device)
    targets_for = getattr(ctx.goal, "targets_for", None)
    targets = targets_for(labels) if targets_for is not None else None
    with torch.no_grad():
        scores = ctx.model(x)
    if scores.dim() != 2 or scores.shape[0] != x.shape[0]:
        raise ValueError(f"model returned scores of shape {tuple(scores.shape)}, expected (B, K)")
    finite = torch.isfinite(scores).all(dim=1)
    pred = decide(ctx.goal, scores)
    correct = (pred == labels) & finite
    if targets is not None:
        correct &= targets != labels
    strategy = (
        "exact" if ctx.spec.exact == "only" else choose_strategy(ctx.model, ctx.spec.strategy)
    )
    batch = _Batch(
        x=x, labels=labels, targets=targets,
        queries=torch.ones(len(ids), dtype=torch.long, device=device),
        best=torch.zeros_like(x), norms=torch.full((len(ids),), math.inf, device=device),
        lower=[None] * len(ids), methods=[strategy] * len(ids),
    )  # fmt: skip
    sel = correct.nonzero().squeeze(1)
    if sel.numel() and strategy != "exact":
        _run_strategy(ctx, strategy, batch, sel)
    if ctx.exact is not None and ctx.spec.exact != "never":
        _apply_exact(ctx, batch, sel)

    # re-verify everything we are about to report, in one fresh pass
    x_adv = ctx.space.finalize(x, x + batch.best)
    checked = verify(ctx.model, ctx.goal, x_adv, labels, targets)
    batch.queries += 1
    report = getattr(ctx.space, "report", None)
    extras = report(ctx.model, x, x_adv, labels) if report is not None else [{}] * len(ids)
    seconds = (time.perf_counter() - started) / len(ids)
    x_norms = ctx.distance.norm(x)
    out = []
    for i, sample in enumerate(ids):
        common: dict[str, Any] = dict(queries=int(batch.queries[i]), seconds=seconds)
        label, p = int(labels_np[i]), int(pred[i])
        margin = float(batch.norms[i])
        if not bool(finite[i]):
            message = "model returned NaN/inf scores for this input"
            out.append(ctx.result(sample, label, Status.ERROR, message=message, **common))
        elif targets is not None and int(targets[i]) == label and p == label:
            message = "the target class equals the true label"
            out.append(ctx.result(sample, label, Status.ERROR, message=message, **common))
        elif not bool(correct[i]):
            out.append(ctx.result(
                sample, label, Status.MISCLASSIFIED, pred_label=p, adv_label=p, margin=0.0,
                lower_bound=0.0, verified=True, relative_margin=0.0,
                message="the model already misclassifies this input",
                adversarial=x_np[i], **common,
            ))  # fmt: skip
        elif not math.isfinite(margin) or not bool(checked.adversarial[i]):
            why = (f"no flip found within {ctx.spec.budget} passes" if not math.isfinite(margin)
                   else "a flip was found but failed re-verification")  # fmt: skip
            if batch.lower[i] == math.inf:  # an exact method proved that no flip exists
                why = f"no flip exists in this space (proven by {batch.methods[i]})"
            out.append(ctx.result(
                sample, label, Status.NOT_FLIPPED, pred_label=p, margin=math.inf,
                lower_bound=batch.lower[i], strategy=batch.methods[i], message=why, **common,
            ))  # fmt: skip
        else:
            x_norm = float(x_norms[i])
            out.append(ctx.result(
                sample, label, Status.FLIPPED, pred_label=p,
                adv_label=int(checked.adv_label[i]), margin=margin,
                lower_bound=batch.lower[i], verified=True, strategy=batch.methods[i],
                relative_margin=margin / x_norm if x_norm > 0 else None,
                extras=extras[i], adversarial=x_adv[i].detach().cpu().numpy(), **common,
            ))  # fmt: skip
    return out


def _run_strategy(ctx: _Context, strategy: str, batch: _Batch, sel: Tensor) -> None:
    """Search the selected samples, then shrink what was found by a line search."""
    targets = batch.targets[sel] if batch.targets is not None else None
    state = STRATEGIES[strategy](
        ctx.model, ctx.space, ctx.distance, ctx.goal, batch.x[sel], batch.labels[sel],
        targets, ctx.spec, ctx.generator,
    )  # fmt: skip
    batch.queries[sel] += state.queries
    found = torch.isfinite(state.best_norm)
    fsel = sel[found]
    if not fsel.numel():
        return
    delta, passes = line_search(
        ctx.model, ctx.space, ctx.goal, batch.x[fsel], state.best_delta[found],
        batch.labels[fsel], targets[found] if targets is not None else None,
        ctx.spec.line_search_steps,
    )  # fmt: skip
    batch.queries[fsel] += passes
    batch.best[fsel] = delta
    batch.norms[fsel] = ctx.distance.norm(delta)


NUDGES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
"""Relative outward steps tried when a solver's boundary point does not clear the flip
tolerance (solvers stop right at the boundary; the engine wants a reproducible flip)."""


def _nudge_until_adversarial(
    ctx: _Context, batch: _Batch, i: int, adv: Tensor
) -> tuple[Tensor, bool, int]:
    """Scale ``adv - x`` outward until the model verifies the flip; one pass per try."""
    x = batch.x[i : i + 1]
    targets = batch.targets[i : i + 1] if batch.targets is not None else None
    candidate = x
    for tries, step in enumerate(NUDGES, start=1):
        candidate = ctx.space.finalize(x, x + (adv - x) * (1 + step))
        if bool(verify(ctx.model, ctx.goal, candidate, batch.labels[i : i + 1], targets)
                .adversarial[0]):  # fmt: skip
            return candidate, True, tries
    return candidate, False, len(NUDGES)


def _apply_exact(ctx: _Context, batch: _Batch, sel: Tensor) -> None:
    """Ask the exact hook for each searched sample; keep its adversarial when it is smaller."""
    assert ctx.exact is not None
    x = batch.x
    for i in sel.tolist():
        upper = float(batch.norms[i]) if math.isfinite(float(batch.norms[i])) else None
        target = int(batch.targets[i]) if batch.targets is not None else None
        found = ctx.exact(x[i].detach().cpu().numpy(), int(batch.labels[i]), target, upper)
        if found is None:
            continue
        batch.lower[i] = float(found.lower)
        if found.adversarial is None:
            if found.lower == math.inf:
                batch.methods[i] = f"exact:{found.method}"
            continue
        adv = torch.as_tensor(found.adversarial, dtype=x.dtype, device=x.device).view_as(x[i])
        x_adv, ok, passes = _nudge_until_adversarial(ctx, batch, i, adv.unsqueeze(0))
        batch.queries[i] += passes
        size = float(ctx.distance.norm(x_adv - x[i : i + 1])[0])
        if ok and size <= float(batch.norms[i]):
            batch.best[i] = (x_adv - x[i : i + 1])[0]
            batch.norms[i] = size
            batch.methods[i] = f"exact:{found.method}"
        batch.lower[i] = min(float(found.lower), float(batch.norms[i]))
