"""Discrete inputs searched through a continuous encoding (text through its embeddings).

A relaxed space (:class:`~mmargin.protocols.RelaxedSpace`) encodes each discrete input as
a point of a continuous space — for text, the sequence of input-embedding vectors the
model reads. The driver searches those points like any continuous input (``margin`` = the
Lp size of the perturbation of the point, verified like any continuous margin); each
verified adversarial point is then *decoded* back to a discrete input (nearest-token
projection) and scored once more — a pass reserved in the budget — so each result says
whether the projection still flips (``extras["projection_flips"]``), next to the projected
input itself.

Inputs are grouped by encoded shape and frozen rows (same number of tokens), so each group
is one batched continuous search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mmargin.distances import LpDistance
from mmargin.engine.continuous import flip_continuous
from mmargin.engine.counting import CountingAdapter
from mmargin.engine.spec import SearchSpec
from mmargin.goals import Goal
from mmargin.protocols import Encoding, RelaxedSpace
from mmargin.results import SampleResult, Status, result_record
from mmargin.spaces import ContinuousSpace

DECODE_PASSES = 1
"""Passes set aside per sample to score the decoded input."""


def relaxed_flip(
    model: Any, space: RelaxedSpace, distance: Any, x: Sequence[Any] | np.ndarray,
    labels: np.ndarray, ids: list[str], *, goal: Goal, spec: SearchSpec,
    progress: Callable[[int], None] | None = None,
) -> list[SampleResult]:  # fmt: skip
    """Gradient minimal flips in the encoding space of a relaxed space, with projections."""
    if not isinstance(distance, LpDistance):
        raise ValueError(
            f"space {space.name!r} searches a continuous encoding and needs an Lp "
            f"distance (l2 ...), got {type(distance).__name__}"
        )
    inputs = list(x)
    label_list = [int(v) for v in labels]
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
            results[i] = result_record(ids[i], label_list[i], Status.ERROR, message=message,
                                       modality=space.modality, space=space.name,
                                       distance=distance.name)  # fmt: skip
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, enc in encodings.items():
        free = None if enc.free is None else np.broadcast_to(enc.free, enc.point.shape)
        key = (enc.point.shape, None if free is None else free.tobytes())
        groups.setdefault(key, []).append(i)
    adapter = space.continuous_model(model) if groups else None
    decoder = CountingAdapter(model)
    inner = dataclasses.replace(
        spec, budget=max(spec.budget - DECODE_PASSES, 1),
        strategy="gradient" if spec.strategy in ("auto", "discrete") else spec.strategy,
    )  # fmt: skip
    for members in groups.values():
        first = encodings[members[0]]
        mask = (None if first.free is None
                else np.broadcast_to(first.free, first.point.shape).astype(np.float64))  # fmt: skip
        cspace = ContinuousSpace(name=space.name, modality=space.modality, mask=mask,
                                 sample_shape=first.point.shape)  # fmt: skip
        points = np.stack([encodings[i].point for i in members]).astype(np.float32)
        found = flip_continuous(adapter, cspace, distance, points,
                                np.asarray([label_list[i] for i in members]),
                                [ids[i] for i in members], goal=goal, spec=inner)  # fmt: skip
        for i, result in zip(members, found, strict=True):
            results[i] = _project(decoder, model, space, goal, inputs[i], encodings[i], result,
                                  spec.budget)  # fmt: skip
        if progress is not None:
            progress(len(members))
    if progress is not None and len(encodings) < len(inputs):
        progress(len(inputs) - len(encodings))
    return [r for r in results if r is not None]


def _project(
    decoder: CountingAdapter, model: Any, space: RelaxedSpace, goal: Goal, x: Any,
    enc: Encoding, result: SampleResult, budget: int,
) -> SampleResult:  # fmt: skip
    """Decode a verified adversarial point and check whether the decoded input flips."""
    extras: dict[str, Any] = dict(result.extras)
    if enc.notes:
        extras["notes"] = list(enc.notes)
    if result.status is not Status.FLIPPED or result.adversarial is None:
        return dataclasses.replace(result, extras=extras)
    before = decoder.passes
    try:
        projected, more = space.decode(model, x, enc, np.asarray(result.adversarial))
        extras.update(more)
        if more.get("implausible"):
            extras["implausible_margin"] = result.margin
            return dataclasses.replace(
                result, status=Status.NOT_FLIPPED, margin=float("inf"), adv_label=None,
                relative_margin=None, lower_bound=None, verified=False, adversarial=None,
                message=f"implausible flip: {more['implausible']}", extras=extras,
            )  # fmt: skip
        if result.queries + DECODE_PASSES <= budget:
            with torch.no_grad():
                scores = decoder([projected])
            label = torch.tensor([result.label])
            flips = bool(torch.isfinite(scores).all()) and bool(
                goal.is_adversarial(scores, label, goal.targets_for(label))[0]
            )
            extras.update(projection=projected, projection_label=int(goal.decide(scores)[0]),
                          projection_flips=flips)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - decoding is user code; the margin stands
        extras["projection_error"] = f"{type(exc).__name__}: {exc}"
    queries = result.queries + decoder.passes - before
    return dataclasses.replace(result, extras=extras, queries=queries)
