"""The L0 finishing stage as it was written before its bookkeeping was batched (dbc24fb): each
sample's search a coroutine of its own that asks for one model pass at a time, every round
the asks answered by one batched forward pass and one batched forward + backward pass.

A reference for :func:`mmargin.engine.sparse.sparse_finish` (tests/test_engine_sparse.py):
the batched stage must make the same model calls, on the same rows, with the same inputs,
and return the same flips and passes. The arithmetic between passes is the stage's own
(imported), only the per-sample control flow is this copy's."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import torch
from torch import Tensor

from mmargin.engine.problem import Problem
from mmargin.engine.sparse import PATIENCE
from mmargin.engine.sparse_ops import (
    FAR,
    descent_steps,
    forward_pass,
    gradient_pass,
    positions,
    shares,
    support_size,
    within,
)
from mmargin.protocols import Distance, Space

FLIP, GRADIENT, DESCEND = "flip", "gradient", "descend"
"""What a sample's search asks for: a forward pass on a candidate (1 pass), the loss
gradient at a point (2 passes), or a step of a descent from a local minimum (the gradient
at a point, 2 passes, and the step's next point, which :func:`sparse_finish` computes for
every descending sample of the round at once: :func:`descent_steps`)."""


@dataclass
class _Walk:
    """A descent's state between its steps: the positions it keeps and whether it has
    taken none yet (its running sum of scaled gradients is the caller's: a row of one
    tensor for the batch, zeroed at the walk's first step)."""

    k: int
    fresh: bool = True


Ask = tuple[str, Tensor, "Tensor | _Walk | None"]
"""One request of a sample's search: its kind, the perturbation ``(1, ...)`` it is about
and, for :data:`FLIP`, the flat positions of it to keep (a boolean ``(positions,)``;
``None``: all; the caller builds every candidate of a round at once), for
:data:`DESCEND` the descent's state."""
Answer = tuple[Tensor, bool, int]
"""The reply: the finalised candidate (:data:`FLIP`), the gradient (:data:`GRADIENT`) or
the descent's next point (:data:`DESCEND`), whether the model saw the flip at the asked
point and how many positions it changes."""
Replies = tuple[Tensor, list[bool], list[int]]
"""A batched pass's replies: the values ``(B, ...)``, per row whether it flipped and how many
positions it changes."""
Shrink = Generator[Ask, Answer, Tensor]
"""A sample's search: yields asks, receives answers, returns its best flip."""


@dataclass
class _Sample:
    """One sample's stage: its input ``(1, ...)`` and the passes it has left."""

    x: Tensor
    left: int


def sparse_finish(
    problem: Problem, delta: Tensor, passes: Tensor, alternates: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Shrink the support of each verified adversarial ``problem.x + delta`` within
    ``passes[i]`` forward + backward passes for sample ``i``; with ``alternates`` (a
    second, unverified flip per sample, zero where none), the passes the first shrink
    leaves shrink that one too (:func:`_both`). Returns the new perturbations (finalised,
    each a flip a pass has seen, or the input one) and the passes each sample used."""
    x, space, distance = problem.x, problem.space, problem.distance
    out = delta.clone()
    samples = [_Sample(x[i : i + 1], int(passes[i])) for i in range(x.shape[0])]
    runs = {
        i: _both(space, distance, s, delta[i : i + 1],
                 None if alternates is None else alternates[i : i + 1])
        for i, s in enumerate(samples)
    }  # fmt: skip
    asks: dict[int, Ask] = {}
    for i in list(runs):
        _advance(runs, asks, out, i, None)
    sums = torch.zeros_like(x)  # each sample's descent: its running sum (:class:`_Walk`)
    while asks:
        answers: dict[int, Answer] = {}
        # a descent step is a gradient ask: one batched forward + backward for both
        for gradient in (False, True):
            rows = [i for i, (k, _, _) in asks.items() if (k != FLIP) == gradient]
            if not rows:
                continue
            sel = torch.as_tensor(rows, dtype=torch.long, device=x.device)
            d = torch.cat([asks[i][1] for i in rows])
            if not gradient:  # a candidate asked as a point and its positions to keep
                d = _kept(distance, d, [asks[i][2] for i in rows])
            answer = gradient_pass if gradient else forward_pass
            values, flips, sizes = answer(problem.rows(sel), d)
            walking = [j for j, i in enumerate(rows) if asks[i][0] == DESCEND]
            if walking:  # their answer is the next point: the steps at once
                nxt = _descend_all(space, distance, x, sums, rows, walking, asks, values, d)
                if len(walking) == len(rows):
                    values = nxt
                else:  # ``values`` is this pass's own gradient tensor
                    values[torch.as_tensor(walking, dtype=torch.long, device=x.device)] = nxt
            for j, i in enumerate(rows):
                answers[i] = (values[j : j + 1], flips[j], sizes[j])
        for i, reply in answers.items():
            samples[i].left -= 1 if asks[i][0] == FLIP else 2
            _advance(runs, asks, out, i, reply)
    used = [int(passes[i]) - s.left for i, s in enumerate(samples)]
    return out, torch.as_tensor(used, dtype=torch.long, device=x.device)


def _ranks(order: Tensor) -> Tensor:
    """Each flat position's place in ``order`` (the inverse permutation)."""
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank


def _advance(
    runs: dict[int, Shrink], asks: dict[int, Ask], out: Tensor, i: int, reply: Answer | None
) -> None:
    """Hand sample ``i``'s search its answer and note its next ask, or its result when done."""
    try:
        asks[i] = next(runs[i]) if reply is None else runs[i].send(reply)
    except StopIteration as done:
        out[i : i + 1] = done.value
        asks.pop(i, None)
        del runs[i]


def _kept(distance: Distance, d: Tensor, keep: list[Tensor | _Walk | None]) -> Tensor:
    """The candidates of a round's forward pass: row ``j`` of ``d`` on the flat positions
    ``keep[j]`` (a boolean ``(positions,)``; ``None``: all of them), at once."""
    if all(k is None for k in keep):
        return d
    every = None
    masks = []
    for k in keep:
        if not isinstance(k, Tensor):
            if every is None:
                every = torch.ones(positions(distance, d[:1]).numel(), dtype=torch.bool,
                                   device=d.device)  # fmt: skip
            k = every
        masks.append(k)
    return within(distance, d, torch.stack(masks))


def _descend_all(
    space: Space, distance: Distance, x: Tensor, sums: Tensor, rows: list[int],
    walking: list[int], asks: dict[int, Ask], grad: Tensor, point: Tensor,
) -> Tensor:  # fmt: skip
    """The descent steps of the samples ``rows[j]`` for ``j`` in ``walking`` at once, from
    their gradients ``grad[j]`` at ``point[j]``: their next points, in that order. Each
    sample's running sum is its row of ``sums`` (zeroed where its walk starts)."""
    walks = [w if isinstance(w := asks[rows[j]][2], _Walk) else None for j in walking]
    ids = [rows[j] for j in walking]
    fresh = [i for i, w in zip(ids, walks, strict=True) if w is not None and w.fresh]
    if fresh:
        sums[torch.as_tensor(fresh, dtype=torch.long, device=x.device)] = 0.0
    sel = torch.as_tensor(ids, dtype=torch.long, device=x.device)
    pick = torch.as_tensor(walking, dtype=torch.long, device=x.device)
    k = torch.as_tensor([0 if w is None else w.k for w in walks], device=x.device)
    for w in walks:
        if w is not None:
            w.fresh = False
    nxt, total = descent_steps(space, distance, x[sel], grad[pick], point[pick], sums[sel], k)
    sums[sel] = total
    return nxt


def _shrink(space: Space, distance: Distance, sample: _Sample, delta: Tensor) -> Shrink:
    """The stage for one sample; returns its best flip (the input one if none is better).
    Asks only for what its passes left (``sample.left``, kept by the caller) can pay."""
    x, best = sample.x, delta
    while sample.left >= 3:
        moved = positions(distance, best).flatten()
        count = int(moved.sum())
        if count <= 1:
            break
        grad, ok, _ = yield GRADIENT, best, None
        if not ok:  # the flip we hold always flipped; a model that disagrees ends the stage
            break
        # every position pushed to the bound against the gradient (where it has none, as is)
        pushed = space.project(x, torch.where(grad != 0, -grad.sign() * FAR, best))
        gain = shares(distance, grad, pushed).flatten()
        found = None
        for pool in (None, moved):  # the best positions of all, then of the flip's
            score = gain if pool is None else torch.where(pool, gain, -torch.inf)
            rank = _ranks(score.argsort(descending=True, stable=True))
            lo, hi = 0, count  # the fewest top positions that flip, by bisection
            while hi - lo > 1 and sample.left >= 1:  # count - 1 first: if it fails, all fail
                mid = hi - 1 if hi == count else (lo + hi) // 2
                candidate, flips, size = yield FLIP, pushed, rank < mid
                if flips and size < count:
                    hi, found = mid, candidate
                else:
                    lo = mid
            if found is not None:
                break
        if found is None:  # no top set flips: restore one position alone, least gain first
            order = torch.where(moved, gain, torch.inf).argsort(stable=True)[:count].tolist()
            for j in range(count):
                if sample.left < 1:
                    break
                keep = moved.clone()
                keep[order[j]] = False
                candidate, flips, size = yield FLIP, best, keep
                if flips and size < count:
                    found = candidate
                    break
        for start in (best, pushed):  # the flip's own positions, then all of them pushed
            if found is None:
                found = yield from _descend(space, distance, sample, start, count - 1)
        if found is None:
            break
        best = found
    return best


def _both(
    space: Space, distance: Distance, sample: _Sample, delta: Tensor, other: Tensor | None
) -> Shrink:
    """The stage from ``delta``; then, with passes left and a non-zero ``other``, one
    forward pass checks that ``other`` flips and the stage runs from it too: the flip with
    fewer positions of the two results (the first's on a tie)."""
    best = yield from _shrink(space, distance, sample, delta)
    if other is None or not bool(other.any()) or sample.left < 4:
        return best
    start, flips, _ = yield FLIP, other, None
    if not flips:
        return best
    found = yield from _shrink(space, distance, sample, start)
    fewer = support_size(distance, found) < support_size(distance, best)
    return found if bool(fewer) else best


def _descend(
    space: Space, distance: Distance, sample: _Sample, start: Tensor, k: int
) -> Generator[Ask, Answer, Tensor | None]:
    """Search for a flip on ``k`` positions: from the top ``k`` positions of ``start``,
    each step takes the gradient at the point (its forward pass says whether it flips),
    adds it to a running sum (momentum :data:`MOMENTUM`) and moves to the top ``k``
    positions by that sum, pushed to the bound against it. At most :data:`PATIENCE` steps;
    the first flip with fewer positions than ``start`` is returned, else ``None``."""
    walk = _Walk(k)
    point = start
    for _ in range(PATIENCE):
        if sample.left < 2:
            break
        # the caller takes the step (:func:`descent_steps`) for every descending sample
        after, flips, size = yield DESCEND, point, walk
        if flips and size <= k:
            return point
        point = after
    return None
