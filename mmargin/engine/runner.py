"""The engine's front door: search a dataset batch by batch and return verified results.

It owns everything that is the same for every modality: input checks, the clean pass
(samples already misclassified get margin 0), batching and device placement, the query
budget, the choice of strategy, exact margins where a plugin has them, the line search,
re-verification of every adversarial, and isolation of failures — a model that raises or
returns NaN on some samples marks those samples ``error`` and the run goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mmargin.adapters import ModelAdapter
from mmargin.distances import LpDistance
from mmargin.engine.finish import line_search, verify
from mmargin.engine.gradient import GradientConfig, gradient_search
from mmargin.exact.types import ExactMargin
from mmargin.goals import Goal, Targeted, Untargeted
from mmargin.results import SampleResult, Status
from mmargin.spaces import ContinuousSpace

ExactFn = Callable[[np.ndarray, int, "int | None", "float | None"], "ExactMargin | None"]
"""``exact(x, label, target, upper_bound)`` → an exact margin, or None when not applicable."""

STRATEGIES = ("auto", "gradient", "exact")


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

    def search_steps(self) -> int:
        """Gradient steps (one forward + one backward each) the budget leaves room for."""
        return max((self.budget - 2 - self.line_search_steps) // 2, 1)


@dataclass
class _Context:
    model: ModelAdapter
    space: ContinuousSpace
    distance: LpDistance
    goal: Goal
    spec: SearchSpec
    exact: ExactFn | None
    generator: torch.Generator


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
    goal = goal or Untargeted()
    spec = spec or SearchSpec()
    if spec.strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {spec.strategy!r}")
    x = np.asarray(x)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    ids = [str(i) for i in (ids if ids is not None else range(len(labels)))]
    if len(labels) != x.shape[0] or len(ids) != x.shape[0]:
        raise ValueError(f"got {x.shape[0]} inputs, {len(labels)} labels and {len(ids)} ids")
    problems = space.check(x)
    generator = torch.Generator().manual_seed(spec.seed)
    ctx = _Context(model, space, distance, goal, spec, exact, generator)

    results: list[SampleResult | None] = [None] * len(ids)
    for i, problem in enumerate(problems):
        if problem is not None:
            results[i] = _error(ctx, ids[i], int(labels[i]), problem)
    good = [i for i, p in enumerate(problems) if p is None]
    for start in range(0, len(good), spec.batch_size):
        chunk = good[start : start + spec.batch_size]
        for i, result in zip(chunk, _isolated(ctx, x[chunk], labels[chunk], [ids[i] for i in chunk])):
            results[i] = result
        if progress is not None:
            progress(len(chunk))
    if progress is not None and len(good) < len(ids):
        progress(len(ids) - len(good))
    return [r for r in results if r is not None]


def _isolated(
    ctx: _Context, x: np.ndarray, labels: np.ndarray, ids: list[str]
) -> list[SampleResult]:
    """Search a batch; if anything in it raises, retry sample by sample to isolate the cause."""
    try:
        return _search_batch(ctx, x, labels, ids)
    except Exception as exc:  # noqa: BLE001 - the model is user code: any failure is per-sample
        if len(ids) == 1:
            return [_error(ctx, ids[0], int(labels[0]), f"{type(exc).__name__}: {exc}")]
        out: list[SampleResult] = []
        for i in range(len(ids)):
            out.extend(_isolated(ctx, x[i : i + 1], labels[i : i + 1], ids[i : i + 1]))
        return out


def _error(ctx: _Context, sample: str, label: int, message: str) -> SampleResult:
    return SampleResult(
        sample=sample, modality=ctx.space.modality, space=ctx.space.name,
        distance=ctx.distance.name, label=label, pred_label=None, adv_label=None,
        margin=math.nan, lower_bound=None, verified=False, queries=0, seconds=0.0,
        status=Status.ERROR, strategy="none", message=message,
    )  # fmt: skip


def _targets(goal: Goal, labels: Tensor) -> Tensor | None:
    return goal.targets_for(labels) if isinstance(goal, Targeted) else None


def _search_batch(
    ctx: _Context, x_np: np.ndarray, labels_np: np.ndarray, ids: list[str]
) -> list[SampleResult]:
    started = time.perf_counter()
    device = ctx.model.device
    x = torch.as_tensor(x_np, dtype=torch.float32, device=device)
    labels = torch.as_tensor(labels_np, dtype=torch.long, device=device)
    targets = _targets(ctx.goal, labels)
    with torch.no_grad():
        scores = ctx.model(x)
    if scores.dim() != 2 or scores.shape[0] != x.shape[0]:
        raise ValueError(f"model returned scores of shape {tuple(scores.shape)}, expected (B, K)")
    finite = torch.isfinite(scores).all(dim=1)
    pred = scores.argmax(dim=1)
    correct = (pred == labels) & finite
    if targets is not None:
        correct &= targets != labels
    queries = torch.ones(len(ids), dtype=torch.long, device=device)

    sel = correct.nonzero().squeeze(1)
    best = torch.zeros_like(x)
    norms = torch.full((len(ids),), math.inf, device=device)
    strategy = "gradient"
    if sel.numel() and ctx.spec.exact != "only":
        strategy = _choose(ctx)
        tsel = targets[sel] if targets is not None else None
        state = gradient_search(
            ctx.model, ctx.space, ctx.distance, ctx.goal, x[sel], labels[sel], tsel,
            ctx.spec.search_steps(), ctx.spec.gradient, ctx.generator,
        )  # fmt: skip
        queries[sel] += state.queries
        found = torch.isfinite(state.best_norm)
        fsel = sel[found]
        if fsel.numel():
            tf = targets[fsel] if targets is not None else None
            delta, passes = line_search(
                ctx.model, ctx.space, ctx.goal, x[fsel], state.best_delta[found],
                labels[fsel], tf, ctx.spec.line_search_steps,
            )  # fmt: skip
            queries[fsel] += passes
            best[fsel] = delta
            norms[fsel] = ctx.distance.norm(delta)

    lower: list[float | None] = [None] * len(ids)
    methods = [strategy] * len(ids)
    if ctx.exact is not None and ctx.spec.exact != "never":
        _apply_exact(ctx, x, labels_np, targets, sel, best, norms, lower, methods)

    # re-verify everything we are about to report, in one fresh pass
    x_adv = ctx.space.finalize(x, x + best)
    checked = verify(ctx.model, ctx.goal, x_adv, labels, targets)
    queries += 1
    seconds = (time.perf_counter() - started) / len(ids)
    x_norms = ctx.distance.norm(x)
    out = []
    for i in range(len(ids)):
        out.append(
            _result(ctx, ids[i], int(labels_np[i]), i, bool(finite[i]), int(pred[i]),
                    bool(correct[i]), bool(torch.isfinite(norms[i])), checked, x_adv, x,
                    float(norms[i]), float(x_norms[i]), lower[i], int(queries[i]), seconds,
                    methods[i])
        )  # fmt: skip
    return out


def _choose(ctx: _Context) -> str:
    """The strategy for this model and space (only the gradient one exists for now)."""
    if ctx.spec.strategy in ("auto", "gradient"):
        if not ctx.model.differentiable:
            raise ValueError(
                "the model has no gradients and no decision-based strategy is installed; "
                "use a differentiable adapter"
            )
        return "gradient"
    return ctx.spec.strategy


def _apply_exact(
    ctx: _Context,
    x: Tensor,
    labels: np.ndarray,
    targets: Tensor | None,
    sel: Tensor,
    best: Tensor,
    norms: Tensor,
    lower: list[float | None],
    methods: list[str],
) -> None:
    """Ask the exact hook for each searched sample; keep its adversarial when it is smaller."""
    assert ctx.exact is not None
    for i in sel.tolist():
        upper = float(norms[i]) if math.isfinite(float(norms[i])) else None
        target = int(targets[i]) if targets is not None else None
        found = ctx.exact(x[i].detach().cpu().numpy(), int(labels[i]), target, upper)
        if found is None:
            continue
        lower[i] = float(found.lower)
        if found.adversarial is None:
            continue
        adv = torch.as_tensor(found.adversarial, dtype=x.dtype, device=x.device).view_as(x[i])
        delta = ctx.space.finalize(x[i : i + 1], adv.unsqueeze(0)) - x[i : i + 1]
        ok = verify(ctx.model, ctx.goal, x[i : i + 1] + delta, torch.as_tensor(labels[i : i + 1]).to(x.device),
                    targets[i : i + 1] if targets is not None else None)  # fmt: skip
        size = float(ctx.distance.norm(delta)[0])
        if bool(ok.adversarial[0]) and size <= float(norms[i]):
            best[i] = delta[0]
            norms[i] = size
            methods[i] = f"exact:{found.method}"
        if found.optimal and lower[i] is not None:
            lower[i] = min(float(lower[i]), float(norms[i]))  # type: ignore[arg-type]


def _result(
    ctx: _Context, sample: str, label: int, i: int, finite: bool, pred: int, correct: bool,
    found: bool, checked: object, x_adv: Tensor, x: Tensor, margin: float, x_norm: float,
    lower: float | None, queries: int, seconds: float, strategy: str,
) -> SampleResult:  # fmt: skip
    from mmargin.engine.finish import Verified

    assert isinstance(checked, Verified)
    common = dict(
        sample=sample, modality=ctx.space.modality, space=ctx.space.name,
        distance=ctx.distance.name, label=label, queries=queries, seconds=seconds,
    )  # fmt: skip
    if not finite:
        return _error(ctx, sample, label, "model returned NaN/inf scores for this input")
    if not correct:
        status, note = Status.MISCLASSIFIED, "the model already misclassifies this input"
        if isinstance(ctx.goal, Targeted) and label == ctx.goal.target and pred == label:
            status, note = Status.ERROR, "the target class equals the true label"
            return _error(ctx, sample, label, note)
        return SampleResult(
            **common, pred_label=pred, adv_label=pred, margin=0.0, lower_bound=0.0,
            verified=True, status=status, strategy="none", relative_margin=0.0, message=note,
            adversarial=x[i].detach().cpu().numpy(),
        )  # type: ignore[arg-type]  # fmt: skip
    if not found:
        return SampleResult(
            **common, pred_label=pred, adv_label=None, margin=math.inf, lower_bound=None,
            verified=False, status=Status.NOT_FLIPPED, strategy=strategy,
            message=f"no flip found within {ctx.spec.budget} passes",
        )  # type: ignore[arg-type]  # fmt: skip
    ok = bool(checked.adversarial[i])  # type: ignore[attr-defined]
    if not ok:
        return SampleResult(
            **common, pred_label=pred, adv_label=None, margin=math.inf, lower_bound=None,
            verified=False, status=Status.NOT_FLIPPED, strategy=strategy,
            message="a flip was found but failed re-verification",
        )  # type: ignore[arg-type]  # fmt: skip
    return SampleResult(
        **common, pred_label=pred, adv_label=int(checked.adv_label[i]),  # type: ignore[attr-defined]
        margin=margin, lower_bound=lower, verified=True, status=Status.FLIPPED,
        strategy=strategy, relative_margin=margin / x_norm if x_norm > 0 else None,
        adversarial=x_adv[i].detach().cpu().numpy(),
    )  # type: ignore[arg-type]  # fmt: skip
