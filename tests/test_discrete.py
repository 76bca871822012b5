"""The discrete strategy against exact oracles, on a generic (non-text) token space.

Oracles: (1) a bag-of-words linear classifier, where the fewest substitutions that flip it
are found by sorting the per-position best weight differences; (2) brute force over every
combination of substitutions on short inputs for a non-linear model. The greedy and beam
results must never be below the exact minimum and equal it on >= 95% of the cases; the
exhaustive mode must equal it and prove it (lower bound = margin).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from mmargin.engine import minimal_flip
from mmargin.engine.spec import DiscreteConfig, SearchSpec
from mmargin.goals import Targeted
from mmargin.protocols import Edit, ProblemBase, Ranking
from mmargin.results import Status

VOCAB = 40


@dataclass
class TokenProblem(ProblemBase):
    """One token sequence; each position may take any token of its synonym group."""

    tokens: tuple[int, ...]
    groups: Sequence[Sequence[int]]
    weights: np.ndarray | None = None

    def positions(self) -> list[int]:
        return list(range(len(self.tokens)))

    def candidates(self, position: int) -> list[Edit]:
        word = self.tokens[position]
        return [Edit(position, c, 1.0, f"{word}->{c}") for c in self.groups[word] if c != word]

    def apply(self, edits: Sequence[Edit]) -> tuple[int, ...]:
        out = list(self.tokens)
        for e in edits:
            out[e.position] = e.value
        return tuple(out)

    def neutral(self, position: int) -> Edit:
        return Edit(position, 0, 1.0)  # token 0 has weight 0: leave-one-out

    def size(self) -> float:
        return float(len(self.tokens))


@dataclass
class RankedProblem(TokenProblem):
    """Adds the first-order ranking a differentiable model allows (exact for linear models)."""

    def rank(self, goal: Any, label: int, targets: Any, current: Sequence[Edit]) -> Ranking:
        assert self.weights is not None
        sign = 1.0 if label == 1 else -1.0
        tokens = self.apply(current)
        estimates = {
            p: np.array(
                [
                    sign * (self.weights[e.value] - self.weights[tokens[p]])
                    for e in self.candidates(p)
                ]
            )
            for p in self.positions()
        }
        importance = {p: -float(v.min()) if v.size else -math.inf for p, v in estimates.items()}
        return Ranking(importance=importance, queries=2, estimates=estimates)


@dataclass
class TokenSpace:
    """A discrete space of token substitutions within synonym groups."""

    groups: Sequence[Sequence[int]]
    weights: np.ndarray | None = None
    ranked: bool = False
    search_config: DiscreteConfig | None = None
    name: str = "tokens"
    modality: str = "tokens"
    discrete: bool = True

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        return [None if len(x) else "empty input" for x in inputs]

    def problem(self, model: Any, x: Any) -> TokenProblem:
        cls = RankedProblem if self.ranked else TokenProblem
        return cls(tuple(int(t) for t in x), self.groups, self.weights)


@dataclass
class EditCount:
    name: str = "edits"

    def measure(self, x: Any, x_adv: Any, edits: Sequence[Edit]) -> float:
        return float(sum(e.cost for e in edits))


class BlackBox:
    """A model over token tuples that counts how many inputs it scored."""

    def __init__(
        self, score: Callable[[tuple[int, ...]], float], differentiable: bool = False
    ) -> None:
        self.score, self.differentiable = score, differentiable
        self.device = torch.device("cpu")
        self.seen = 0

    def __call__(self, batch: Sequence[tuple[int, ...]]) -> torch.Tensor:
        self.seen += len(batch)
        s = torch.tensor([self.score(tuple(x)) for x in batch], dtype=torch.float64)
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _groups(rng: np.random.Generator, size: int = 4) -> list[list[int]]:
    """Random synonym groups over tokens 1..VOCAB-1 (token 0 is the neutral token)."""
    order = rng.permutation(np.arange(1, VOCAB))
    groups: list[list[int]] = [[0]] * VOCAB
    for start in range(0, len(order), size):
        group = [int(t) for t in order[start : start + size]]
        for t in group:
            groups[t] = group
    return groups


def bow_minimum(tokens: Sequence[int], groups: Sequence[Sequence[int]], w: np.ndarray) -> float:
    """Exact fewest substitutions for a linear bag-of-words score: sort the best gains."""
    s = float(sum(w[t] for t in tokens))
    sign = 1.0 if s > 0 else -1.0
    gains = [max(sign * w[t] - min(sign * w[c] for c in groups[t]), 0.0) for t in tokens]
    gains.sort(reverse=True)
    left = sign * s
    for k, g in enumerate(gains, start=1):
        left -= g
        if left < -1e-4:
            return float(k)
    return math.inf


def _bow_cases(seed: int, n: int) -> tuple[np.ndarray, list[list[int]], list[tuple[int, ...]]]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=VOCAB)
    w[0] = 0.0
    groups = _groups(rng)
    cases = []
    while len(cases) < n:
        tokens = tuple(int(t) for t in rng.integers(1, VOCAB, size=int(rng.integers(4, 12))))
        s = sum(w[t] for t in tokens)
        if abs(s) > 1e-3:
            cases.append(tokens)
    return w, groups, cases


def _run(
    model: BlackBox,
    space: TokenSpace,
    inputs: Sequence[tuple[int, ...]],
    labels: Sequence[int],
    **spec: Any,
) -> list[Any]:
    x = np.empty(len(inputs), dtype=object)
    x[:] = list(inputs)
    return minimal_flip(
        model,
        space,
        EditCount(),
        x,
        np.asarray(labels),
        spec=SearchSpec(**{"budget": 5000, **spec}),
    )


@pytest.mark.parametrize(
    ("ranked", "method", "order", "needed"),
    [
        (True, "greedy", "auto", 1.0),
        (False, "greedy", "best-single", 1.0),
        (False, "beam", "auto", 0.95),
        (False, "greedy", "auto", 0.85),
    ],
)
def test_bow_linear_oracle(ranked: bool, method: str, order: str, needed: float) -> None:
    """Gradient ranking (exact for a linear model) and best-single ordering make greedy
    optimal; the beam reaches >= 95%; cheap leave-one-out greedy is reported at >= 85%."""
    w, groups, cases = _bow_cases(seed=1, n=120)
    model = BlackBox(lambda t: float(sum(w[i] for i in t)), differentiable=ranked)
    config = DiscreteConfig(method=method, order=order)
    space = TokenSpace(groups, w, ranked=ranked, search_config=config)
    labels = [int(sum(w[t] for t in c) > 0) for c in cases]
    results = _run(model, space, cases, labels, exact="never")
    agree = total = 0
    for case, r in zip(cases, results, strict=True):
        exact = bow_minimum(case, groups, w)
        if math.isinf(exact):
            assert r.status is Status.NOT_FLIPPED
            continue
        assert r.status is Status.FLIPPED and r.verified, r.message
        assert r.margin >= exact  # never below the proven minimum
        assert r.queries <= 5000
        assert len(r.extras["edits"]) == r.margin
        total += 1
        agree += r.margin == exact
    assert total >= 80
    assert agree / total >= needed, f"{agree}/{total}"


def _interaction_model(seed: int) -> tuple[Callable[[tuple[int, ...]], float], np.ndarray]:
    """A non-linear score: bag of words plus pairwise interactions of neighbours."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=VOCAB)
    pair = rng.normal(scale=0.6, size=(VOCAB, VOCAB))

    def score(t: tuple[int, ...]) -> float:
        return float(sum(w[i] for i in t) + sum(pair[a, b] for a, b in itertools.pairwise(t)))

    return score, w


def brute_force(
    tokens: tuple[int, ...],
    groups: Sequence[Sequence[int]],
    score: Callable[[tuple[int, ...]], float],
    label: int,
) -> float:
    """The fewest substitutions that flip ``score``'s sign, by trying every combination."""
    options = [[c for c in groups[t] if c != t] for t in tokens]
    for k in range(1, len(tokens) + 1):
        for positions in itertools.combinations(range(len(tokens)), k):
            for values in itertools.product(*(options[p] for p in positions)):
                new = list(tokens)
                for p, v in zip(positions, values, strict=True):
                    new[p] = v
                s = score(tuple(new))
                if (s < 0 if label == 1 else s > 0) and abs(s) > 1e-4 * (1 + abs(s)):
                    return float(k)
    return math.inf


@pytest.fixture(scope="module")
def short_cases() -> tuple[Any, list[list[int]], list[tuple[int, ...]], list[int], list[float]]:
    """Short inputs for a non-linear model, with their brute-force minima."""
    score, _ = _interaction_model(seed=3)
    rng = np.random.default_rng(4)
    groups = _groups(rng, size=3)
    cases = [
        tuple(int(t) for t in rng.integers(1, VOCAB, size=int(rng.integers(3, 6))))
        for _ in range(80)
    ]
    cases = [c for c in cases if abs(score(c)) > 1e-3]
    labels = [int(score(c) > 0) for c in cases]
    exact = [brute_force(c, groups, score, y) for c, y in zip(cases, labels, strict=True)]
    assert sum(math.isfinite(e) for e in exact) >= 40
    return score, groups, cases, labels, exact


def test_exhaustive_equals_brute_force(short_cases: Any) -> None:
    score, groups, cases, labels, exact = short_cases
    space = TokenSpace(groups, search_config=DiscreteConfig(method="exhaustive"))
    for e, f in zip(exact, _run(BlackBox(score), space, cases, labels), strict=True):
        assert f.margin == e, (f.margin, e, f.message)
        assert f.lower_bound == e  # proven: lower bound = margin (inf: no flip exists)
        if math.isfinite(e):
            assert f.exact and f.status is Status.FLIPPED
        else:
            assert "no flip exists" in f.message


@pytest.mark.parametrize(
    ("method", "order", "needed"),
    [("beam", "auto", 0.95), ("greedy", "best-single", 0.95), ("greedy", "auto", 0.9)],
)
def test_search_matches_brute_force(
    short_cases: Any, method: str, order: str, needed: float
) -> None:
    """Beam and best-single greedy reach >= 95% of the exact minima (measured: 100% and
    99%); the cheapest mode, leave-one-out greedy, >= 90% (measured 95%)."""
    score, groups, cases, labels, exact = short_cases
    space = TokenSpace(groups, search_config=DiscreteConfig(method=method, order=order))
    found = _run(BlackBox(score), space, cases, labels, exact="never")
    pairs = [(e, r.margin) for e, r in zip(exact, found, strict=True) if math.isfinite(e)]
    assert all(m >= e for e, m in pairs)  # never below the minimum
    agree = sum(m == e for e, m in pairs)
    assert agree / len(pairs) >= needed, f"{agree}/{len(pairs)}"


def test_auto_exact_proves_small_margins() -> None:
    score, _ = _interaction_model(seed=5)
    rng = np.random.default_rng(6)
    groups = _groups(rng, size=3)
    cases = [tuple(int(t) for t in rng.integers(1, VOCAB, size=5)) for _ in range(30)]
    labels = [int(score(c) > 0) for c in cases]
    results = _run(BlackBox(score), TokenSpace(groups), cases, labels, exact="auto")
    for c, y, r in zip(cases, labels, results, strict=True):
        e = brute_force(c, groups, score, y)
        assert r.margin >= e
        if r.lower_bound is not None:
            assert r.lower_bound <= e  # a lower bound is never above the truth
        if r.margin <= 2 and r.status is Status.FLIPPED:  # level 1 (10 combos) fits the limit
            assert r.exact


def test_budget_is_respected_and_counted() -> None:
    w, groups, cases = _bow_cases(seed=7, n=20)
    labels = [int(sum(w[t] for t in c) > 0) for c in cases]
    for budget in (3, 8, 25):
        model = BlackBox(lambda t: float(sum(w[i] for i in t)))
        results = _run(model, TokenSpace(groups), cases, labels, budget=budget, exact="never")
        assert all(r.queries <= budget for r in results)
        assert sum(r.queries for r in results) == model.seen  # every scored input counted


def test_statuses_misclassified_errors_and_no_candidates() -> None:
    w = np.ones(VOCAB)
    groups: list[list[int]] = [[t] for t in range(VOCAB)]  # nothing can change
    groups[5] = [5, 6]

    def score(t: tuple[int, ...]) -> float:
        if 13 in t:
            raise RuntimeError("model exploded")
        return float(sum(w[i] for i in t)) - (10.0 if 6 in t else 0.0)

    space = TokenSpace(groups, w)
    inputs = [(1, 2), (1, 2), (5, 1), (13, 1), ()]
    results = _run(BlackBox(score), space, inputs, [1, 0, 1, 1, 1])
    assert results[0].status is Status.NOT_FLIPPED and results[0].lower_bound == math.inf
    assert "no position" in results[0].message
    assert results[1].status is Status.MISCLASSIFIED and results[1].margin == 0
    assert results[2].status is Status.FLIPPED and results[2].margin == 1 and results[2].exact
    assert results[2].adversarial == (6, 1) and results[2].relative_margin == 0.5
    assert results[3].status is Status.ERROR and "model exploded" in results[3].message
    assert results[4].status is Status.ERROR and results[4].message == "empty input"


def test_targeted_goal_and_strategy_names() -> None:
    w, groups, cases = _bow_cases(seed=9, n=10)
    cases = [c for c in cases if sum(w[t] for t in c) > 0]
    model = BlackBox(lambda t: float(sum(w[i] for i in t)))
    x = np.empty(len(cases), dtype=object)
    x[:] = cases
    out = minimal_flip(
        model,
        TokenSpace(groups),
        EditCount(),
        x,
        np.ones(len(cases)),
        goal=Targeted(target=0),
        spec=SearchSpec(strategy="beam"),
    )
    assert all(r.strategy.startswith("discrete:") for r in out)
    assert all(r.adv_label == 0 for r in out if r.status is Status.FLIPPED)
    with pytest.raises(ValueError, match="cannot search the discrete space"):
        minimal_flip(
            model,
            TokenSpace(groups),
            EditCount(),
            x,
            np.ones(len(cases)),
            spec=SearchSpec(strategy="gradient"),
        )
