"""The discrete search itself: ranking, greedy, beam, exhaustive enumeration and pruning.

Everything goes through one :class:`Evaluator`, which applies edit sets, batches model
calls, caches what it has seen (a combination is never paid for twice) and stops at the
query budget, so every strategy is accounted the same way: one query per candidate input
scored. Costs are additive over edits; the exhaustive enumeration walks the number of
edits upward and proves a lower bound on the cost of *any* flip in the space: once every
combination of ``j`` edits has been scored, a cheaper flip needs at least ``j + 1`` edits,
so it costs at least the sum of the ``j + 1`` smallest per-position costs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from mmargin.engine.spec import DiscreteConfig
from mmargin.goals import Goal
from mmargin.protocols import DiscreteProblem, Edit, Found, ModelAdapter, Ranking

Key = frozenset[tuple[int, Any]]
Outcome = tuple[float, bool]
"""(goal loss, adversarial?) of one scored combination."""


def _key(edits: Sequence[Edit]) -> Key:
    return frozenset((e.position, e.value) for e in edits)


def _cost(edits: Sequence[Edit]) -> float:
    return float(sum(e.cost for e in edits))


class Evaluator:
    """Scores edit sets on one input under a query budget, with a cache."""

    def __init__(
        self,
        model: ModelAdapter,
        problem: DiscreteProblem,
        goal: Goal,
        label: int,
        targets: torch.Tensor | None,
        budget: int,
        batch_size: int,
        clean_loss: float,
    ) -> None:
        self.model, self.problem, self.goal = model, problem, goal
        self.label, self.targets = label, targets
        self.budget, self.batch_size = max(budget, 0), max(batch_size, 1)
        self.clean_loss = clean_loss
        self.queries = 0
        self.cache: dict[Key, Outcome] = {frozenset(): (clean_loss, False)}
        self.exhausted = False

    @property
    def left(self) -> int:
        """Queries still allowed."""
        return self.budget - self.queries

    def charge(self, queries: int) -> None:
        """Count passes spent outside :meth:`evaluate` (a gradient ranking)."""
        self.queries += queries

    def evaluate(self, sets: Sequence[Sequence[Edit]]) -> list[Outcome | None]:
        """Outcome per edit set; ``None`` for those the budget did not allow."""
        todo: dict[Key, Sequence[Edit]] = {}
        for edits in sets:
            key = _key(edits)
            if key not in self.cache and key not in todo:
                todo[key] = edits
        pending = list(todo.items())
        if len(pending) > self.left:
            pending = pending[: max(self.left, 0)]
            self.exhausted = True
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            inputs = [self.problem.apply(edits) for _, edits in chunk]
            with torch.no_grad():
                scores = self.model(inputs)
            self.queries += len(chunk)
            n = len(chunk)
            labels = torch.full((n,), self.label, dtype=torch.long)
            targets = None if self.targets is None else self.targets.expand(n)
            loss = self.goal.loss(scores, labels, targets)
            adv = self.goal.is_adversarial(scores, labels, targets)
            finite = torch.isfinite(scores).all(dim=1)
            for j, (key, _) in enumerate(chunk):
                ok = bool(finite[j])
                self.cache[key] = (float(loss[j]) if ok else math.inf, ok and bool(adv[j]))
        return [self.cache.get(_key(edits)) for edits in sets]


def _admissible(problem: DiscreteProblem, edits: Sequence[Edit]) -> bool:
    return bool(problem.admissible(edits))


def _best(
    sets: Sequence[tuple[Edit, ...]], outcomes: Sequence[Outcome | None]
) -> tuple[tuple[Edit, ...] | None, tuple[Edit, ...] | None, float]:
    """(cheapest flipping set, lowest-loss set, its loss) among scored sets."""
    flip: tuple[Edit, ...] | None = None
    flip_key = (math.inf, math.inf)
    low: tuple[Edit, ...] | None = None
    low_loss = math.inf
    for edits, outcome in zip(sets, outcomes, strict=True):
        if outcome is None:
            continue
        loss, adv = outcome
        if adv and (_cost(edits), loss) < flip_key:
            flip, flip_key = edits, (_cost(edits), loss)
        if loss < low_loss:
            low, low_loss = edits, loss
    return flip, low, low_loss


# -- ranking --------------------------------------------------------------------------------
def _order_kind(config: DiscreteConfig, model: ModelAdapter) -> str:
    """``auto``: the problem's own ranking for differentiable models, else leave-one-out
    (a problem without ``rank`` / ``neutral`` falls through to the next, then to none)."""
    if config.order != "auto":
        return config.order
    return "rank" if model.differentiable else "leave-one-out"


def rank_positions(
    ev: Evaluator, config: DiscreteConfig, model: ModelAdapter, current: tuple[Edit, ...] = ()
) -> tuple[list[int], Ranking | None, str]:
    """Free positions, most important first, with the ranking used and its kind."""
    problem = ev.problem
    used = {e.position for e in current}
    free = [p for p in problem.positions() if p not in used and problem.candidates(p)]
    kind = _order_kind(config, model)
    ranking: Ranking | None = None
    if kind == "rank" and ev.left < 2:  # a gradient ranking costs a forward + a backward
        kind = "leave-one-out"
    if kind == "rank":
        ranking = problem.rank(ev.goal, ev.label, ev.targets, current)
        if ranking is None:
            kind = "leave-one-out"
        else:
            ev.charge(ranking.queries)
    if kind == "best-single":  # score every single edit: exact gains for additive models
        sets = [(*current, e) for p in free for e in problem.candidates(p)]
        sets = [s for s in sets if _admissible(problem, s)]
        scored = dict(zip(map(_key, sets), ev.evaluate(sets), strict=True))
        base = ev.cache[_key(current)][0]
        estimates: dict[int, np.ndarray] = {}
        for p in free:
            losses = [scored.get(_key((*current, e))) for e in problem.candidates(p)]
            estimates[p] = np.array([o[0] - base if o is not None else math.inf for o in losses])
        importance = {p: -float(v.min()) if v.size else -math.inf for p, v in estimates.items()}
        ranking = Ranking(importance=importance, queries=0, estimates=estimates)
    if kind == "leave-one-out":
        masks = {p: problem.neutral(p) for p in free}
        neutral = {p: e for p, e in masks.items() if e is not None}
        probes = list(neutral)
        if not probes:  # no masking edit anywhere: keep the positions' own order
            return free, None, "none"
        sets = [(*current, neutral[p]) for p in probes]
        outcomes = ev.evaluate(sets)
        base = ev.cache[_key(current)][0]
        scores = {
            p: (base - o[0]) if o is not None else -math.inf
            for p, o in zip(probes, outcomes, strict=True)
        }
        ranking = Ranking(importance=scores, queries=0)
    if ranking is not None:
        imp = ranking.importance
        free.sort(key=lambda p: -imp.get(p, -math.inf))
    return free, ranking, kind


def _ordered_candidates(
    problem: DiscreteProblem, position: int, ranking: Ranking | None
) -> list[Edit]:
    cands = list(problem.candidates(position))
    estimates = None if ranking is None or ranking.estimates is None else ranking.estimates
    if estimates is not None and position in estimates:
        order = np.argsort(np.asarray(estimates[position]), kind="stable")
        cands = [cands[i] for i in order]
    return cands


# -- strategies -----------------------------------------------------------------------------
def greedy(ev: Evaluator, config: DiscreteConfig, model: ModelAdapter) -> tuple[Edit, ...] | None:
    """Walk positions in importance order; keep the best edit at each if it lowers the loss."""
    free, ranking, kind = rank_positions(ev, config, model)
    current: tuple[Edit, ...] = ()
    loss = ev.clean_loss
    while free and ev.left > 0:
        position = free.pop(0)
        sets = [(*current, e) for e in _ordered_candidates(ev.problem, position, ranking)]
        sets = [s for s in sets if _admissible(ev.problem, s)]
        if not sets:
            continue
        flip, low, low_loss = _best(sets, ev.evaluate(sets))
        if flip is not None:
            return flip
        if low is None or low_loss >= loss:
            continue
        current, loss = low, low_loss
        if config.rerank and kind == "rank" and free and ev.left > 2:
            reranked, ranking, _ = rank_positions(ev, config, model, current)
            free = [p for p in reranked if p in set(free)]
    return None


def beam(ev: Evaluator, config: DiscreteConfig, model: ModelAdapter) -> tuple[Edit, ...] | None:
    """Level by level, extend each of ``beam_width`` states by one edit at one of its
    ``beam_width`` most important free positions; the first level with a flip wins."""
    order, ranking, _ = rank_positions(ev, config, model)
    states: list[tuple[Edit, ...]] = [()]
    for _ in range(len(order)):
        pool: dict[Key, tuple[Edit, ...]] = {}
        for state in states:
            used = {e.position for e in state}
            free = [p for p in order if p not in used][: config.beam_width]
            for position in free:
                for edit in _ordered_candidates(ev.problem, position, ranking):
                    s = (*state, edit)
                    if _key(s) not in pool and _admissible(ev.problem, s):
                        pool[_key(s)] = s
        if not pool or ev.left <= 0:
            return None
        sets = list(pool.values())
        outcomes = ev.evaluate(sets)
        flip, _, _ = _best(sets, outcomes)
        if flip is not None:
            return flip
        scored = [(o[0], s) for s, o in zip(sets, outcomes, strict=True) if o is not None]
        scored.sort(key=lambda t: t[0])
        states = [s for _, s in scored[: config.beam_width]]
        if not states:
            return None
    return None


def prune(ev: Evaluator, edits: tuple[Edit, ...]) -> tuple[Edit, ...]:
    """Drop edits the flip does not need, one at a time (the most adversarial drop first)."""
    while len(edits) > 1 and ev.left > 0:
        sets = [tuple(e for e in edits if e is not drop) for drop in edits]
        sets = [s for s in sets if _admissible(ev.problem, s)]
        flip, _, _ = _best(sets, ev.evaluate(sets))
        if flip is None:
            break
        edits = flip
    return edits


# -- exhaustive enumeration -----------------------------------------------------------------
def _level_counts(sizes: Sequence[int]) -> list[int]:
    """counts[j] = number of ways to pick j distinct positions and one candidate at each."""
    counts = [1] + [0] * len(sizes)
    for s in sizes:
        for j in range(len(sizes), 0, -1):
            counts[j] += counts[j - 1] * s
    return counts


def _combinations(cands: dict[int, list[Edit]], level: int) -> Iterator[tuple[Edit, ...]]:
    for positions in itertools.combinations(sorted(cands), level):
        yield from itertools.product(*(cands[p] for p in positions))


def exhaustive(
    ev: Evaluator, best: tuple[Edit, ...] | None, limit: int
) -> tuple[tuple[Edit, ...] | None, float]:
    """Enumerate combinations by number of edits while they could beat ``best`` and fit in
    ``limit`` new queries; returns the cheapest flip known and a proven lower bound."""
    problem = ev.problem
    cands = {
        p: [e for e in problem.candidates(p) if _admissible(problem, (e,))]
        for p in problem.positions()
    }
    cands = {p: c for p, c in cands.items() if c}
    if not cands:
        return best, math.inf if best is None else _cost(best)
    mins = sorted(min(e.cost for e in c) for c in cands.values())
    floor = [0.0, *itertools.accumulate(mins)]  # floor[j]: cheapest possible j edits
    counts = _level_counts([len(c) for c in cands.values()])
    best_cost = math.inf if best is None else _cost(best)
    spent = 0
    for level in range(1, len(cands) + 1):
        if floor[level] >= best_cost:
            return best, best_cost
        if spent + counts[level] > limit or counts[level] > ev.left:
            return best, min(best_cost, floor[level])
        batch: list[tuple[Edit, ...]] = []
        for combo in itertools.chain(_combinations(cands, level), [None]):
            if combo is not None and _admissible(problem, combo):
                batch.append(combo)
            if batch and (combo is None or len(batch) >= 4096):
                flip, _, _ = _best(batch, ev.evaluate(batch))
                if flip is not None and _cost(flip) < best_cost:
                    best, best_cost = flip, _cost(flip)
                batch = []
        spent += counts[level]
    return best, best_cost


def search(
    ev: Evaluator, problem: DiscreteProblem, config: DiscreteConfig, exact: str,
    model: ModelAdapter,
) -> Found:  # fmt: skip
    """Run the configured strategy, prune, then prove what the budget allows."""
    positions = [p for p in problem.positions() if problem.candidates(p)]
    if not positions:
        return Found(
            None,
            math.inf,
            "none",
            "no position has an allowed edit: nothing can change the prediction",
        )
    floor = min(min(e.cost for e in problem.candidates(p)) for p in positions)
    method = "beam" if config.method == "beam" else "greedy"
    found = beam(ev, config, model) if method == "beam" else greedy(ev, config, model)
    if found is not None and config.prune:
        found = prune(ev, found)
    lower: float | None = floor
    if config.method == "exhaustive" or exact == "auto":
        limit = ev.left if config.method == "exhaustive" else config.exhaustive_limit
        before = found
        found, proven = exhaustive(ev, found, limit)
        lower = max(floor, proven) if proven is not None else floor
        if found is not before:
            method = "exhaustive"
    info = {"queries_search": ev.queries}
    if found is None:
        message = (
            "no flip exists in this space (every combination was tried)"
            if lower is not None and math.isinf(lower)
            else f"no flip found within {ev.budget + 2} queries"
        )
        return Found(None, lower, method, message, info)
    return Found(found, lower, method, info=info)
