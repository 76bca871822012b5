"""What happens after a continuous search: line search toward the clean input, the exact
hook (with its claims checked), then re-verification.

All are shared by every strategy so no plugin ever reports an unchecked flip.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmargin.engine.problem import Problem
from mmargin.engine.spec import NUDGES, ExactFn
from mmargin.engine.state import per_sample
from mmargin.goals import Goal
from mmargin.protocols import ModelAdapter

OVERCLAIM_RTOL = 1e-3
OVERCLAIM_ATOL = 1e-5
"""A lower bound above a verified flip by more than this (the tolerance of
:attr:`mmargin.results.SampleResult.exact`) is an over-claim, not solver round-off."""


@torch.no_grad()
def bisect_scale(
    model: ModelAdapter, goal: Goal, labels: Tensor, targets: Tensor | None,
    point: Callable[[Tensor], Tensor], steps: int, like: Tensor,
) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """Bisection on each sample's scale t ∈ [0, 1] of a flip toward the clean input, one
    forward pass a step: ``point(t)`` is the model's input at scales ``t`` (``(B,)``, dtype
    and device of ``like``). Returns the smallest scale a pass saw flip (1 where none did)
    and the scores there (those of the first pass where none did; ``None`` after 0 steps)."""
    lo = torch.zeros(like.shape[0], device=like.device, dtype=like.dtype)
    hi = torch.ones_like(lo)
    scores: Tensor | None = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        got = model(point(mid))
        adv = goal.is_adversarial(got, labels, targets)
        scores = got if scores is None else torch.where(adv.unsqueeze(1), got, scores)
        hi = torch.where(adv, mid, hi)
        lo = torch.where(adv, lo, mid)
    return hi, scores


PLAIN_SHARE = 1 / 3
"""The share of a line search's steps that bisect as usual before the boundary test
(:func:`line_search`): 4 of 12, scales 1/2 to 15/16. Testing the rung first (no usual
steps) measured the same on the tuning models (L2 and L∞, 250–1000 passes, 200 images: no
flip more than 0.05 % larger) and saves 4 more passes on a flip on the boundary; the usual
steps are kept against a flip region that the path from the clean input meets only away
from the flip itself, which plain bisection finds when one of these steps lands in it
(``tests/test_line_rung.py``)."""


@torch.no_grad()
def line_search(
    problem: Problem, delta: Tensor, steps: int, check: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Shrink each adversarial ``delta`` toward ``problem.x`` by bisection on its scale
    t ∈ [0, 1].

    ``x + delta`` should be adversarial; the returned perturbation ``t·delta`` (finalised by
    the space) still is, with the smallest t bisection found. Returns it, the forward
    passes each sample used and whether a pass saw it flip. With ``check``, a sample whose
    bisection never met a flip spends one more pass on the finalised ``x + delta`` itself
    (a search on a relaxation may hold a point that is no flip once finalised).

    The first :data:`PLAIN_SHARE` of the ``steps`` bisect as usual (scales 1/2, 3/4, …);
    where none of them flipped, the next pass tests the last rung a bisection of ``steps``
    passes could reach, ``t = 1 − 2^−steps``: a flip the search left on the boundary (most
    flips of a search that converged) does not flip there, and its line search ends,
    where bisection would have spent every step to end at t = 1 (the same result unless
    the flips along its path lie only between the usual steps' last scale and that rung).
    The others bisect between them with the steps left (to within ``2^−(steps−1)`` instead
    of ``2^−steps``: those flips shrink by under ``2^−steps/3``), so no sample spends more
    passes than it did with plain bisection.
    """
    x, space, model = problem.x, problem.space, problem.model
    batch = x.shape[0]

    def point(t: Tensor) -> Tensor:
        return space.finalize(x, x + delta * per_sample(t, delta))

    plain = int(steps * PLAIN_SHARE)
    hi, _ = bisect_scale(model, problem.goal, problem.labels, problem.targets, point, plain, x)
    passes = torch.full((batch,), plain, dtype=torch.long, device=x.device)
    if steps > plain:  # none flipped yet: is the flip on the boundary?
        lo = 1 - 2.0**-plain
        top = 1 - 2.0 ** -min(steps, 20)  # below 1 in single precision
        rest = hi == 1
        idx = rest.nonzero().squeeze(1)
        if idx.numel():  # one pass for those rows only (the counter counts rows)
            sub = problem.rows(idx)
            xr, dr = sub.x, delta[idx]
            held = sub.is_adversarial(model(space.finalize(xr, xr + dr * top)))
            passes[idx] += 1
            rest = torch.zeros_like(rest)
            rest[idx[held]] = True  # the flip held at the rung: bisect [lo, top] with the rest
            hi[idx[held]] = top
        go = (hi < 1) & ~rest  # a usual step flipped: the bisection goes on as before
        for rows, span in ((go, None), (rest, (lo, top))):
            idx = rows.nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            sub = problem.rows(idx)
            xg, dg = sub.x, delta[idx]
            a = torch.full_like(hi[idx], span[0]) if span else hi[idx] - 2.0**-plain
            b = torch.full_like(hi[idx], span[1]) if span else hi[idx]

            def inner(t: Tensor, xg: Tensor = xg, dg: Tensor = dg, a: Tensor = a,
                      b: Tensor = b) -> Tensor:  # fmt: skip
                return space.finalize(xg, xg + dg * per_sample(a + (b - a) * t, dg))

            more = steps - plain - (1 if span else 0)  # the rung took one
            got, _ = bisect_scale(model, sub.goal, sub.labels, sub.targets, inner, more, xg)
            hi[idx] = torch.where(got < 1, a + (b - a) * got, b)
            passes[idx] += more
    out = space.finalize(x, x + delta * per_sample(hi, delta))
    seen = hi < 1
    unseen = (~seen).nonzero().squeeze(1)
    if check and unseen.numel():
        seen[unseen] = problem.rows(unseen).is_adversarial(model(out[unseen]))
        passes[unseen] += 1
    return out - x, passes, seen


@dataclass(frozen=True)
class Verified:
    """Re-checked outcome per sample: is it adversarial, and which class it lands in."""

    adversarial: Tensor
    adv_label: Tensor
    scores: Tensor


@torch.no_grad()
def verify(
    model: ModelAdapter,
    goal: Goal,
    x_adv: Tensor,
    labels: Tensor,
    targets: Tensor | None,
) -> Verified:
    """A fresh forward pass on the final adversarial inputs, judged by the goal."""
    scores = model(x_adv)
    finite = torch.isfinite(scores).all(dim=1)
    adv = goal.is_adversarial(scores, labels, targets) & finite
    return Verified(adversarial=adv, adv_label=goal.decide(scores), scores=scores)


@dataclass
class ExactOutcome:
    """What the exact hook changed for one sample: a smaller verified adversarial (or not),
    the lower bound to report, the method label, the passes its nudges spent and a note
    when a claim was discarded."""

    delta: Tensor | None = None
    size: float = math.inf
    lower: float | None = None
    method: str | None = None
    passes: int = 0
    notes: list[str] = field(default_factory=list)
    bound_method: str | None = None


def apply_exact(
    exact: ExactFn, problem: Problem, upper: float, sample: str, left: int
) -> ExactOutcome:
    """Ask the exact hook about one sample (``problem`` holds one row: ``x`` is ``(1, ...)``)
    whose search found a flip of size ``upper`` (``inf``: none); use its adversarial when it
    verifies (nudged outward at most ``left`` times, one pass each) and is smaller.

    A lower bound above the flip we hold is an over-claim: it is discarded, with a warning
    naming the plugin, and the sample is not labelled exact.
    """
    x, label, target = problem.x, problem.labels, problem.targets
    out = ExactOutcome()
    found = exact(x[0].detach().cpu().numpy(), int(label[0]),
                  None if target is None else int(target[0]),
                  upper if math.isfinite(upper) else None)  # fmt: skip
    if found is None:
        return out
    plugin = found.plugin or "an exact-margin plugin"
    out.lower = float(found.lower)
    out.bound_method = found.method
    best = upper
    if found.adversarial is not None:
        adv = torch.as_tensor(found.adversarial, dtype=x.dtype, device=x.device).view_as(x)
        candidate, ok, out.passes = _nudge(problem, adv, left)
        size = float(problem.distance.norm(candidate - x)[0])
        if ok and size <= upper:
            out.delta, out.size, out.method = candidate - x, size, f"exact:{found.method}"
            best = size
        elif ok:
            best = min(best, size)
    elif found.lower == math.inf and not math.isfinite(upper):
        out.method = f"exact:{found.method}"
    if math.isfinite(best) and out.lower > best * (1 + OVERCLAIM_RTOL) + OVERCLAIM_ATOL:
        note = (f"{plugin} claimed a lower bound of {out.lower:.6g} for sample {sample!r}, "
                f"above a verified flip of size {best:.6g}; the bound was discarded")  # fmt: skip
        warnings.warn(note, RuntimeWarning, stacklevel=2)
        out.notes.append(note)
        out.lower = out.bound_method = None
    elif math.isfinite(best):
        out.lower = min(out.lower, best)
    return out


def _nudge(
    problem: Problem, adv: Tensor, left: int, steps: Sequence[float] = NUDGES
) -> tuple[Tensor, bool, int]:
    """Scale ``adv - x`` outward until the model verifies the flip; one pass per try, at
    most ``left`` tries."""
    x = candidate = problem.x
    tries = 0
    for step in steps[: max(left, 0)]:
        candidate = problem.space.finalize(x, x + (adv - x) * (1 + step))
        tries += 1
        checked = verify(problem.model, problem.goal, candidate, problem.labels, problem.targets)
        if bool(checked.adversarial[0]):
            return candidate, True, tries
    return candidate, False, tries
