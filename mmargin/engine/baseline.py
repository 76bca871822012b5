"""The random-perturbation baseline: the smallest *random* perturbation that flips a
sample, in the same space and distance as the search, for every modality.

The adversarial margin is the distance to the nearest flip; the random margin is the
distance to a flip along a random perturbation of growing size. Their ratio
``random_ratio = margin / random_margin`` is the design's unit-free "how much smaller
than chance" figure (below 1: the adversarial is that much smaller than random noise),
which means the same thing for pixels, words, features and samples.

How a random perturbation grows, per kind of space:

* continuous, distance with p > 0 (L1, L2, L∞, weighted): one random direction ``u`` (the
  space's ``random``: unit L2 over the free coordinates; under L∞ its signs, a random
  vertex of the cube, i.e. noise of one amplitude on every free coordinate, so that one
  large coordinate does not set the size). The scale ``s`` of ``x ± s·u``
  (both signs, one pass each; a flip of either counts) grows by :data:`GROW` from
  :data:`START` ``·‖x‖₂`` until a flip, then is bisected on ``log s``. Every probe is
  mapped onto the space by ``finalize`` (box, mask, integers, one-hot) and measured by the
  run's distance. For a linear model the flipping scale along ``±u`` is ``m / |cos(u, w)|``
  (m: the L2 margin), so under L2 the ratio is ``|cos(u, w)|``; under L∞, with ``σ`` the
  random signs, it is ``|w·σ| / ‖w‖₁``.
* continuous, L0: the free coordinates in random order, each pushed to a random extreme
  (salt-and-pepper noise, clipped to the box by ``finalize``); the number ``k`` of
  coordinates changed grows 1, 2, 4 ... and is bisected.
* discrete (:class:`~mmargin.protocols.DiscreteSpace`): a random sequence of feasible edits
  built through the problem's own protocol — positions in random order, a random allowed
  candidate at each, kept when ``admissible`` with the edits before it — and the length
  ``k`` of the prefix applied grows and is bisected likewise, measured by the run's edit
  distance. A third-party discrete space gets it with nothing to implement.

The random margin is the smallest flipping probe's size (``inf``: none flipped within
the passes). Every probe is one forward pass per input through the run's counted model,
charged to its sample, and a sample spends at most ``spec.baseline_passes`` here (the
budget plan sets them aside). Draws come from a stream seeded by the run's seed and the
sample's id (:func:`~mmargin.engine.state.sample_seed`), apart from the search's, so a
random margin depends neither on the strategy, the batch, nor the search's budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mmargin.engine.state import per_sample, sample_seed
from mmargin.protocols import Edit
from mmargin.results import SampleResult

if TYPE_CHECKING:
    from mmargin.engine.driver import Batch, Run

STREAM = "random-baseline"
"""Mixed into each sample's id to seed its baseline stream (apart from the search's)."""
START = 1e-2
"""First scale tried along a direction, relative to the sample's L2 norm."""
GROW = 4.0
"""Factor between scales before a flip brackets the boundary."""
MAX_SCALE = 10.0
"""Largest scale (relative to ‖x‖₂) before a direction counts as not flipping."""
FLOOR = 1e-6
"""Smallest scale (relative to ‖x‖₂) tried when the first scale already flips."""
RTOL = 1e-3
"""Bisection stops when the bracket's ends are this close (relative)."""
EXTREME = 10.0
"""How far (relative to max(‖x‖₂, 1)) an L0 probe pushes a coordinate before the box."""


@dataclass
class Bracket:
    """Growth, then bisection, of one sample's perturbation size ``t`` — a scale, or a
    number of coordinates / edits when ``integer`` — until the smallest flipping size is
    pinned, the sizes run past ``limit`` or the ``cap`` of passes is reached. ``cost`` is
    the passes one probe takes; ``best`` the smallest flipping size measured."""

    t: float
    limit: float
    cap: int
    cost: int = 1
    floor: float = 0.0
    integer: bool = False
    lo: float = 0.0
    hi: float = math.inf
    passes: int = 0
    best: float = math.inf
    done: bool = False

    def probe(self) -> float | None:
        """The next size to try, or ``None`` when this sample is finished."""
        if self.done or self.passes + self.cost > self.cap or self.t > self.limit:
            self.done = True
            return None
        return self.t

    def tell(self, flipped: bool, size: float) -> None:
        """Record the outcome of the probe at ``t`` (``size``: its measured distance)."""
        self.passes += self.cost
        if flipped:
            self.hi, self.best = self.t, min(self.best, size)
        else:
            self.lo = self.t
        self.t, self.done = self._next()

    def _next(self) -> tuple[float, bool]:
        lo, hi = self.lo, self.hi
        if self.integer:
            if math.isinf(hi):
                return min(2 * lo, self.limit), lo >= self.limit
            return float((lo + hi) // 2), hi - lo <= 1
        if math.isinf(hi):
            return min(self.t * GROW, self.limit), self.t >= self.limit
        if lo == 0:
            return self.t / GROW, self.t / GROW < self.floor
        return math.sqrt(lo * hi), hi <= lo * (1 + RTOL)


def streams(seed: int, ids: Sequence[str]) -> list[torch.Generator]:
    """One baseline generator per sample, from the run's seed and the sample's id."""
    return [torch.Generator().manual_seed(sample_seed(seed, f"{STREAM}\x00{s}")) for s in ids]


def random_margins(
    run: Run, batch: Batch, rows: Sequence[int], queries: list[int]
) -> dict[int, tuple[float, int]]:
    """The random margin of each sample ``rows`` of ``batch`` (correctly classified, already
    searched) and the passes it took, which are also charged to ``queries``. Empty when the
    baseline is off; a failure (the model raising on noise) leaves the figure out, never
    the sample's margin."""
    spec = run.spec
    caps = [min(spec.baseline_passes, spec.budget - queries[i] - spec.report_passes) for i in rows]
    rows = [i for i, cap in zip(rows, caps, strict=True) if cap > 0]
    caps = [c for c in caps if c > 0]
    if not rows:
        return {}
    gens = streams(spec.seed, [batch.ids[i] for i in rows])
    brackets: list[Bracket] = []
    try:
        if isinstance(batch.inputs, Tensor):
            _continuous(run, batch, rows, gens, caps, brackets)
        else:
            _discrete(run, batch, rows, gens, caps, brackets)
    except Exception:  # noqa: BLE001 - the model is user code; the baseline is optional
        for b in brackets:
            b.best = math.nan
    out: dict[int, tuple[float, int]] = {}
    for i, b in zip(rows, brackets, strict=False):
        queries[i] += b.passes
        if not math.isnan(b.best):
            out[i] = (b.best, b.passes)
    return out


def with_random(result: SampleResult, found: tuple[float, int] | None) -> SampleResult:
    """``result`` with its random margin, ``random_ratio = margin / random_margin`` (0 when
    no random perturbation flipped; ``None`` without a finite margin) and the baseline's
    passes in ``extras["random_passes"]`` (``found``: the margin and passes, or None)."""
    if found is None:
        return result
    random, passes = found
    ratio = None
    if math.isfinite(result.margin):
        ratio = 0.0 if math.isinf(random) else result.margin / random
    extras = {**result.extras, "random_passes": passes}
    return dataclasses.replace(result, random_margin=random, random_ratio=ratio, extras=extras)


def _live(brackets: list[Bracket]) -> list[tuple[int, float]]:
    """The samples still probing and the size each tries next."""
    probes = [(j, b.probe()) for j, b in enumerate(brackets)]
    return [(j, t) for j, t in probes if t is not None]


def _flips(run: Run, scores: Tensor, labels: Tensor, targets: Tensor | None) -> list[bool]:
    ok = run.goal.is_adversarial(scores, labels, targets) & torch.isfinite(scores).all(dim=1)
    return [bool(v) for v in ok.tolist()]


def _labels(batch: Batch, rows: Sequence[int], repeat: int = 1) -> tuple[Tensor, Tensor | None]:
    index = torch.as_tensor(list(rows) * repeat, dtype=torch.long, device=batch.labels.device)
    targets = None if batch.targets is None else batch.targets[index]
    return batch.labels[index], targets


@torch.no_grad()
def _continuous(
    run: Run, batch: Batch, rows: list[int], gens: list[torch.Generator], caps: list[int],
    brackets: list[Bracket],
) -> None:  # fmt: skip
    """Growing random noise along one direction per sample, all samples in each pass."""
    space, x = run.space, batch.inputs[torch.as_tensor(rows, device=batch.inputs.device)]
    u = torch.cat([space.random(x[j : j + 1], g) for j, g in enumerate(gens)]).to(x)
    p = float(getattr(run.distance, "p", 2.0))
    if p == math.inf:  # uniform-amplitude noise: a random vertex of the L∞ ball
        u = u.sign()
    ref = x.flatten(1).norm(dim=1)
    ref = torch.where(ref > 0, ref, torch.ones_like(ref)).tolist()
    sparse = p == 0.0
    if sparse:
        rank = _random_ranks(u, gens)
        push = u.sign() * EXTREME * max(max(ref), 1.0)
        free = (u != 0).flatten(1).sum(dim=1).tolist()
        brackets.extend(Bracket(t=1.0, limit=float(n), cap=c, integer=True)
                        for n, c in zip(free, caps, strict=True))  # fmt: skip
    else:
        brackets.extend(Bracket(t=START * r, limit=MAX_SCALE * r, cap=c, cost=2, floor=FLOOR * r)
                        for r, c in zip(ref, caps, strict=True))  # fmt: skip
    while True:
        live = _live(brackets)
        if not live:
            return
        idx = torch.as_tensor([j for j, _ in live], device=x.device)
        size = torch.as_tensor([t for _, t in live], dtype=x.dtype, device=x.device)
        xi = x[idx]
        if sparse:
            delta = push[idx] * (rank[idx] < per_sample(size, xi)).to(x.dtype)
            probes, repeat = space.finalize(xi, xi + delta), 1
        else:
            step = u[idx] * per_sample(size, xi)
            probes = torch.cat([space.finalize(xi, xi + step), space.finalize(xi, xi - step)])
            repeat = 2
        labels, targets = _labels(batch, [rows[j] for j, _ in live], repeat)
        flips = _flips(run, run.model(probes), labels, targets)
        sizes = run.distance.norm(probes - torch.cat([xi] * repeat)).tolist()
        count = len(live)
        for r, (j, _) in enumerate(live):
            hits = [sizes[r + k * count] for k in range(repeat) if flips[r + k * count]]
            brackets[j].tell(bool(hits), min(hits, default=math.inf))


def _random_ranks(u: Tensor, gens: list[torch.Generator]) -> Tensor:
    """Per sample, a random order of its free coordinates (frozen ones rank last)."""
    keys = torch.stack([torch.rand(u[j].shape, generator=g) for j, g in enumerate(gens)])
    keys = keys.to(u.device).masked_fill(u == 0, 2.0)
    order = keys.flatten(1).argsort(dim=1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=u.device).expand_as(order))
    return ranks.view(u.shape).to(u.dtype)


def random_edits(problem: Any, generator: torch.Generator) -> list[Edit]:
    """A random sequence of feasible edits for a discrete problem: its positions in random
    order, at each a random allowed candidate, kept when the edits so far stay admissible."""
    positions = list(problem.positions())
    order = torch.randperm(len(positions), generator=generator).tolist()
    chosen: list[Edit] = []
    for k in order:
        candidates = list(problem.candidates(positions[k]))
        if not candidates:
            continue
        pick = candidates[int(torch.randint(len(candidates), (1,), generator=generator))]
        if problem.admissible([*chosen, pick]):
            chosen.append(pick)
    return chosen


@torch.no_grad()
def _discrete(
    run: Run, batch: Batch, rows: list[int], gens: list[torch.Generator], caps: list[int],
    brackets: list[Bracket],
) -> None:  # fmt: skip
    """Growing prefixes of a random feasible edit sequence per sample, batched per pass."""
    model = getattr(run.model, "model", run.model)  # the caller's adapter builds problems
    problems: list[Any] = []
    sequences: list[list[Edit]] = []
    for i, g, cap in zip(rows, gens, caps, strict=True):
        try:
            problem = run.space.problem(model, batch.inputs[i])
            seq = random_edits(problem, g)
        except Exception:  # noqa: BLE001 - the space is user code: this sample has no figure
            problem, seq = None, []
        problems.append(problem)
        sequences.append(seq)
        bracket = Bracket(t=1.0, limit=float(len(seq)), cap=cap, integer=True)
        if problem is None:
            bracket.best = math.nan
        if not seq:
            bracket.done = True
        brackets.append(bracket)
    while True:
        live = _live(brackets)
        if not live:
            return
        edits = [sequences[j][: int(k)] for j, k in live]
        inputs = [problems[j].apply(e) for (j, _), e in zip(live, edits, strict=True)]
        labels, targets = _labels(batch, [rows[j] for j, _ in live])
        flips = _flips(run, run.model(inputs), labels, targets)
        for (j, _), e, adv, flip in zip(live, edits, inputs, flips, strict=True):
            size = float(run.distance.measure(batch.inputs[rows[j]], adv, e)) if flip else math.inf
            brackets[j].tell(flip, size)
