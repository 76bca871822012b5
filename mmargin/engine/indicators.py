"""Attack-failure indicators per sample, after Pintor et al. (NeurIPS 2022, "Indicators of
Attack Failure") and AutoAttack's checks: signs that a margin may be too large because the
search failed, not because the model is robust.

They cost no extra pass: each is read from what the run already computed — the clean
scores, the non-determinism probe (:mod:`mmargin.engine.probe`, 2 passes on the first
batch), the search's own trace (:attr:`~mmargin.engine.state.SearchState.flags`) and the
re-verification.

=========================  ===============================================================
``silent_success``         the search proposed a flip that the re-verification rejected
                           (an adversarial was on the path but is not what is reported)
``incomplete_optimisation`` the best norm (or, without a flip, the loss) still fell by more
                           than 1% over the last tenth of the gradient search's steps
``zero_gradients``         the input gradient was zero, NaN, unavailable or vanishing at the
                           start of the gradient search; the sample was searched with decisions
                           instead (``decision_fallback``)
``decision_fallback``      that fallback happened (the result says so in its message)
``unstable_predictions``   identical passes gave different scores (the model is not
                           deterministic) or called the clean input itself adversarial
``unconstrained_failure``  no flip was found, although the search has no norm limit (and
                           nothing proved that no flip exists)
``probability_outputs``    the scores of a differentiable model look like probabilities
                           (in [0, 1], summing to 1): margin losses on them saturate
=========================  ===============================================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mmargin.engine.probe import Verdict, deterministic
from mmargin.results import SampleResult, Status

if TYPE_CHECKING:
    from mmargin.engine.driver import Batch, Candidate, Run

NAMES = ("silent_success", "incomplete_optimisation", "zero_gradients", "decision_fallback",
         "unstable_predictions", "unconstrained_failure", "probability_outputs")  # fmt: skip
"""Every indicator the engine raises."""
PROBABILITY_ATOL = 1e-4
"""How far a score row may stray from [0, 1] and its sum from 1 and still look like
probabilities."""


def looks_like_probabilities(scores: Tensor) -> Tensor:
    """Per row of ``(B, K)`` scores (K ≥ 2): all in [0, 1] and summing to 1."""
    if scores.dim() != 2 or scores.shape[1] < 2:
        return torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    inside = ((scores >= -PROBABILITY_ATOL) & (scores <= 1 + PROBABILITY_ATOL)).all(dim=1)
    return inside & ((scores.sum(dim=1) - 1).abs() <= PROBABILITY_ATOL * scores.shape[1])


def raised(
    run: Run, batch: Batch, i: int, cand: Candidate, verdict: Verdict | None,
    result: SampleResult, probabilities: bool,
) -> list[str]:  # fmt: skip
    """The indicators of sample ``i`` of a batch, given its candidate, re-check and record."""
    names = set(cand.indicators)
    if not deterministic(run):
        names.add("unstable_predictions")
    if probabilities and run.model.differentiable:
        names.add("probability_outputs")
    proposed = cand.error is None and cand.adversarial is not None and math.isfinite(cand.margin)
    if proposed and verdict is not None and not verdict.ok:
        names.add("silent_success")
    if result.status is Status.NOT_FLIPPED and result.lower_bound != math.inf:
        names.add("unconstrained_failure")
    return sorted(names)


def annotate(
    run: Run, batch: Batch, found: Mapping[int, Candidate], verdicts: Mapping[int, Verdict],
    results: list[SampleResult],
) -> list[SampleResult]:  # fmt: skip
    """The batch's records with their indicators and flip rates (and, for a flip that did
    not hold on enough repeated passes, a message that says so)."""
    probabilities = looks_like_probabilities(batch.scores.detach())
    out = []
    for i, result in enumerate(results):
        cand = found.get(i)
        if cand is None or result.status is Status.ERROR:
            out.append(result)
            continue
        verdict = verdicts.get(i)
        changes: dict[str, object] = {
            "indicators": raised(run, batch, i, cand, verdict, result, bool(probabilities[i]))
        }
        if verdict is not None and verdict.rate is not None:
            changes["flip_rate"] = verdict.rate
            if not verdict.ok:
                changes["message"] = (
                    f"a flip was found but held on only {verdict.rate:.0%} of "
                    f"{verdict.repeats} repeated passes (the model is not deterministic; "
                    f"{run.spec.flip_agree} needed)"
                )
        elif verdict is not None and not verdict.ok and not deterministic(run):
            changes["message"] = "a flip was found but no passes were left to re-check it"
        out.append(dataclasses.replace(result, **changes))  # type: ignore[arg-type]
    return out


def summary_line(counts: Mapping[str, int], samples: int) -> str | None:
    """One warning line for the CLI summary (None when nothing was raised)."""
    if not counts:
        return None
    parts = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    return (f"warning: attack-failure indicators on {samples} samples: {parts} "
            "(per sample: 'indicators' in results.jsonl)")  # fmt: skip
