"""The continuous strategies under the driver: gradient, decision, hybrid and exact-only.

:class:`ContinuousSearch` runs the chosen search on a batch, shrinks what it found by a
line search, asks the exact hook (checking its claims) and hands the driver one
:class:`~mmargin.engine.driver.Candidate` per sample. The budget is split once by
:meth:`~mmargin.engine.spec.SearchSpec.plan`, with the exact hook's verification nudges
reserved when an exact method may answer. Under L0 (``p == 0``) the line search (it cannot
lower a count) only checks the flip, and a share of the budget goes to the support-shrinking
stage of :mod:`mmargin.engine.sparse` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmargin.engine.counting import CountingAdapter
from mmargin.engine.decision import decision_search, hybrid_search
from mmargin.engine.driver import CONTINUOUS, Batch, Candidate, Run, Units, run_batches
from mmargin.engine.fallback import FELL_BACK, MESSAGE, decision_fallback
from mmargin.engine.finish import apply_exact, line_search
from mmargin.engine.gradient import gradient_search
from mmargin.engine.l0rest import spend_rest
from mmargin.engine.problem import Problem
from mmargin.engine.sparse import sparse_finish, sparse_passes
from mmargin.engine.spec import NUDGES, ExactFn, Plan, ReportFn, SearchSpec
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Goal
from mmargin.results import SampleResult

SearchFn = Callable[[Run, Problem, int, Streams, int], SearchState]
"""``search(run, problem, passes, streams, classes)`` → what it found."""


def _gradient(run: Run, problem: Problem, passes: int, streams: Streams,
              classes: int) -> SearchState:  # fmt: skip
    if not run.model.differentiable:
        raise ValueError("the gradient strategy needs a differentiable model adapter")
    return gradient_search(problem, passes, run.spec.gradient, streams, classes)


def _decision(run: Run, problem: Problem, passes: int, streams: Streams,
              classes: int) -> SearchState:  # fmt: skip
    x = problem.x
    budget = torch.full((x.shape[0],), passes, dtype=torch.long, device=x.device)
    return decision_search(problem, budget, run.spec, streams, _pool(run))


def _hybrid(run: Run, problem: Problem, passes: int, streams: Streams,
            classes: int) -> SearchState:  # fmt: skip
    return hybrid_search(problem, passes, run.spec, streams, classes, _pool(run))


def _pool(run: Run) -> Tensor | None:
    pool = run.extra.get("pool")
    return pool if isinstance(pool, Tensor) else None


STRATEGIES: dict[str, SearchFn] = {"gradient": _gradient, "decision": _decision,
                                   "hybrid": _hybrid}  # fmt: skip
"""Continuous search strategies by name; ``auto`` picks ``gradient`` for differentiable
models (``hybrid`` on a space that rounds) and ``decision`` otherwise."""


def choose_strategy(differentiable: bool, requested: str, rounds: bool = False) -> str:
    """The strategy a run uses: the requested one, or the best for the model — ``hybrid``
    for a differentiable model on a space that ``rounds`` its relaxation (integers,
    categories: a gradient flip may not survive the rounding, the decision-based polish
    repairs it)."""
    if requested != "auto":
        return requested
    if differentiable:
        return "hybrid" if rounds else "gradient"
    return "decision"


@dataclass
class ContinuousSearch:
    """A continuous strategy (``name``: gradient, decision, hybrid or exact) with the
    shared finishing steps: line search, exact hook, candidate records."""

    name: str
    exact: ExactFn | None = None

    def plan(self, run: Run) -> Plan:
        """The budget split for this run (exact nudges reserved when an exact method may
        answer)."""
        nudges = len(NUDGES) if self.exact is not None and run.spec.exact != "never" else 0
        sparse = _sparse_reserve(run)
        return run.spec.plan(reserve=nudges + run.spec.report_passes + 1 + sparse)

    def search(self, run: Run, batch: Batch, rows: list[int]) -> list[Candidate]:
        """Search, line-search and ask the exact hook for the samples ``rows`` of ``batch``."""
        plan = self.plan(run)
        sel = torch.as_tensor(rows, dtype=torch.long, device=batch.labels.device)
        problem = run.problem(batch.inputs, batch.labels, batch.targets).rows(sel)
        x = problem.x
        streams = batch.streams.subset(rows)
        if self.name == "exact" or plan.search < 1:
            state = SearchState.empty(x)
        else:
            state = STRATEGIES[self.name](run, problem, plan.search, streams, batch.classes)
            if self.name == "gradient":
                state = decision_fallback(problem, plan.search, state, run.spec, streams,
                                          _pool(run))  # fmt: skip
        queries = state.queries.clone()
        best, norms = torch.zeros_like(x), torch.full_like(state.best_norm, math.inf)
        found = torch.isfinite(state.best_norm)
        unverified = torch.zeros_like(found)  # a candidate no pass has seen flip (yet)
        if found.any():
            f = found.nonzero().squeeze(1)
            sparse = self.name != "exact" and _sparse_reserve(run) > 0
            delta, passes, seen = line_search(
                problem.rows(f), state.best_delta[f], 0 if sparse else plan.line_search, check=True
            )
            queries[f] += passes
            if sparse:  # L0: the line search's steps and what the search left go to the stage
                s = f[seen]
                left = _sparse_reserve(run) + plan.line_search + plan.search - state.queries[s]
                other = None if state.alternate is None else state.alternate[s]
                flips = problem.rows(s)
                delta[seen], used = sparse_finish(flips, delta[seen], left.clamp(min=0), other)
                queries[s] += used
                # what the stage left: more smooth-L0 runs, shrunk (mmargin.engine.l0rest)
                delta[seen], more = spend_rest(flips, delta[seen], (left - used).clamp(min=0))
                queries[s] += more
            best[f] = delta
            norms[f] = run.distance.norm(delta)
            unverified[f] = ~seen
        out = []
        scale = run.distance.norm(x)
        for j, i in enumerate(rows):
            out.append(self._finish(run, batch.ids[i], problem.rows(slice(j, j + 1)), j, best,
                                    norms, int(queries[j]), float(scale[j]),
                                    bool(unverified[j])))  # fmt: skip
            out[-1].indicators = state.raised(j)
            if FELL_BACK in out[-1].indicators:
                out[-1].method = "decision" if out[-1].method == "gradient" else out[-1].method
                out[-1].message = "; ".join(m for m in (MESSAGE, out[-1].message) if m)
        return out

    def _finish(
        self, run: Run, sample: str, one: Problem, j: int, best: Tensor, norms: Tensor,
        queries: int, scale: float, unverified: bool,
    ) -> Candidate:  # fmt: skip
        """The exact hook for sample ``j`` (``one``: its row of the problem), then its
        candidate. A search candidate no pass saw flip bounds nothing: the exact hook is
        asked as if none was found, and its verified flip wins (``auto`` never drops a
        verified flip for an unverified one)."""
        method, lower, notes, bound = self.name, None, [], None
        if self.exact is not None and run.spec.exact != "never":
            left = run.spec.budget - 2 - queries - run.spec.report_passes - run.spec.baseline_passes
            upper = math.inf if unverified else float(norms[j])
            got = apply_exact(self.exact, one, upper, sample, left)
            queries += got.passes
            lower, notes, bound = got.lower, got.notes, got.bound_method
            if got.delta is not None:
                best[j], norms[j] = got.delta[0], got.size
            if got.method is not None:
                method = got.method
        margin = float(norms[j])
        extras = {"notes": notes} if notes else {}
        if not math.isfinite(margin):
            why = f"no flip found within {run.spec.budget} passes"
            if lower == math.inf:  # an exact method proved that no flip exists
                why = f"no flip exists in this space (proven by {method})"
            return Candidate(None, math.inf, lower, method, queries, scale, why, extras,
                             bound_method=bound)  # fmt: skip
        adversarial = run.space.finalize(one.x, one.x + best[j : j + 1])[0]
        message = "; ".join(notes)
        return Candidate(adversarial, margin, lower, method, queries, scale, message, extras,
                         bound_method=bound)  # fmt: skip


def _sparse_reserve(run: Run) -> int:
    """Passes per sample set aside for the L0 finishing stage (:mod:`mmargin.engine.sparse`):
    a share of the budget when the distance is L0 and the model gives gradients, else none."""
    if getattr(run.distance, "p", None) != 0.0 or not run.model.differentiable:
        return 0
    return sparse_passes(run.spec.budget)


POOL_SIZE = 256
"""Rows of the run's own data the decision strategy may start from (class-balanced)."""


def starting_pool(x: np.ndarray, labels: np.ndarray, good: list[int], seed: int) -> np.ndarray:
    """Up to :data:`POOL_SIZE` valid rows of the run, as many of each class as possible,
    picked by the run's seed: starting points that do not depend on the batch."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i in rng.permutation(np.asarray(good, dtype=np.int64)).tolist():
        by_class.setdefault(int(labels[i]), []).append(int(i))
    picked: list[int] = []
    queues = [by_class[c] for c in sorted(by_class)]
    depth = 0
    while len(picked) < POOL_SIZE and any(depth < len(q) for q in queues):
        picked.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return x[sorted(picked[:POOL_SIZE])]


def flip_continuous(
    model: Any, space: Any, distance: Any, x: np.ndarray, labels: np.ndarray,
    ids: list[str], *, goal: Goal, spec: SearchSpec, exact: ExactFn | None = None,
    report: ReportFn | None = None, progress: Callable[[int], None] | None = None,
    units: Units | None = None,
) -> list[SampleResult]:  # fmt: skip
    """The driver on a continuous space (see :func:`mmargin.engine.minimal_flip`)."""
    if spec.strategy not in ("auto", "exact", *STRATEGIES):
        raise ValueError(f"strategy: expected auto, exact or one of {sorted(STRATEGIES)} for "
                         f"the continuous space {space.name!r}, got {spec.strategy!r}")  # fmt: skip
    counted = CountingAdapter(model)
    rounds = bool(getattr(space, "rounds", False))
    chosen = choose_strategy(counted.differentiable, spec.strategy, rounds)
    name = "exact" if spec.exact == "only" else chosen
    problems = space.check(x)
    run = Run(counted, space, distance, goal, spec, report)
    space_pool = [] if space.reference is None else [np.asarray(space.reference, np.float32)]
    if name != "exact":  # the decision strategy's starts (also its fallback's)
        good = [i for i, p in enumerate(problems) if p is None]
        rows = [*space_pool, starting_pool(x, labels, good, spec.seed).astype(np.float32)]
        rows = [r.reshape(r.shape[0], -1) for r in rows if len(r)]
        if rows and len({r.shape[1] for r in rows}) == 1:
            run.extra["pool"] = torch.as_tensor(np.concatenate(rows), device=counted.device)
    return run_batches(run, CONTINUOUS, ContinuousSearch(name, exact), x, labels, ids,
                       problems, progress, units)  # fmt: skip
