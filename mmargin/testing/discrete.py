"""Conformance checks for data loaders, discrete (and relaxed) spaces and edit distances.

A loader returns a :class:`~mmargin.data.Dataset` that the task's space accepts. A
discrete space prepares one input at a time as a problem: positions, candidate edits with
positive costs, and ``apply``, which must give the input back when no edit is applied. A
relaxed space encodes an input as a continuous point that its continuous model scores as
the model scores the input, and decodes the unperturbed point back to the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmargin.protocols import DiscreteProblem, DiscreteSpace, EditDistance, RelaxedSpace, space_kind
from mmargin.testing.contract import ConformanceError, require_protocol


def _fail(what: Any, message: str) -> None:
    raise ConformanceError(f"{type(what).__name__} {getattr(what, 'name', '')!r}: {message}")


# -- loaders ------------------------------------------------------------------------------
def _load(factory: Any, options: dict[str, Any]) -> Any:
    from mmargin.data import Dataset

    data = factory(**options)
    if not isinstance(data, Dataset):
        raise ConformanceError(
            f"loader {getattr(factory, '__name__', factory)!r} returned "
            f"{type(data).__name__}, expected mmargin.data.Dataset"
        )
    return data


def check_loader_dataset(factory: Any, options: dict[str, Any], space: Any = None) -> None:
    """A non-empty ``Dataset``: integer labels >= 0, one unique string id per sample,
    finite float inputs (or a sequence of inputs for discrete data)."""
    data = _load(factory, options)
    name = getattr(factory, "__name__", repr(factory))
    n = len(data)
    if n == 0:
        raise ConformanceError(f"loader {name!r} returned no samples with options {options}")
    y = np.asarray(data.y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or int(y.min()) < 0:
        raise ConformanceError(f"loader {name!r}: labels must be 1-D integers >= 0, got "
                               f"{y.dtype} of shape {y.shape}")  # fmt: skip
    ids = list(data.ids)
    if len(set(ids)) != n or not all(isinstance(i, str) for i in ids):
        raise ConformanceError(f"loader {name!r}: ids must be {n} unique strings")
    x = data.x
    if isinstance(x, np.ndarray) and x.dtype != object:
        if not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
            raise ConformanceError(f"loader {name!r}: x must be finite floats, got {x.dtype}")
    elif len(x) != n:
        raise ConformanceError(f"loader {name!r}: x holds {len(x)} inputs for {n} labels")


def check_loader_fits_space(factory: Any, options: dict[str, Any], space: Any = None) -> None:
    """Every sample passes the space's ``check`` (when the case names a space)."""
    if space is None:
        return
    data = _load(factory, options)
    x = data.x if space_kind(space) == "continuous" else list(data.x)
    problems = space.check(x)
    bad = [(i, p) for i, p in enumerate(problems) if p is not None]
    if bad:
        i, p = bad[0]
        raise ConformanceError(
            f"loader {getattr(factory, '__name__', factory)!r}: {len(bad)} samples fail "
            f"space {space.name!r}'s check; sample {data.ids[i]!r}: {p}"
        )


def check_loader_reproducible(factory: Any, options: dict[str, Any], space: Any = None) -> None:
    """Loading twice with the same options gives the same samples, labels and ids."""
    one, two = _load(factory, options), _load(factory, options)
    same_x = (
        np.array_equal(one.x, two.x)
        if isinstance(one.x, np.ndarray) and one.x.dtype != object
        else list(one.x) == list(two.x)
    )
    if not (same_x and np.array_equal(one.y, two.y) and list(one.ids) == list(two.ids)):
        raise ConformanceError(
            f"loader {getattr(factory, '__name__', factory)!r}: two loads with the same "
            f"options {options} gave different data (seed it)"
        )


LOADER_CHECKS = (check_loader_dataset, check_loader_fits_space, check_loader_reproducible)


def check_loader(factory: Any, space: Any = None, **options: Any) -> None:
    """Run every loader check on ``factory(**options)``."""
    for check in LOADER_CHECKS:
        check(factory, options, space)


# -- discrete spaces ----------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


def _scored(space: Any, model: Any, items: Sequence[Any], what: str) -> torch.Tensor:
    with torch.no_grad():
        scores = model(list(items))
    if scores.dim() != 2 or scores.shape[0] != len(items):
        _fail(space, f"{what}: the model returned scores of shape {tuple(scores.shape)}")
    if not bool(torch.isfinite(scores).all()):
        _fail(space, f"{what}: the model returned NaN/inf scores")
    return scores


def check_discrete_accepts(space: Any, model: Any, inputs: list[Any]) -> None:
    """The ``DiscreteSpace`` (or ``RelaxedSpace``) protocol; ``check`` accepts the valid
    inputs, one entry each."""
    require_protocol(space, RelaxedSpace if space_kind(space) == "relaxed" else DiscreteSpace)
    problems = space.check(inputs)
    if len(problems) != len(inputs) or any(p is not None for p in problems):
        _fail(space, f"check() of {len(inputs)} valid inputs returned {problems}")


def check_discrete_problem(space: Any, model: Any, inputs: list[Any]) -> None:
    """Per input: ``apply([])`` is the input; positions are distinct; every candidate edit
    sits at its position with a finite cost > 0 and changes the input; edited inputs are
    scored finitely by the model."""
    if space_kind(space) != "discrete":
        return
    for x in inputs:
        problem = space.problem(model, x)
        require_protocol(problem, DiscreteProblem)
        if not _same(problem.apply([]), x):
            _fail(space, f"apply([]) did not return the input {x!r}")
        positions = list(problem.positions())
        if len(set(positions)) != len(positions):
            _fail(space, f"positions() repeats a position: {positions}")
        edited = []
        for p in positions:
            for edit in problem.candidates(p):
                if edit.position != p:
                    _fail(space, f"candidate {edit} listed at position {p}")
                if not (math.isfinite(edit.cost) and edit.cost > 0):
                    _fail(space, f"candidate {edit} has cost {edit.cost}; want finite and > 0")
                changed = problem.apply([edit])
                if _same(changed, x):
                    _fail(space, f"applying {edit} left the input unchanged")
                edited.append(changed)
        if edited:
            _scored(space, model, edited[:64], "edited inputs")


def check_relaxed_roundtrip(space: Any, model: Any, inputs: list[Any]) -> None:
    """Relaxed spaces: the continuous model scores an encoded input as the model scores
    the input, and decoding the unperturbed point gives the input back."""
    if space_kind(space) != "relaxed":
        return
    continuous = space.continuous_model(model)
    for x in inputs:
        enc = space.encode(model, x)
        point = np.asarray(enc.point)
        if point.dtype != np.float32 or not np.all(np.isfinite(point)):
            _fail(space, "encode() must give a finite float32 point")
        if enc.free is not None:
            np.broadcast_to(enc.free, point.shape)
        with torch.no_grad():
            relaxed = continuous(torch.as_tensor(point).unsqueeze(0)).float().cpu()
        direct = _scored(space, model, [x], "the input").float().cpu()
        tol = 1e-3 * (1 + float(direct.abs().max()))
        if float((relaxed - direct).abs().max()) > tol:
            _fail(space, f"the encoded point scores {relaxed.tolist()} but the input "
                         f"{direct.tolist()}")  # fmt: skip
        back, _ = space.decode(model, x, enc, point)
        if not _same(back, x):
            _fail(space, f"decoding the unperturbed point gave {back!r}, not {x!r}")


DISCRETE_CHECKS = (check_discrete_accepts, check_discrete_problem, check_relaxed_roundtrip)


def check_discrete_space(space: Any, model: Any, inputs: Sequence[Any]) -> None:
    """Run every discrete-space check on ``space`` with ``model`` and valid ``inputs``."""
    for check in DISCRETE_CHECKS:
        check(space, model, list(inputs))


# -- edit distances -----------------------------------------------------------------------
def check_edit_distance_measure(distance: Any, pairs: list[Any]) -> None:
    """The ``EditDistance`` protocol and a string ``units``; ``measure`` is 0 for no
    change, positive for a change, at most the summed edit costs, and symmetric."""
    require_protocol(distance, EditDistance)
    if not isinstance(getattr(distance, "units", None), str):
        _fail(distance, "needs a string attribute 'units' (what a report prints)")
    measure = distance.measure
    for x, x_adv, edits in pairs:
        if float(measure(x, x, ())) != 0.0:
            _fail(distance, f"measure(x, x, ()) is not 0 for {x!r}")
        value = float(measure(x, x_adv, edits))
        total = float(sum(e.cost for e in edits))
        if not (0 < value <= total + 1e-9) and not _same(x, x_adv):
            _fail(distance, f"measure({x!r}, {x_adv!r}) = {value}: want in (0, {total}]")
        if float(measure(x_adv, x, edits)) != value:
            _fail(distance, f"measure is not symmetric on {x!r} / {x_adv!r}")


EDIT_DISTANCE_CHECKS = (check_edit_distance_measure,)


def check_edit_distance(distance: Any, pairs: Sequence[Any]) -> None:
    """Run every edit-distance check on ``distance`` with ``(x, x_adv, edits)`` triples."""
    for check in EDIT_DISTANCE_CHECKS:
        check(distance, list(pairs))
