"""The engine's front door: :func:`minimal_flip` dispatches a run to the driver.

Continuous spaces go to :mod:`mmargin.engine.continuous`, discrete spaces to
:mod:`mmargin.engine.discrete_strategy`, relaxed spaces to :mod:`mmargin.engine.relaxed`;
all three run under the one driver (:mod:`mmargin.engine.driver`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmargin.engine.continuous import flip_continuous
from mmargin.engine.discrete_strategy import flip_discrete
from mmargin.engine.driver import Units
from mmargin.engine.relaxed import relaxed_flip
from mmargin.engine.spec import ExactFn, ReportFn, SearchSpec
from mmargin.goals import Goal, Untargeted
from mmargin.protocols import space_kind
from mmargin.results import SampleResult


def minimal_flip(
    model: Any,
    space: Any,
    distance: Any,
    x: Any,
    labels: Any,
    ids: Sequence[str] | None = None,
    *,
    goal: Goal | None = None,
    spec: SearchSpec | None = None,
    exact: ExactFn | None = None,
    report: ReportFn | None = None,
    progress: Callable[[int], None] | None = None,
    units: Units | None = None,
) -> list[SampleResult]:
    """The smallest verified flip for every sample of ``x`` (``(N, ...)`` for continuous
    spaces, a sequence of inputs for discrete ones), in order.

    ``model`` is a model adapter (:class:`~mmargin.protocols.ModelAdapter`); ``exact`` the
    exact-margin hook (continuous spaces); ``report`` the per-sample report hook. Raises
    :class:`~mmargin.errors.InvalidInputError` when the batch as a whole cannot be used
    (wrong shape) and :class:`~mmargin.errors.RunError` when every sample of the first
    batch fails the same way; other per-sample problems become ``error`` results.
    ``units`` (:class:`~mmargin.engine.driver.Units`) selects the units to run and
    receives each finished one: how runs are streamed, resumed and sharded.
    """
    goal = goal if goal is not None else Untargeted()
    spec = spec if spec is not None else SearchSpec()
    kind = space_kind(space)
    xs = x if kind != "continuous" else np.asarray(x)
    label_arr = np.asarray(labels).astype(np.int64).reshape(-1)
    names = [str(i) for i in (ids if ids is not None else range(len(label_arr)))]
    count = len(xs)
    if len(label_arr) != count or len(names) != count:
        raise ValueError(f"got {count} inputs, {len(label_arr)} labels and {len(names)} ids")
    if kind == "relaxed":
        return relaxed_flip(model, space, distance, xs, label_arr, names, goal=goal, spec=spec,
                            progress=progress, units=units)  # fmt: skip
    if kind == "discrete":
        return flip_discrete(model, space, distance, xs, label_arr, names, goal=goal,
                             spec=spec, report=report, progress=progress,
                             units=units)  # fmt: skip
    return flip_continuous(model, space, distance, xs, label_arr, names, goal=goal, spec=spec,
                           exact=exact, report=report, progress=progress,
                           units=units)  # fmt: skip
