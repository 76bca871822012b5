"""Minimal-flip search over discrete spaces: the fewest (cheapest) edits that flip a model.

A *discrete space* describes, for one input, which positions may change, what each
position may become and what each change costs; the engine does everything else — the
clean pass, word-importance ordering, greedy or beam search, exhaustive enumeration for
short inputs (a proven minimum), pruning of needless edits, the query budget and the
re-verification of every adversarial before it is reported — and returns the same
:class:`~mmargin.results.SampleResult` records as the gradient strategy. Text (word and
character edits) is one user; categorical features or token sequences are others.

The contract, kept small on purpose:

* a space (:class:`DiscreteSpace`) has ``discrete = True`` (the runner dispatches on it),
  ``check(inputs)`` for per-sample problems and ``problem(model, x)`` which prepares one
  input and returns a :class:`DiscreteProblem`;
* a problem lists its ``positions()``, the ``candidates(position)`` at each (as
  :class:`Edit` records carrying their cost) and can ``apply(edits)`` to produce the
  edited input the model is queried on.

Optional problem methods the engine uses when present: ``admissible(edits) -> bool``
(constraints on a whole combination), ``neutral(position) -> Edit | None`` (a masking edit
for leave-one-out importance), ``rank(goal, label, target) -> Ranking | None`` (cheap
importance, e.g. from gradients), ``size() -> float`` (denominator of the relative
margin), ``report(edits, adversarial) -> dict`` (extras such as the adversarial text) and
``notes`` (a list of strings, e.g. that the input was truncated).

The model adapter of a discrete space maps a *list of inputs* (strings for text) to a
score tensor ``(B, K)``; every input scored counts as one query, a gradient ranking as two
(one forward, one backward pass).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmargin.goals import Goal, Untargeted
from mmargin.results import SampleResult, Status


@dataclass(frozen=True)
class Edit:
    """One change at one position: ``value`` replaces what is there, at ``cost``.

    ``value`` must be hashable (a word, a token id, a category); ``text`` is what a person
    reads in a report (``"good -> gud"``).
    """

    position: int
    value: Any
    cost: float = 1.0
    text: str = ""

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view of the edit for ``SampleResult.extras``."""
        return {
            "position": self.position,
            "value": _plain(self.value),
            "cost": self.cost,
            "text": self.text,
        }


@dataclass(frozen=True)
class Ranking:
    """Importance of positions for one input (larger = try first) and what it cost.

    ``queries`` counts model passes (a forward + backward gradient ranking is 2).
    ``estimates`` optionally maps a position to the estimated change of the goal's loss
    for each of its candidates (same order as ``candidates(position)``); the search then
    evaluates the most promising candidates first.
    """

    importance: Mapping[int, float]
    queries: int
    estimates: Mapping[int, np.ndarray] | None = None


@runtime_checkable
class DiscreteProblem(Protocol):
    """One input prepared for the discrete search (built by :meth:`DiscreteSpace.problem`)."""

    def positions(self) -> Sequence[int]:
        """The positions that may change (possibly none)."""
        ...

    def candidates(self, position: int) -> Sequence[Edit]:
        """The allowed edits at ``position``, after the space's constraints."""
        ...

    def apply(self, edits: Sequence[Edit]) -> Any:
        """The input with ``edits`` (at distinct positions) applied."""
        ...


@runtime_checkable
class DiscreteSpace(Protocol):
    """A perturbation space of discrete edits; the runner dispatches on ``discrete``.

    ``search_config`` (optional attribute, a :class:`DiscreteConfig`) carries the search
    knobs that a task file sets in its ``[space]`` table.
    """

    name: str
    modality: str
    discrete: bool

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        """Per input, ``None`` when it can be searched or a message saying why not."""
        ...

    def problem(self, model: Any, x: Any) -> DiscreteProblem:
        """Prepare one input (positions, candidates) for ``model``."""
        ...


ORDERS = ("auto", "rank", "leave-one-out", "best-single", "none")
"""How positions are ordered before the search (see :class:`DiscreteConfig`)."""


@dataclass(frozen=True)
class DiscreteConfig:
    """Knobs of the discrete search.

    ``method``: ``greedy`` (positions in importance order, the best candidate at each kept
    when it lowers the loss — TextAttack's greedy-WIR walk, with re-ranking and pruning),
    ``beam`` (``beam_width`` partial solutions, each level adds one edit at one of the
    ``beam_width`` most important free positions) or ``exhaustive`` (every combination,
    cheapest first: a proven minimum, for short inputs). ``order``: ``auto`` (the problem's
    own ``rank`` when the model is differentiable, else leave-one-out), ``rank``,
    ``leave-one-out`` (one query per position, with the problem's ``neutral`` edit),
    ``best-single`` (every single edit scored first: exact gains for additive models, one
    query per candidate) or ``none``. ``rerank`` re-ranks the free positions after each kept
    edit (only with ``rank``). ``prune`` drops kept edits that the flip does not need.
    ``exhaustive_limit`` caps the combinations enumerated, whether to prove a lower bound
    after the search (``exact = "auto"``) or in ``exhaustive`` mode.
    """

    method: str = "greedy"
    beam_width: int = 4
    order: str = "auto"
    rerank: bool = True
    prune: bool = True
    exhaustive_limit: int = 400

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam", "exhaustive"):
            raise ValueError(f"method: expected greedy, beam or exhaustive, got {self.method!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order: expected one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.beam_width < 1 or self.exhaustive_limit < 0:
            raise ValueError("beam_width must be >= 1 and exhaustive_limit >= 0")


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)


def _config(space: Any, spec: Any) -> DiscreteConfig:
    config = getattr(space, "search_config", None) or DiscreteConfig()
    if spec.strategy in ("greedy", "beam", "exhaustive"):
        config = DiscreteConfig(**{**config.__dict__, "method": spec.strategy})
    elif spec.strategy not in ("auto", "discrete"):
        raise ValueError(
            f"strategy {spec.strategy!r} cannot search the discrete space "
            f"{space.name!r}; use auto, greedy, beam or exhaustive"
        )
    if spec.exact == "only":
        config = DiscreteConfig(**{**config.__dict__, "method": "exhaustive"})
    return config


def discrete_flip(
    model: Any,
    space: Any,
    distance: Any,
    x: Sequence[Any] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    ids: Sequence[str] | None = None,
    *,
    goal: Goal | None = None,
    spec: Any = None,
    exact: Callable[..., Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SampleResult]:
    """The fewest-edit verified flip of every input (``minimal_flip`` for discrete spaces).

    ``distance`` names the units (``name``) and may ``measure(x, x_adv, edits)`` the final
    margin (default: the summed edit costs). Exact-margin hooks are not consulted: the
    exhaustive enumeration is this strategy's exact method. Per-sample failures (bad
    input, a model that raises) become ``error`` results; the run goes on.
    """
    from mmargin.engine.discrete_run import result_record, search_one
    from mmargin.engine.runner import SearchSpec

    if getattr(space, "relaxed", False):
        from mmargin.engine.discrete_relaxed import relaxed_flip

        return relaxed_flip(
            model, space, distance, x, labels, ids, goal=goal, spec=spec, progress=progress
        )
    goal = goal or Untargeted()
    spec = spec or SearchSpec()
    config = _config(space, spec)
    inputs = list(x)
    label_list = [int(v) for v in np.asarray(labels).reshape(-1)]
    names = [str(i) for i in (ids if ids is not None else range(len(label_list)))]
    if len(inputs) != len(label_list) or len(names) != len(inputs):
        raise ValueError(f"got {len(inputs)} inputs, {len(label_list)} labels and {len(names)} ids")
    problems = space.check(inputs)
    out: list[SampleResult] = []
    for i, (item, label, name) in enumerate(zip(inputs, label_list, names, strict=True)):
        if problems[i] is not None:
            out.append(
                result_record(space, distance, name, label, Status.ERROR, message=problems[i])
            )
        else:
            out.append(search_one(model, space, distance, goal, spec, config, item, label, name))
        if progress is not None:
            progress(1)
    return out


@dataclass
class Found:
    """What a discrete search returns: the best flipping edits (``None`` if none), a proven
    lower bound on the cost of any flip, the method that found it and why it stopped."""

    edits: tuple[Edit, ...] | None
    lower: float | None
    method: str
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)
