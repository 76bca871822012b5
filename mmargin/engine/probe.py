"""Verification that means something for every model: a non-determinism probe before the
search, repeated verification for models that fail it, and no zero perturbation as a flip.

A model whose outputs change from one identical pass to the next (dropout that stays on,
random input transformations, a stochastic defence) makes a one-pass verification a coin
toss: a "flip" may be noise, even at a zero perturbation. So, before searching the run's
first batch, the driver scores it :data:`PROBE_REPEATS` more times (counted as passes of
those samples) and compares with the clean pass. If any score moved beyond round-off the
model is *non-deterministic* for the whole run: every flip is then re-checked on
``spec.flip_repeats`` passes and reported only if it holds on ``spec.flip_agree`` of them
(9 of 10 by default), with the share recorded as ``flip_rate``. The search itself then
runs on the mean of :data:`SMOOTH_PASSES` passes (expectation over the randomness, as
against randomised defences), so that it follows the model rather than its noise; a
continuous flip that
does not is pushed outward (:data:`GROWTH`) until it does, within the budget set aside for
that. An adversarial identical to the clean input of a correctly classified sample is never
a flip, whatever one pass says. A deterministic model's continuous flip that its one
verification pass rejects (a flip just past the goal's tolerance, in a batch whose float32
rounding differs from the search's) is pushed outward by tiny scales (:data:`EDGE_GROWTH`)
with the passes the sample has left.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from mmargin.engine.counting import CountingAdapter

if TYPE_CHECKING:
    from mmargin.engine.driver import Batch, Candidate, Kind, Run

PROBE_REPEATS = 2
"""Extra identical passes on the first batch (each sample of it is charged these)."""
SCORE_RTOL = 1e-4
SCORE_ATOL = 1e-5
"""Scores of identical passes that differ by more than this (relative to the score, plus
absolute) are a change, not float round-off (GPU reductions reorder sums)."""
GROWTH = (1.25, 1.5, 2.0, 3.0, 5.0)
"""Outward scales tried, in turn, for a continuous flip of a non-deterministic model that
did not hold on enough repeated passes; each costs ``flip_repeats`` passes."""
EDGE_GROWTH = (1 + 1e-5, 1 + 1e-4, 1 + 1e-3)
"""Outward scales tried, in turn and one pass each while the sample's budget allows, for a
continuous flip of a deterministic model that its verification pass rejected: a flip the
search left just past the goal's tolerance (the line search stops on it) can fall short of
it in another batch, whose float32 rounding differs (an MLP's GEMM: logits ~4 apart by
5.7e-6 between a batch of 99 and one row, against a tolerance of 1.7e-4 that the flip
cleared by 1.8e-6 alone and missed by 3.9e-6 in the batch)."""
SMOOTH_PASSES = 4
"""Passes averaged per score while searching a non-deterministic model."""
ZERO_MESSAGE = "a zero perturbation is never a flip (the model's outputs are not stable)"


@dataclass(frozen=True)
class Probe:
    """What the probe saw: whether identical passes agreed, the largest score change, and
    how many samples it watched (0: skipped, the budget had no room)."""

    deterministic: bool
    max_change: float
    samples: int


@dataclass
class Verdict:
    """The re-check of one sample's flip: whether it holds, the class it lands in and,
    for a non-deterministic model, the share of repeated passes on which it held."""

    ok: bool
    label: int
    rate: float | None = None
    repeats: int = 0


def probe(run: Run, batch: Batch) -> int:
    """On the run's first batch, score it :data:`PROBE_REPEATS` more times and record the
    :class:`Probe` in ``run.extra["probe"]``; returns the passes charged to each sample of
    this batch (0 once the run is probed, or when the budget has no room for it)."""
    if "probe" in run.extra:
        return 0
    if not probe_cost(run):  # no room beside the clean pass, a search pass, verification
        run.extra["probe"] = Probe(True, 0.0, 0)
        return 0
    change = torch.zeros(len(batch.ids), dtype=batch.scores.dtype, device=batch.scores.device)
    with torch.no_grad():
        for _ in range(PROBE_REPEATS):
            again = run.model(batch.inputs).to(batch.scores)
            change = torch.maximum(change, _changed(batch.scores, again))
    worst = float(change.max()) if change.numel() else 0.0
    run.extra["probe"] = Probe(worst <= 0.0, worst, len(batch.ids))
    return PROBE_REPEATS


def _changed(a: Tensor, b: Tensor) -> Tensor:
    """Per row, how far beyond round-off ``b`` moved from ``a`` (0: within; inf: a NaN
    appeared or vanished)."""
    both_nan = torch.isnan(a) & torch.isnan(b)
    diff = (a - b).abs() - (SCORE_ATOL + SCORE_RTOL * a.abs())
    diff = torch.where(both_nan, torch.zeros_like(diff), diff)
    diff = torch.nan_to_num(diff, nan=math.inf)
    return diff.clamp(min=0).amax(dim=1)


def deterministic(run: Run) -> bool:
    """Whether the probe found identical passes to agree (True before it ran)."""
    found = run.extra.get("probe")
    return not isinstance(found, Probe) or found.deterministic


def verify_cost(run: Run, batch: Batch) -> int:
    """Passes per sample that verification may spend: one for a deterministic model, else
    ``flip_repeats`` for each scale tried (:data:`GROWTH` for continuous inputs)."""
    if deterministic(run):
        return 1
    tries = 1 + (len(GROWTH) if _continuous(batch) else 0)
    return run.spec.flip_repeats * tries


def probe_cost(run: Run) -> int:
    """Passes per sample set aside for the probe: :data:`PROBE_REPEATS` unless the budget
    has no room for them."""
    return PROBE_REPEATS if run.spec.budget >= PROBE_REPEATS + 3 else 0


def search_view(run: Run, batch: Batch) -> Run:
    """The run as a strategy should see it: its budget less the probe's passes and the
    extra passes verification may need (a strategy plans for one verification pass). The
    probe's passes are set aside in every batch, although only the first spends them, so
    that no sample's search depends on the batch it is in.

    For a non-deterministic model the strategy searches the mean of :data:`SMOOTH_PASSES`
    passes (expectation over the model's randomness): each of its passes costs that many,
    so its budget is divided by it and :func:`charge` multiplies what it reports."""
    reserve = probe_cost(run) + verify_cost(run, batch) - 1
    if deterministic(run):
        if reserve <= 0:
            return run
        spec = dataclasses.replace(run.spec, budget=max(run.spec.budget - reserve, 1))
        return dataclasses.replace(run, spec=spec)
    left = run.spec.budget - 1 - probe_cost(run) - verify_cost(run, batch)
    budget = max(left // SMOOTH_PASSES + 2, 1)
    spec = dataclasses.replace(run.spec, budget=budget)
    return dataclasses.replace(run, spec=spec, model=Averaged(run.model, SMOOTH_PASSES))


def charge(run: Run, found: dict[int, Candidate]) -> None:
    """Turn the passes a strategy reported on the averaged model into model passes."""
    if not deterministic(run):
        for cand in found.values():
            cand.queries *= SMOOTH_PASSES


class Averaged(CountingAdapter):
    """A counted model whose scores are the mean of ``passes`` passes on each input; it
    shares the counter of the adapter it is built from, which counts every pass."""

    def __init__(self, counted: CountingAdapter, passes: int) -> None:
        super().__init__(counted.model, counted.counter)
        self.passes_each = passes

    def __call__(self, x: Any) -> Tensor:
        k = self.passes_each
        if isinstance(x, Tensor):
            rows = int(x.shape[0])
            scores = super().__call__(x.repeat(k, *([1] * (x.dim() - 1))))
        else:
            rows = len(x)
            scores = super().__call__(list(x) * k)
        out: Tensor = scores.view(k, rows, -1).mean(dim=0)
        return out


def reject_zero(batch: Batch, found: dict[int, Candidate]) -> None:
    """Turn every proposed adversarial identical to its clean input into "no flip", with
    :data:`ZERO_MESSAGE` and the ``unstable_predictions`` indicator."""
    for i, cand in found.items():
        if cand.error is None and cand.adversarial is not None:
            clean = batch.inputs[i]
            if _identical(cand.adversarial, clean):
                cand.adversarial, cand.margin, cand.message = None, math.inf, ZERO_MESSAGE
                cand.indicators = sorted({*cand.indicators, "unstable_predictions"})


def _identical(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b.to(a)))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an input type without a plain equality
        return False


def verify(
    run: Run, kind: Kind, batch: Batch, found: dict[int, Candidate], check: list[int],
    queries: list[int],
) -> dict[int, Verdict]:  # fmt: skip
    """Re-check the flips of the samples ``check`` in fresh passes judged by the goal, adding
    the passes to ``queries``: one pass for a deterministic model, repeated passes (and
    outward scales for continuous inputs) otherwise."""
    if not check:
        return {}
    if deterministic(run):
        ok, label = _judge(run, kind, batch, found, check, 1)
        for i in check:
            queries[i] += 1
        done = {i: Verdict(bool(ok[j, 0]), int(label[j])) for j, i in enumerate(check)}
        if _continuous(batch):
            _push_out(run, kind, batch, found, done, queries, EDGE_GROWTH, 1, 1, rated=False)
        return done
    repeats, agree = run.spec.flip_repeats, run.spec.flip_agree
    out: dict[int, Verdict] = {}
    pending = [i for i in check if queries[i] + repeats <= run.spec.budget]
    for i in check:
        if i not in pending:
            out[i] = Verdict(False, -1, None, 0)
    if pending:
        ok, label = _judge(run, kind, batch, found, pending, repeats)
        for j, i in enumerate(pending):
            queries[i] += repeats
            count = int(ok[j].sum())
            out[i] = Verdict(count >= agree, int(label[j]), count / repeats, repeats)
        if _continuous(batch):
            _push_out(run, kind, batch, found, out, queries, GROWTH, repeats, agree, rated=True)
    return out


def _push_out(
    run: Run, kind: Kind, batch: Batch, found: dict[int, Candidate], out: dict[int, Verdict],
    queries: list[int], scales: tuple[float, ...], repeats: int, agree: int, rated: bool,
) -> None:  # fmt: skip
    """The rejected continuous flips of ``out`` pushed outward by ``scales`` in turn,
    ``repeats`` passes a scale while each sample's budget allows: the first scale whose
    flip holds on ``agree`` of them replaces the candidate (its margin with it) and its
    verdict (with the share of passes it held on where ``rated``); a sample no scale
    helps keeps its verdict. :data:`GROWTH` for a non-deterministic model,
    :data:`EDGE_GROWTH` for a deterministic one."""
    pending = [i for i, v in out.items() if not v.ok]
    for scale in scales:
        pending = [i for i in pending if queries[i] + repeats <= run.spec.budget]
        if not pending:
            return
        trial = {i: _grown(run, batch, found[i], i, scale) for i in pending}
        ok, label = _judge(run, kind, batch, trial, pending, repeats)
        for j, i in enumerate(pending):
            queries[i] += repeats
            count = int(ok[j].sum())
            if count >= agree:
                rate = (count / repeats, repeats) if rated else (None, 0)
                out[i] = Verdict(True, int(label[j]), *rate)
                found[i].adversarial = trial[i].adversarial
                found[i].margin = trial[i].margin
        pending = [i for i in pending if not out[i].ok]


def _judge(
    run: Run, kind: Kind, batch: Batch, found: dict[int, Candidate], rows: list[int],
    repeats: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``repeats`` passes on each adversarial of ``rows``: whether each pass flips
    ``(R, repeats)`` and the class most passes land in."""
    items = [found[i].adversarial for i in rows for _ in range(repeats)]
    with torch.no_grad():
        scores = run.model(kind.stack(items))
    sub = torch.as_tensor(rows, device=batch.labels.device).repeat_interleave(repeats)
    targets = batch.targets[sub] if batch.targets is not None else None
    ok = run.goal.is_adversarial(scores, batch.labels[sub], targets)
    ok = (ok & torch.isfinite(scores).all(dim=1)).view(len(rows), repeats)
    decided = run.goal.decide(scores).view(len(rows), repeats)
    label = torch.mode(decided, dim=1).values
    return ok, label


def _grown(run: Run, batch: Batch, cand: Candidate, i: int, scale: float) -> Candidate:
    """The candidate pushed outward: ``x + scale·(adv − x)``, finalised by the space."""
    x = batch.inputs[i : i + 1]
    adv = run.space.finalize(x, x + (cand.adversarial.unsqueeze(0) - x) * scale)
    margin = float(run.distance.norm(adv - x)[0])
    return dataclasses.replace(cand, adversarial=adv[0], margin=margin)


def _continuous(batch: Batch) -> bool:
    """Whether the batch holds continuous inputs (a tensor; discrete ones are a list)."""
    return isinstance(batch.inputs, Tensor)
