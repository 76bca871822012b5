"""The L0 finishing stage: shrink the support of an adversarial perturbation.

A search under L0 (``distance.p == 0``) ends on a flip whose changed positions (coordinates,
or pixels when the distance has a ``group_axis``) are more than it needs, often each moved
only part of the way. This stage starts from that verified flip and, for every sample of the
batch within the passes it is given, repeats:

1. one forward + backward pass at the current flip: the loss gradient;
2. *push* every position as far as the space lets it go against the gradient (the L0
   count does not see the size of a change, so a changed position may as well move all
   the way), and rank positions by their first-order share of the loss, ``-∇loss·δ``;
3. find by bisection (one forward pass per probe) the fewest top-ranked positions of
   *all* that still flip — fewer than the flip has: a smaller support, possibly a
   different one (a swap) — then, failing that, the fewest of the flip's own positions;
   each bisection first probes one position fewer than the flip has, and stops there when
   that fails (the top sets are nested: fewer positions rarely flip where more do not);
4. failing both, restore each changed position alone, least share first (one pass each);
   none flips → a local minimum: a few gradient steps on one position fewer (top
   positions of a running gradient sum, pushed to the bound) look for a flip there, from
   the flip, then again from every position pushed (a different path, which finds flips
   the first misses on adversarially trained models); none → the stage ends.

With passes left when that ends, the same runs from a second flip of the search (its
``alternate``: the smooth-L0 run's best or the ε-ball runs', whichever is not the first),
checked by one forward pass first; the result with fewer positions is kept.

Each sample asks for one model pass at a time — a forward pass on a candidate or a
gradient — and decides alone what to ask next, so its arithmetic is its own whatever shares
the batch. :func:`sparse_finish` runs all samples in lock step: each round, every sample
still shrinking asks once and the asks are answered by one batched forward pass
(:func:`_probe_round`) and one batched forward + backward pass (:func:`_gradient_round`),
rows in sample order. A sample whose stage ends, or whose passes run out, leaves the
rounds; each pass is counted to its sample. A sample's place in the steps above is plain
integers (:class:`_Row`: the bisection's bounds, the position restored, the descent's
steps); its tensors are its rows of batch tensors (:class:`_Tensors`), and the work
between passes is done for the round's samples at once, row by row the same numbers as
alone: the pushed points and shares at a round's gradients, the rankings of the
bisections and restores that start (one stable sort of their rows), the candidates (rows
gathered, one mask), the descent steps; that arithmetic and the batched passes themselves
are :mod:`mmargin.engine.sparse_ops`'s. On a small model the per-sample tensor calls were
most of the stage's time (an MNIST MLP, 100 images at 1000 passes: ~810k torch calls in
the L0 search with a coroutine and its own tensor calls per sample, ~185k with the descent
steps batched (session 10), ~143k with every sample's bookkeeping batched: the same model
calls on the same rows, the same results, bit for bit; the coroutine version is kept as
the tests' reference, tests/sparse_reference.py).

Every candidate goes through the space's ``project`` (mask, box) and ``finalize`` and is kept
only when a forward pass on it saw the flip; the driver re-verifies the result.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmargin.engine.problem import Problem
from mmargin.engine.sparse_ops import (
    FAR,
    descent_steps,
    forward_pass,
    gradient_pass,
    positions,
    ranks_of,
    shares,
    stable_order,
    support_size,
    within,
)

SPARSE_SHARE = 0.4
"""The share of a sample's budget set aside for this stage when the distance is L0."""
PATIENCE = 20
"""Steps each descent from a local minimum takes to look for a flip on one position fewer
(two descents: together the 40 steps one descent took before the second was added)."""


def sparse_passes(budget: int) -> int:
    """Passes per sample reserved for the L0 finishing stage out of ``budget``."""
    return int(budget * SPARSE_SHARE)


_GRADIENT, _BISECT, _RESTORE, _DESCEND, _ALTERNATE = range(5)
"""What a sample asks for in a round: the gradient at its flip (2 passes); a forward pass
on a bisection probe, on its flip with one position restored or on its alternate flip (1
pass each); a descent step (the gradient at its point, 2 passes, and the step's next
point)."""
_FIRST, _ONLY, _SECOND = range(3)
"""Which shrink a sample is in: the first with an alternate flip still to try, the only one
(no alternate, or it did not flip), the second (from the alternate)."""


class _Row:
    """One sample's place in the stage, in plain integers (its tensors are its rows of the
    stage's batch tensors): the passes it has ``left``, which shrink it is in (``run``),
    what it asks next (``ask``; ``None``: done), its flip's positions (``count``) and the
    counters of the loops of :func:`sparse_finish`'s steps 3 and 4."""

    __slots__ = ("ask", "count", "found", "hi", "j", "left", "lo", "mid", "pool", "run",
                 "size", "start", "steps")  # fmt: skip

    def __init__(self, left: int, count: int, run: int) -> None:
        self.left, self.count, self.run = left, count, run
        self.ask: int | None = None
        self.found = False
        self.pool = self.lo = self.hi = self.mid = self.j = self.start = self.steps = 0
        self.size = 0  # the positions of the smaller flip found (the next loop's count)

    def opening(self) -> bool:
        """Whether the bisection's next probe is its first (its ranking not made yet)."""
        return self.lo == 0 and self.hi == self.count


def _top(r: _Row) -> None:
    """The top of a shrink's loop: the gradient at the flip, or the shrink ends."""
    if r.left < 3 or r.count <= 1:
        _end(r)
    else:
        r.ask = _GRADIENT


def _bisect(r: _Row) -> None:
    """The next probe of the bisection for the fewest top-ranked positions that flip (one
    position fewer than the flip first), of all positions (pool 0), then of the flip's own
    (pool 1); neither: the restores."""
    if r.hi - r.lo > 1 and r.left >= 1:
        r.mid = r.hi - 1 if r.hi == r.count else (r.lo + r.hi) // 2
        r.ask = _BISECT
    elif r.found:
        _again(r)
    elif r.pool == 0:
        r.pool, r.lo, r.hi = 1, 0, r.count
        _bisect(r)
    else:
        r.j = 0
        _restore(r)


def _restore(r: _Row) -> None:
    """The next position restored alone (least share first); none left: the descents."""
    if r.j < r.count and r.left >= 1:
        r.ask = _RESTORE
    else:
        r.start, r.steps = 0, 0
        _descend(r)


def _descend(r: _Row) -> None:
    """The next step of the descent on one position fewer from the flip (``start`` 0), then
    from every position pushed (1); neither finds a flip: the shrink ends."""
    if r.steps < PATIENCE and r.left >= 2:
        r.ask = _DESCEND
    elif r.start == 0:
        r.start, r.steps = 1, 0
        _descend(r)
    else:
        _end(r)


def _again(r: _Row) -> None:
    """A smaller flip found (already the sample's row of ``best``): the loop from it."""
    r.count = r.size
    _top(r)


def _end(r: _Row) -> None:
    """A shrink ends: one forward pass on the alternate flip when the sample has one to try
    and the passes, else the sample is done."""
    r.ask = _ALTERNATE if r.run == _FIRST and r.left >= 4 else None


def sparse_finish(
    problem: Problem, delta: Tensor, passes: Tensor, alternates: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Shrink the support of each verified adversarial ``problem.x + delta`` within
    ``passes[i]`` forward + backward passes for sample ``i``; with ``alternates`` (a
    second, unverified flip per sample, zero where none), the passes the first shrink
    leaves shrink that one too: the flip with fewer positions of the two results (the
    first's on a tie). Returns the new perturbations (finalised, each a flip a pass has
    seen, or the input one) and the passes each sample used."""
    x, distance = problem.x, problem.distance
    device = x.device
    t = _Tensors(delta, positions(distance, delta).flatten(1), alternates)
    counts = t.moved.sum(1).tolist()
    some = [False] * len(counts)
    if alternates is not None:
        some = alternates.flatten(1).any(1).tolist()
    rows = [_Row(int(p), int(c), _FIRST if a else _ONLY)
            for p, c, a in zip(passes.tolist(), counts, some, strict=True)]  # fmt: skip
    for r in rows:
        _top(r)
    while True:
        probes = [i for i, r in enumerate(rows) if r.ask in (_BISECT, _RESTORE, _ALTERNATE)]
        steps = [i for i, r in enumerate(rows) if r.ask in (_GRADIENT, _DESCEND)]
        if not probes and not steps:
            break
        if probes:
            _probe_round(problem, rows, probes, t)
        if steps:
            _gradient_round(problem, rows, steps, t)
    out = t.best
    second = [i for i, r in enumerate(rows) if r.run == _SECOND]
    if second:
        sel = _index(second, device)
        fewer = support_size(distance, t.best[sel]) < support_size(distance, t.first[sel])
        out[sel] = torch.where(_per_row(fewer, out), t.best[sel], t.first[sel])
    used = [int(p) - r.left for p, r in zip(passes.tolist(), rows, strict=True)]
    return out, torch.as_tensor(used, dtype=torch.long, device=device)


class _Tensors:
    """The stage's per-sample tensors, one row per sample: the flip (``best``), the first
    shrink's result (``first``, where the second runs), the alternate flips, and what the
    last gradient at the flip gave (its positions ``moved``, the point ``pushed``, the
    shares ``gain``, the bisection's ``rank`` and the restores' ``order``), a descent's
    ``point`` and running sum ``sums``."""

    def __init__(self, delta: Tensor, moved: Tensor, alternates: Tensor | None) -> None:
        self.best = delta.clone()
        self.first = torch.zeros_like(delta)
        self.alternates = alternates
        self.moved = moved
        self.pushed = torch.zeros_like(delta)
        self.point = torch.zeros_like(delta)
        self.sums = torch.zeros_like(delta)
        self.gain = torch.zeros(moved.shape, dtype=delta.dtype, device=delta.device)
        self.rank = torch.zeros(moved.shape, dtype=torch.long, device=delta.device)
        self.order = torch.zeros(moved.shape, dtype=torch.long, device=delta.device)


def _index(ids: list[int], device: torch.device) -> Tensor:
    return torch.as_tensor(ids, dtype=torch.long, device=device)


def _per_row(values: Tensor, like: Tensor) -> Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _probe_round(problem: Problem, rows: list[_Row], ids: list[int], t: _Tensors) -> None:
    """One batched forward pass on the candidates of the samples ``ids`` (ascending) and
    each sample's next step from its reply."""
    device = problem.x.device
    kinds = [rows[i].ask for i in ids]
    bis = [j for j, k in enumerate(kinds) if k == _BISECT]
    res = [j for j, k in enumerate(kinds) if k == _RESTORE]
    alt = [j for j, k in enumerate(kinds) if k == _ALTERNATE]
    sel = _index(ids, device)
    parts: list[tuple[list[int], Tensor, Tensor | None]] = []  # rows, points, masks
    if bis:
        s = _subset(sel, bis, len(ids), device)
        fresh = [ids[j] for j in bis if rows[ids[j]].opening()]
        if fresh:
            _rank(t, _index(fresh, device), [rows[i].pool for i in fresh])
        mid = torch.as_tensor([rows[ids[j]].mid for j in bis], device=device)
        parts.append((bis, _take(t.pushed, s), _take(t.rank, s) < mid.unsqueeze(1)))
    if res:
        s = _subset(sel, res, len(ids), device)
        fresh = [ids[j] for j in res if rows[ids[j]].j == 0]
        if fresh:  # least share first, the flip's positions only
            f = _index(fresh, device)
            score = torch.where(_take(t.moved, f), _take(t.gain, f), torch.inf)
            t.order.index_copy_(0, f, stable_order(score, False))
        keep = _take(t.moved, s)
        at = torch.as_tensor([rows[ids[j]].j for j in res], dtype=torch.long, device=device)
        keep[torch.arange(len(res), device=device), t.order[s, at]] = False
        parts.append((res, _take(t.best, s), keep))
    if alt:
        assert t.alternates is not None
        parts.append((alt, _take(t.alternates, _subset(sel, alt, len(ids), device)), None))
    if len(parts) == 1:
        d, mask = parts[0][1], parts[0][2]
    else:
        d = torch.empty((len(ids), *t.best.shape[1:]), dtype=t.best.dtype, device=device)
        mask = torch.ones((len(ids), t.moved.shape[1]), dtype=torch.bool, device=device)
        for where, points, masks in parts:
            b = _index(where, device)
            d.index_copy_(0, b, points)
            if masks is not None:
                mask.index_copy_(0, b, masks)
    if bis or res:  # (alternates alone are asked as they are)
        assert mask is not None
        d = within(problem.distance, d, mask)
    values, flipped, sizes = forward_pass(problem.rows(sel), d)
    kept, keep_rows, first = [], [], []
    for j, i in enumerate(ids):
        r, ok, size = rows[i], flipped[j], sizes[j]
        r.left -= 1
        if r.ask == _BISECT:
            if ok and size < r.count:
                r.hi, r.found, r.size = r.mid, True, size
                kept.append(j)
                keep_rows.append(i)
            else:
                r.lo = r.mid
            _bisect(r)
        elif r.ask == _RESTORE:
            if ok and size < r.count:
                r.size = size
                kept.append(j)
                keep_rows.append(i)
                _again(r)
            else:
                r.j += 1
                _restore(r)
        elif not ok:  # the alternate did not flip: the first shrink's flip stays
            r.run, r.ask = _ONLY, None
        else:  # the second shrink, from the alternate's candidate
            r.run, r.count = _SECOND, size
            first.append(i)
            kept.append(j)
            keep_rows.append(i)
            _top(r)
    if first:
        f = _index(first, device)
        t.first.index_copy_(0, f, _take(t.best, f))
    if kept:
        t.best.index_copy_(
            0, _index(keep_rows, device), _take(values, _subset(None, kept, len(ids), device))
        )


def _take(values: Tensor, index: Tensor | None) -> Tensor:
    """The rows ``index`` of ``values`` (a copy); ``None``: all of them (``values`` itself)."""
    return values if index is None else values.index_select(0, index)


def _subset(
    sel: Tensor | None, where: list[int], total: int, device: torch.device
) -> Tensor | None:
    """The entries ``where`` of the index ``sel`` (``None``: of ``range(total)``), as an
    index; ``None`` where they are all ``total`` of them (``where`` ascending, distinct)."""
    if len(where) == total:
        return sel
    at = torch.as_tensor(where, dtype=torch.long, device=device)
    return at if sel is None else sel.index_select(0, at)


def _rank(t: _Tensors, sel: Tensor, pools: list[int]) -> None:
    """The bisection's ranking of the samples ``sel`` (their first probe next): every
    position by its share (pool 0), or the flip's own positions only (pool 1)."""
    score = t.gain[sel]
    if any(pools):
        own = torch.as_tensor(pools, dtype=torch.bool, device=sel.device).unsqueeze(1)
        score = torch.where(own & ~t.moved[sel], -torch.inf, score)
    t.rank[sel] = ranks_of(stable_order(score, True))


def _gradient_round(problem: Problem, rows: list[_Row], ids: list[int], t: _Tensors) -> None:
    """One batched forward + backward pass at the flips (the loop's gradient) and descent
    points of the samples ``ids`` (ascending), the descent steps taken at once, and each
    sample's next step from its reply."""
    space, distance = problem.space, problem.distance
    device = problem.x.device
    sel = _index(ids, device)
    sub = problem.rows(sel)
    walking = [j for j, i in enumerate(ids) if rows[i].ask == _DESCEND]
    at = [j for j, i in enumerate(ids) if rows[i].ask == _GRADIENT]
    starts = [[i for j in walking if rows[i := ids[j]].steps == 0 and rows[i].start == s]
              for s in (0, 1)]  # fmt: skip
    for begin, source in zip(starts, (t.best, t.pushed), strict=True):
        if begin:  # a descent starts: from the flip, or from every position pushed
            f = _index(begin, device)
            t.point.index_copy_(0, f, _take(source, f))
            t.sums[f] = 0.0
    w = _subset(None, walking, len(ids), device)
    g = _subset(None, at, len(ids), device)
    if not at:
        d = _take(t.point, sel)
    else:
        d = _take(t.best, sel)
        if walking:
            assert w is not None
            d.index_copy_(0, w, _take(t.point, sel.index_select(0, w)))
    grad, flipped, sizes = gradient_pass(sub, d)
    nxt = None
    if walking:
        s = sel if w is None else sel.index_select(0, w)
        k = torch.as_tensor([rows[ids[j]].count - 1 for j in walking], device=device)
        nxt, total = descent_steps(space, distance, _take(sub.x, w), _take(grad, w),
                                    _take(d, w), _take(t.sums, s), k)  # fmt: skip
        t.sums.index_copy_(0, s, total)
    if at:
        s = sel if g is None else sel.index_select(0, g)
        point, slope = _take(d, g), _take(grad, g)
        t.moved.index_copy_(0, s, positions(distance, point).flatten(1))
        pushed = space.project(_take(sub.x, g), torch.where(slope != 0, -slope.sign() * FAR, point))
        t.pushed.index_copy_(0, s, pushed)
        t.gain.index_copy_(0, s, shares(distance, slope, pushed).flatten(1))
    found, found_at, going, going_at = [], [], [], []
    step = 0
    for j, i in enumerate(ids):
        r, ok, size = rows[i], flipped[j], sizes[j]
        r.left -= 2
        if r.ask == _GRADIENT:
            if not ok:  # the flip we hold always flipped; a model that disagrees ends it
                _end(r)
                continue
            r.found, r.pool, r.lo, r.hi = False, 0, 0, r.count
            _bisect(r)
            continue
        r.steps += 1
        if ok and size <= r.count - 1:
            r.size = size
            found.append(i)
            found_at.append(j)
            _again(r)
        else:
            going.append(i)
            going_at.append(step)
            _descend(r)
        step += 1
    if found:
        t.best.index_copy_(0, _index(found, device), _take(d, _index(found_at, device)))
    if going:
        assert nxt is not None
        t.point.index_copy_(
            0, _index(going, device), _take(nxt, _subset(None, going_at, step, device))
        )
