"""The Python API: one call for a model and a batch, one for a task file.

>>> results = mmargin.evaluate(model, x, labels, distance="l2", space="image")
>>> frame = mmargin.to_frame(results)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmargin import plugins
from mmargin.results import SampleResult
from mmargin.summary import Summary, summarize
from mmargin.tasks import Task, load_task


def _exact_fn(adapter: Any, space: Any, distance: Any, goal: Any) -> Callable[..., Any]:
    hook = plugins.manager().hook.mmargin_exact_margin

    def exact(x: np.ndarray, label: int, target: int | None, upper: float | None) -> Any:
        return hook(model=adapter, space=space, distance=distance, x=x, label=label,
                    target=target, upper_bound=upper, goal=goal)  # fmt: skip

    return exact


def evaluate(
    model: Any,
    x: Any,
    labels: Any,
    distance: str | Any = "l2",
    *,
    space: str | Any = "box",
    space_options: Mapping[str, Any] | None = None,
    distance_options: Mapping[str, Any] | None = None,
    goal: str = "untargeted",
    target: int | None = None,
    budget: int = 1000,
    batch_size: int = 128,
    restarts: int = 1,
    exact: str = "auto",
    device: str = "cpu",
    seed: int = 0,
    ids: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SampleResult]:
    """Minimal verified flips for a batch ``x`` (array or tensor, ``(N, ...)``).

    ``model`` is a torch module, a callable, or anything an installed plugin adapts;
    ``distance`` / ``space`` are registered names (``mmargin plugins`` lists them) or
    ready objects. Returns one :class:`SampleResult` per input, in order.
    """
    from mmargin.engine.gradient import GradientConfig
    from mmargin.engine.runner import SearchSpec, minimal_flip
    from mmargin.goals import make_goal

    if isinstance(space, str):
        space = plugins.lookup("spaces", space).factory(**dict(space_options or {}))
    if isinstance(distance, str):
        distance = plugins.lookup("distances", distance).factory(**dict(distance_options or {}))
    adapter = plugins.manager().hook.mmargin_adapt_model(model=model, device=device, options={})
    if adapter is None:
        raise TypeError(f"no installed plugin can adapt a {type(model).__name__}")
    spec = SearchSpec(
        budget=budget, batch_size=batch_size, exact=exact, seed=seed,
        gradient=GradientConfig(restarts=restarts),
    )  # fmt: skip
    goal_obj = make_goal(goal, target)
    return minimal_flip(
        adapter, space, distance, _to_numpy(x), _to_numpy(labels), ids,
        goal=goal_obj, spec=spec,
        exact=_exact_fn(adapter, space, distance, goal_obj), progress=progress,
    )  # fmt: skip


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


@dataclass(frozen=True)
class RunOutput:
    """What ``run_task`` produced: the results, their summary and where they were written."""

    task: Task
    results: list[SampleResult]
    summary: Summary
    out: Path | None


def run_task(
    task: Task | str | Path,
    *,
    out: str | Path | None = None,
    device: str | None = None,
    samples: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RunOutput:
    """Run a task file end to end and write its artefacts (when an output folder is known)."""
    from mmargin.engine.gradient import GradientConfig
    from mmargin.engine.runner import SearchSpec, minimal_flip
    from mmargin.resolve import resolve
    from mmargin.store import task_record, write_run

    if not isinstance(task, Task):
        task = load_task(task)
    overrides: dict[str, Any] = {}
    if device is not None:
        overrides["device"] = device
    if samples is not None:
        overrides["samples"] = samples
    if out is not None:
        overrides["out"] = str(out)
    task = replace(task, **overrides)
    _seed(task.seed)
    live = resolve(task)
    if on_start is not None:
        on_start(len(live.dataset))
    spec = SearchSpec(
        budget=task.budget, batch_size=task.batch_size, strategy=task.strategy,
        exact=task.exact, line_search_steps=task.line_search_steps, seed=task.seed,
        gradient=GradientConfig(restarts=task.restarts, patience=task.patience),
    )  # fmt: skip
    results = minimal_flip(
        live.adapter, live.space, live.distance, live.dataset.x, live.dataset.y,
        live.dataset.ids, goal=live.goal, spec=spec,
        exact=_exact_fn(live.adapter, live.space, live.distance, live.goal), progress=progress,
    )  # fmt: skip
    summary = summarize(results, task.epsilons)
    out_dir = None
    if task.out is not None:
        out_dir = Path(task.out)  # relative to the working directory, like any CLI path
        write_run(out_dir, results, summary, task_record(task))
        artifacts = getattr(live.space, "write_artifacts", None)  # a modality's own files
        if artifacts is not None:  # (audio: WAVs), ``write_artifacts(out, results, dataset)``
            artifacts(out_dir, results, live.dataset)
    return RunOutput(task=task, results=results, summary=summary, out=out_dir)


def _seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
