"""The one driver every strategy runs under (in the spirit of Foolbox's attack base class).

It does once what every strategy needs: input checks, batching, the clean pass (samples
already misclassified get margin 0; NaN scores and a target equal to the label are
per-sample errors), the call to the strategy's search for the correctly classified
samples, the re-verification of every adversarial in a fresh pass judged by the goal, the
random-perturbation baseline (:mod:`mmargin.engine.baseline`), the per-sample report hook,
the result records and the isolation of failures — a model that raises on some samples
marks those samples ``error`` and the run goes on, while a mistake
that fails every sample of the first batch the same way (a shape or feature-count
mismatch, a normalisation of the wrong length, scores of the wrong shape, a target class
the model does not have) stops the run with :class:`~mmargin.errors.RunError`.

A strategy (:class:`Strategy`) only searches: it returns one :class:`Candidate` per
sample it was given. The model is wrapped once in a :class:`CountingAdapter`; every pass
of the driver's own steps is charged to the sample it belongs to, and no sample goes past
the budget.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from mmargin.engine import indicators, probe
from mmargin.engine.baseline import random_margins, with_random
from mmargin.engine.counting import BudgetExhausted, CountingAdapter
from mmargin.engine.problem import Problem
from mmargin.engine.spec import ReportFn, SearchSpec
from mmargin.engine.state import Streams
from mmargin.errors import RunError
from mmargin.goals import Goal
from mmargin.results import SampleResult, Status, result_record


@dataclass
class Candidate:
    """A strategy's answer for one sample, before the driver verifies it.

    ``adversarial`` is the proposed adversarial input (a tensor row shaped like one sample
    for continuous spaces, the edited input otherwise; ``None``: no flip), ``margin`` its
    size, ``lower`` a proven lower bound, ``queries`` the passes the search and its own
    finishing spent, ``scale`` the size of the clean input (relative margin), ``message``
    why there is no flip, ``error`` a failure of this sample alone, ``indicators`` the
    attack-failure indicators the search raised (:mod:`mmargin.engine.indicators`).
    """

    adversarial: Any = None
    margin: float = math.inf
    lower: float | None = None
    method: str = ""
    queries: int = 0
    scale: float | None = None
    message: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None
    indicators: list[str] = field(default_factory=list)
    bound_method: str | None = None


@dataclass
class Batch:
    """One batch after its clean pass: inputs, labels, targets, scores, each sample's
    random stream, and the number of classes the model scores."""

    ids: list[str]
    inputs: Any
    labels: Tensor
    targets: Tensor | None
    scores: Tensor
    streams: Streams
    classes: int


@dataclass
class Run:
    """What stays the same for a whole run: the counted model and the problem."""

    model: CountingAdapter
    space: Any
    distance: Any
    goal: Goal
    spec: SearchSpec
    report: ReportFn | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def problem(self, x: Tensor, labels: Tensor, targets: Tensor | None) -> Problem:
        """The problem a continuous search of the inputs ``x`` (with their ``labels`` and
        the goal's ``targets``) solves in this run."""
        return Problem(self.model, self.space, self.distance, self.goal, x, labels, targets)

    def record(self, sample: str, label: int, status: Status, **fields: Any) -> SampleResult:
        """A result record for this run's space and distance."""
        return result_record(
            sample, label, status, modality=self.space.modality, space=self.space.name,
            distance=self.distance.name, **fields,
        )  # fmt: skip


@dataclass(frozen=True)
class Units:
    """How a caller steers the driver unit by unit, so that runs can be resumed, sharded
    and streamed to disk without the engine doing any file I/O.

    A run is cut into numbered units: unit 0 holds the samples that cannot be searched
    (their error records), unit ``k >= 1`` is the ``k``-th batch of searchable samples. The
    cut depends only on the data and the batch size, never on which units run, so a unit's
    results are the same whether it runs alone, after a resume or on another worker.
    ``select(unit, ids)`` says whether to run a unit (``None``: all of them); ``sink(unit,
    results)`` receives each finished unit's records, in sample order; ``step(rows)`` is
    told the rows of every forward pass of the search (progress within a batch).
    """

    select: Callable[[int, list[str]], bool] | None = None
    sink: Callable[[int, list[SampleResult]], None] | None = None
    step: Callable[[int], None] | None = None

    def wants(self, unit: int, ids: list[str]) -> bool:
        """Whether unit ``unit`` (samples ``ids``) is to be run."""
        return bool(ids) and (self.select is None or self.select(unit, ids))

    def deliver(self, unit: int, results: list[SampleResult]) -> None:
        """Hand a finished unit to the sink, if any."""
        if self.sink is not None and results:
            self.sink(unit, results)


class Strategy(Protocol):
    """A search: given the correctly classified rows of a batch, one candidate each."""

    name: str

    def search(self, run: Run, batch: Batch, rows: list[int]) -> list[Candidate]:
        """Search the samples ``rows`` of ``batch`` (their clean pass is already charged)."""
        ...


@dataclass(frozen=True)
class Kind:
    """How a kind of space moves inputs: a batch of raw samples to a model input, a list
    of adversarials to a model input, and an adversarial to what a result stores."""

    prepare: Callable[[Any, torch.device], Any]
    stack: Callable[[list[Any]], Any]
    export: Callable[[Any], Any]


def _tensor_batch(x: Any, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device)


def _export_tensor(row: Any) -> np.ndarray:
    return row.detach().cpu().numpy() if isinstance(row, Tensor) else np.asarray(row)


CONTINUOUS = Kind(prepare=_tensor_batch, stack=torch.stack, export=_export_tensor)
DISCRETE = Kind(prepare=lambda x, _device: list(x), stack=list, export=lambda a: a)


class ScoresShapeError(ValueError):
    """The model returned scores that are not ``(B, K)`` for a batch of B inputs."""


_CONFIG_PATTERNS = re.compile(
    r"shape|size of tensor|must match|mat1 and mat2|features|dimension|expected input|"
    r"channels|classes|out of (range|bounds)|normali[sz]",
    re.IGNORECASE,
)


def configuration_mistake(exc: BaseException) -> bool:
    """Whether an exception looks like a mistake in the run's set-up rather than in one
    sample: wrong shapes or feature counts, a normalisation of the wrong length, classes
    the model does not have."""
    if isinstance(exc, ScoresShapeError):
        return True
    kinds = (RuntimeError, ValueError, IndexError, TypeError)
    return isinstance(exc, kinds) and bool(_CONFIG_PATTERNS.search(str(exc)))


def run_batches(
    run: Run, kind: Kind, strategy: Strategy, x: Any, labels: np.ndarray, ids: list[str],
    problems: Sequence[str | None], progress: Callable[[int], None] | None = None,
    units: Units | None = None,
) -> list[SampleResult]:  # fmt: skip
    """Search every sample (``problems[i]``: why sample i cannot be searched, or None), or
    the units ``units`` selects; returns the records of the samples run, in order."""
    units = units if units is not None else Units()
    if units.step is not None:
        run.model.counter.observer = units.step
    results: list[SampleResult | None] = [None] * len(ids)
    bad = [i for i, p in enumerate(problems) if p is not None]
    if units.wants(0, [ids[i] for i in bad]):
        for i in bad:
            results[i] = run.record(ids[i], int(labels[i]), Status.ERROR, message=problems[i])
        units.deliver(0, [r for r in results if r is not None])
    good = [i for i, p in enumerate(problems) if p is None]
    chunks = [good[s : s + run.spec.batch_size] for s in range(0, len(good), run.spec.batch_size)]
    wanted = [units.wants(u, [ids[i] for i in c]) for u, c in enumerate(chunks, start=1)]
    if wanted and not wanted[0] and any(wanted):
        _probe_on(run, kind, x, labels, ids, chunks[0])
    first = True
    for unit, chunk in enumerate(chunks, start=1):
        if not wanted[unit - 1]:
            continue
        failures: list[BaseException | None] = []
        found = _isolated(run, kind, strategy, [x[i] for i in chunk], labels[chunk],
                          [ids[i] for i in chunk], failures)  # fmt: skip
        if first:
            _stop_if_doomed(found, failures)
            first = False
        for i, result in zip(chunk, found, strict=True):
            results[i] = result
        units.deliver(unit, found)
        if progress is not None:
            progress(len(chunk))
    if progress is not None and any(results[i] is not None for i in bad):
        progress(len(bad))
    return [r for r in results if r is not None]


def _probe_on(run: Run, kind: Kind, x: Any, labels: np.ndarray, ids: list[str],
              chunk: list[int]) -> None:  # fmt: skip
    """Probe the run's first batch although it is not searched here (a resumed or sharded
    run), so that every unit is searched as in an uninterrupted run: the non-determinism
    probe belongs to the first batch, whose records already carry its passes. If the
    probe fails, the first batch searched here probes itself, as before."""
    try:
        picked = [x[i] for i in chunk]
        probe.probe(run, clean_pass(run, kind, picked, labels[chunk], [ids[i] for i in chunk]))
    except Exception:  # noqa: BLE001 - the model is user code; the search batch will tell
        return


def _stop_if_doomed(found: list[SampleResult], failures: list[BaseException | None]) -> None:
    """Raise :class:`RunError` when every sample of the first batch failed with the same
    configuration mistake."""
    if not failures or len(failures) != len(found) or any(f is None for f in failures):
        return
    messages = {f"{type(f).__name__}: {f}" for f in failures}
    if len(messages) == 1 and all(f is not None and configuration_mistake(f) for f in failures):
        raise RunError(f"every sample of the first batch failed the same way: {messages.pop()}")


def _isolated(
    run: Run, kind: Kind, strategy: Strategy, x: list[Any], labels: np.ndarray,
    ids: list[str], failures: list[BaseException | None],
) -> list[SampleResult]:  # fmt: skip
    """Search a batch; if anything in it raises, search its halves apart (recursively), so
    one bad sample costs a few extra batches, not a retry of every sample on its own.
    ``failures`` gets, per sample, the exception that made it an error (or None)."""
    try:
        out = search_batch(run, kind, strategy, x, labels, ids)
    except RunError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model is user code: any failure is per-sample
        if len(ids) == 1:
            failures.append(exc)
            message = f"{type(exc).__name__}: {exc}"
            return [run.record(ids[0], int(labels[0]), Status.ERROR, message=message)]
        half = len(ids) // 2
        return _isolated(run, kind, strategy, x[:half], labels[:half], ids[:half], failures) + (
            _isolated(run, kind, strategy, x[half:], labels[half:], ids[half:], failures)
        )
    failures.extend([None] * len(out))
    return out


def clean_pass(run: Run, kind: Kind, x: list[Any], labels_np: np.ndarray, ids: list[str]) -> Batch:
    """Score the clean inputs once (one pass per sample) and check the scores' shape and
    the goal's targets against the number of classes."""
    device = run.model.device
    inputs = kind.prepare(x, device)
    labels = torch.as_tensor(labels_np, dtype=torch.long, device=device)
    with torch.no_grad():
        scores = run.model(inputs)
    if scores.dim() != 2 or scores.shape[0] != len(ids):
        raise ScoresShapeError(
            f"model returned scores of shape {tuple(scores.shape)} for {len(ids)} inputs, "
            f"expected ({len(ids)}, number of classes)"
        )
    classes = int(scores.shape[1])
    targets = run.goal.targets_for(labels)
    if targets is not None and bool(((targets < 0) | (targets >= classes)).any()):
        bad = int(targets[(targets < 0) | (targets >= classes)][0])
        raise RunError(f"target class {bad} does not exist: the model scores {classes} classes")
    streams = Streams.for_samples(run.spec.seed, ids)
    return Batch(ids, inputs, labels, targets, scores, streams, classes)


def search_batch(
    run: Run, kind: Kind, strategy: Strategy, x: list[Any], labels_np: np.ndarray,
    ids: list[str],
) -> list[SampleResult]:  # fmt: skip
    """Clean pass, search, verification, report and records for one batch."""
    started = time.perf_counter()
    batch = clean_pass(run, kind, x, labels_np, ids)
    finite = torch.isfinite(batch.scores).all(dim=1)
    pred = run.goal.decide(batch.scores)
    correct = (pred == batch.labels) & finite
    if batch.targets is not None:
        correct &= batch.targets != batch.labels
    rows = correct.nonzero().squeeze(1).tolist()
    probed = probe.probe(run, batch)  # identical passes must agree (first batch only)
    view = probe.search_view(run, batch)
    found = dict(zip(rows, strategy.search(view, batch, rows) if rows else [], strict=True))
    probe.charge(run, found)
    queries = [1 + probed + (found[i].queries if i in found else 0) for i in range(len(ids))]
    probe.reject_zero(batch, found)

    # re-verify everything we are about to report, in fresh passes judged by the goal
    check = [i for i, c in found.items() if c.error is None and c.adversarial is not None
             and math.isfinite(c.margin)]  # fmt: skip
    for i in check:
        if queries[i] + 1 > run.spec.budget:
            raise RuntimeError(
                f"engine bug: sample {ids[i]!r} spent its budget before verification"
            )
    verdicts = probe.verify(run, kind, batch, found, check, queries)
    verified = {i: (v.ok, v.label) for i, v in verdicts.items()}
    searched = [i for i, c in found.items() if c.error is None]
    randoms = random_margins(run, batch, searched, queries)  # the random baseline
    extras = _reports(run, batch, found, verified, queries)
    seconds = (time.perf_counter() - started) / len(ids)
    out = []
    for i in range(len(ids)):
        record = _record(run, kind, batch, i, bool(finite[i]), int(pred[i]), found.get(i),
                         verified.get(i), queries[i], extras.get(i, {}), seconds)  # fmt: skip
        out.append(with_random(record, randoms.get(i)))
    return indicators.annotate(run, batch, found, verdicts, out)


def _reports(
    run: Run, batch: Batch, found: dict[int, Candidate], verified: dict[int, tuple[bool, int]],
    queries: list[int],
) -> dict[int, dict[str, Any]]:  # fmt: skip
    """The report hook's extras per verified flip, one sample at a time so that every pass
    it spends is charged to that sample, and refused past the sample's budget."""
    out: dict[int, dict[str, Any]] = {}
    if run.report is None:
        return out
    for i, (ok, _) in verified.items():
        if not ok:
            continue
        model = run.model.limited(run.spec.budget - queries[i])
        x, adv = _row(batch.inputs, i), _one(found[i].adversarial, batch.inputs)
        try:
            rows = run.report(model, x, adv, batch.labels[i : i + 1], run.goal)
            if rows:
                out[i] = dict(rows[0])
        except BudgetExhausted as exc:
            out[i] = {"report_skipped": f"the sample report needs more passes: {exc}"}
        except Exception as exc:  # noqa: BLE001 - reports are plugin code; the margin stands
            out[i] = {"report_error": f"{type(exc).__name__}: {exc}"}
        queries[i] += model.passes
    return out


def _row(inputs: Any, i: int) -> Any:
    return inputs[i : i + 1]


def _one(adversarial: Any, like: Any) -> Any:
    return adversarial.unsqueeze(0) if isinstance(like, Tensor) else [adversarial]


def _record(
    run: Run, kind: Kind, batch: Batch, i: int, finite: bool, pred: int,
    cand: Candidate | None, checked: tuple[bool, int] | None, queries: int,
    report: dict[str, Any], seconds: float,
) -> SampleResult:  # fmt: skip
    """The result record of sample ``i`` of a batch."""
    sample, label = batch.ids[i], int(batch.labels[i])
    common: dict[str, Any] = {"queries": queries, "seconds": seconds}
    if cand is not None and cand.seconds is not None:
        common["seconds"] = cand.seconds
    if not finite:
        message = "model returned NaN/inf scores for this input"
        return run.record(sample, label, Status.ERROR, message=message, **common)
    if batch.targets is not None and int(batch.targets[i]) == label:
        message = "the target class equals the true label"
        return run.record(sample, label, Status.ERROR, message=message, **common)
    if cand is None:
        return run.record(
            sample, label, Status.MISCLASSIFIED, pred_label=pred, adv_label=pred, margin=0.0,
            lower_bound=0.0, verified=True, relative_margin=0.0,
            message="the model already misclassifies this input",
            adversarial=kind.export(_row(batch.inputs, i)[0]), **common,
        )  # fmt: skip
    extras = {**cand.extras, **report}
    if cand.error is not None:
        return run.record(sample, label, Status.ERROR, pred_label=pred, message=cand.error,
                          extras=extras, **common)  # fmt: skip
    if checked is None or not checked[0]:
        why = cand.message or f"no flip found within {run.spec.budget} passes"
        if checked is not None:
            why = "a flip was found but failed re-verification"
        return run.record(
            sample, label, Status.NOT_FLIPPED, pred_label=pred, margin=math.inf,
            lower_bound=cand.lower, strategy=cand.method, message=why, extras=extras,
            bound_method=cand.bound_method if cand.lower is not None else None, **common,
        )  # fmt: skip
    scale = cand.scale
    lower = None if cand.lower is None else min(cand.lower, cand.margin)
    return run.record(
        sample, label, Status.FLIPPED, pred_label=pred, adv_label=checked[1],
        margin=cand.margin, lower_bound=lower, verified=True, strategy=cand.method,
        bound_method=cand.bound_method if lower is not None else None,
        relative_margin=cand.margin / scale if scale and math.isfinite(scale) else None,
        message=cand.message, extras=extras, adversarial=kind.export(cand.adversarial),
        **common,
    )  # fmt: skip
