"""Discrete inputs searched through a continuous encoding (text through its embeddings).

A *relaxed* space (``discrete = True`` and ``relaxed = True``) encodes each discrete input
as a point of a continuous space — for text, the sequence of input-embedding vectors the
model reads — runs the shared gradient strategy there (``margin`` = the Lp size of the
perturbation of that point, verified by the engine like any continuous margin) and then
*decodes* the adversarial point back to a discrete input (nearest-token projection). The
decoded input is scored once more, so each result says whether the projection still flips
(``extras["projection_flips"]``), next to the projected input itself.

Inputs are grouped by encoded shape and frozen rows (same number of tokens), so each group
is one batched continuous search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from mmargin.engine.discrete_run import decided_class
from mmargin.goals import Goal, Untargeted
from mmargin.results import SampleResult, Status


@dataclass(frozen=True)
class Encoding:
    """One input as a continuous point: ``point`` (float32, e.g. tokens × dims), ``free``
    (1 where a coordinate may change, broadcastable to ``point``; ``None``: all), ``notes``
    for the report (truncation ...) and ``info``, private to the space (token ids ...)."""

    point: np.ndarray
    free: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    info: Any = None


@runtime_checkable
class RelaxedSpace(Protocol):
    """What a relaxed space provides to :func:`relaxed_flip`."""

    name: str
    modality: str
    discrete: bool
    relaxed: bool

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        """Per input, ``None`` when it can be searched or a message saying why not."""
        ...

    def encode(self, model: Any, x: Any) -> Encoding:
        """The continuous point the model reads for input ``x``."""
        ...

    def continuous_model(self, model: Any) -> Any:
        """A differentiable adapter mapping a batch of points ``(B, *shape)`` to scores."""
        ...

    def decode(
        self, model: Any, x: Any, encoding: Encoding, point: np.ndarray
    ) -> tuple[Any, dict[str, Any]]:
        """The discrete input nearest to an adversarial ``point``, and extras to report."""
        ...


def relaxed_flip(
    model: Any,
    space: Any,
    distance: Any,
    x: Sequence[Any] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    ids: Sequence[str] | None = None,
    *,
    goal: Goal | None = None,
    spec: Any = None,
    progress: Callable[[int], None] | None = None,
) -> list[SampleResult]:
    """Gradient minimal flips in the encoding space of a relaxed space, with projections."""
    from mmargin.distances import LpDistance
    from mmargin.engine.runner import SearchSpec, minimal_flip
    from mmargin.spaces import ContinuousSpace

    if not isinstance(distance, LpDistance):
        raise ValueError(
            f"space {space.name!r} searches a continuous encoding and needs an Lp "
            f"distance (l2 ...), got {type(distance).__name__}"
        )
    goal = goal or Untargeted()
    spec = spec or SearchSpec()
    inputs = list(x)
    label_list = [int(v) for v in np.asarray(labels).reshape(-1)]
    names = [str(i) for i in (ids if ids is not None else range(len(label_list)))]
    if len(inputs) != len(label_list) or len(names) != len(inputs):
        raise ValueError(f"got {len(inputs)} inputs, {len(label_list)} labels and {len(names)} ids")
    results: list[SampleResult | None] = [None] * len(inputs)
    encodings: dict[int, Encoding] = {}
    for i, problem in enumerate(space.check(inputs)):
        message = problem
        if message is None:
            try:
                encodings[i] = space.encode(model, inputs[i])
            except Exception as exc:  # noqa: BLE001 - tokenizers are user code
                message = f"{type(exc).__name__}: {exc}"
        if message is not None:
            results[i] = _error(space, distance, names[i], label_list[i], message)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, enc in encodings.items():
        free = None if enc.free is None else np.broadcast_to(enc.free, enc.point.shape)
        key = (enc.point.shape, None if free is None else free.tobytes())
        groups.setdefault(key, []).append(i)
    adapter: Any = space.continuous_model(model) if groups else None
    for members in groups.values():
        first = encodings[members[0]]
        mask = (
            None
            if first.free is None
            else np.broadcast_to(first.free, first.point.shape).astype(np.float64)
        )
        cspace = ContinuousSpace(
            name=space.name, modality=space.modality, mask=mask, sample_shape=first.point.shape
        )
        points = np.stack([encodings[i].point for i in members]).astype(np.float32)
        found = minimal_flip(
            adapter,
            cspace,
            distance,
            points,
            np.asarray([label_list[i] for i in members]),
            [names[i] for i in members],
            goal=goal,
            spec=spec,
        )
        for i, result in zip(members, found, strict=True):
            results[i] = _project(model, space, goal, inputs[i], encodings[i], result)
        if progress is not None:
            progress(len(members))
    if progress is not None and len(encodings) < len(inputs):
        progress(len(inputs) - len(encodings))
    return [r for r in results if r is not None]


def _error(space: Any, distance: Any, sample: str, label: int, message: str) -> SampleResult:
    return SampleResult(
        sample=sample,
        modality=space.modality,
        space=space.name,
        distance=distance.name,
        label=label,
        pred_label=None,
        adv_label=None,
        margin=float("nan"),
        lower_bound=None,
        verified=False,
        queries=0,
        seconds=0.0,
        status=Status.ERROR,
        strategy="none",
        message=message,
    )


def _project(
    model: Any, space: Any, goal: Goal, x: Any, enc: Encoding, result: SampleResult
) -> SampleResult:
    """Decode a verified adversarial point and check whether the decoded input flips."""
    extras: dict[str, Any] = dict(result.extras)
    if enc.notes:
        extras["notes"] = list(enc.notes)
    if result.status is not Status.FLIPPED or result.adversarial is None:
        return dataclasses.replace(result, extras=extras)
    queries = result.queries
    try:
        projected, more = space.decode(model, x, enc, np.asarray(result.adversarial))
        extras.update(more)
        with torch.no_grad():
            scores = model([projected])
        queries += 1
        label = torch.tensor([result.label])
        targets_for = getattr(goal, "targets_for", None)
        targets = targets_for(label) if targets_for is not None else None
        flips = bool(torch.isfinite(scores).all()) and bool(
            goal.is_adversarial(scores, label, targets)[0]
        )
        extras.update(
            projection=projected,
            projection_label=decided_class(goal, scores),
            projection_flips=flips,
        )
    except Exception as exc:  # noqa: BLE001 - decoding is user code; the margin stands
        extras["projection_error"] = f"{type(exc).__name__}: {exc}"
    return dataclasses.replace(result, extras=extras, queries=queries)
