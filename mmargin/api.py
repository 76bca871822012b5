"""The Python API: one call for a model and a batch, one for a task file.

>>> results = mmargin.evaluate(model, x, labels, distance="l2", space="image")
>>> frame = mmargin.to_frame(results)

Everything a task file can say, :func:`evaluate` can say (adapter and its options,
strategy, goal and its options, patience, line search); :func:`run_task` runs a task file
or a :class:`~mmargin.tasks.Task`, optionally with an in-memory model and data. Neither
changes the caller's model (mode, ``requires_grad``): that is the engine's contract, and
nothing here calls ``.eval()`` or touches parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmargin import plugins
from mmargin.engine.spec import DEFAULT_BASELINE_PASSES
from mmargin.errors import InvalidTaskError
from mmargin.results import SampleResult
from mmargin.summary import Summary, summarize, units_label
from mmargin.tasks import Component, ModelSpec, Task, check_goal, check_value, load_task


def exact_fn(adapter: Any, space: Any, distance: Any, goal: Any) -> Callable[..., Any]:
    """The engine's ``exact(x, label, target, upper)``: the ``mmargin_exact_margin`` hook,
    called plugin by plugin in pluggy's order (first non-``None`` wins) so that the answer
    carries the name of the plugin that gave it (``ExactMargin.plugin``)."""
    caller = plugins.manager().hook.mmargin_exact_margin

    def exact(x: np.ndarray, label: int, target: int | None, upper: float | None) -> Any:
        kwargs = dict(model=adapter, space=space, distance=distance, x=x, label=label,
                      target=target, upper_bound=upper, goal=goal)  # fmt: skip
        for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last one first
            if impl.hookwrapper or impl.wrapper:
                continue
            found = impl.function(*(kwargs[name] for name in impl.argnames))
            if found is not None:
                return _named(found, impl.plugin_name)
        return None

    return exact


def _named(found: Any, plugin: str) -> Any:
    is_record = dataclasses.is_dataclass(found) and not isinstance(found, type)
    if is_record and "plugin" in {f.name for f in dataclasses.fields(found)}:
        return replace(found, plugin=plugin)
    return found


def report_fn(space: Any, distance: Any = None) -> Callable[..., list[dict[str, Any]] | None]:
    """The engine's ``report(model, x, x_adv, labels, goal)``: the ``mmargin_sample_report``
    hook for this run's space and distance (``model`` is the engine's counted adapter)."""
    caller = plugins.manager().hook.mmargin_sample_report

    def report(model: Any, x: Any, x_adv: Any, labels: Any, goal: Any) -> Any:
        return caller(space=space, model=model, x=x, x_adv=x_adv, labels=labels, goal=goal,
                      distance=distance)  # fmt: skip

    return report


def write_artifacts(space: Any, out: Path, results: Sequence[SampleResult], dataset: Any) -> None:
    """Let every plugin write its modality's files into a finished run's folder."""
    plugins.manager().hook.mmargin_write_artifacts(
        space=space, out=out, results=results, dataset=dataset
    )


def _search(
    adapter: Any, space: Any, distance: Any, dataset_x: np.ndarray, labels: np.ndarray,
    ids: Sequence[str] | None, goal: Any, spec: Any, progress: Callable[[int], None] | None,
) -> list[SampleResult]:  # fmt: skip
    from mmargin.distances import fit_distance
    from mmargin.engine import minimal_flip

    distance = fit_distance(space, distance)  # e.g. L0 in pixels for images
    return minimal_flip(
        adapter, space, distance, dataset_x, labels, ids, goal=goal, spec=spec,
        exact=exact_fn(adapter, space, distance, goal), report=report_fn(space, distance),
        progress=progress,
    )  # fmt: skip


def _spec(
    *, budget: int, batch_size: int, strategy: str, exact: str, line_search_steps: int,
    seed: int, restarts: int, patience: int, report_passes: int, baseline_passes: int,
    flip_repeats: int = 10,
) -> Any:  # fmt: skip
    """The engine's search specification from checked task fields."""
    from mmargin.engine.spec import GradientConfig, SearchSpec

    try:
        return SearchSpec(
            budget=budget, batch_size=batch_size, strategy=strategy, exact=exact,
            line_search_steps=line_search_steps, seed=seed, report_passes=report_passes,
            baseline_passes=baseline_passes,
            gradient=GradientConfig(restarts=restarts, patience=patience),
            flip_repeats=flip_repeats,
        )  # fmt: skip
    except ValueError as exc:
        if isinstance(exc, InvalidTaskError):
            raise
        raise InvalidTaskError("search", str(exc)) from None


def _task_spec(task: Task) -> Any:
    return _spec(budget=task.budget, batch_size=task.batch_size, strategy=task.strategy,
                 exact=task.exact, line_search_steps=task.line_search_steps, seed=task.seed,
                 restarts=task.restarts, patience=task.patience,
                 report_passes=task.report_passes, flip_repeats=task.flip_repeats,
                 baseline_passes=task.baseline_passes)  # fmt: skip


def evaluate(
    model: Any,
    x: Any,
    labels: Any,
    distance: str | Any = "l2",
    *,
    space: str | Any = "box",
    space_options: Mapping[str, Any] | None = None,
    distance_options: Mapping[str, Any] | None = None,
    adapter: str | None = None,
    adapter_options: Mapping[str, Any] | None = None,
    goal: str | Any = "untargeted",
    target: int | None = None,
    threshold: float | None = None,
    positive: int | None = None,
    scores: str | None = None,
    strategy: str = "auto",
    budget: int = 1000,
    batch_size: int = 128,
    restarts: int = 1,
    patience: int = 0,
    line_search_steps: int = 12,
    report_passes: int = 0,
    flip_repeats: int = 10,
    baseline_passes: int = DEFAULT_BASELINE_PASSES,
    exact: str = "auto",
    device: str = "cpu",
    seed: int = 0,
    ids: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SampleResult]:
    """Minimal verified flips for a batch ``x`` (array or tensor, ``(N, ...)``).

    ``model`` is a torch module, a callable, or anything an installed plugin adapts; name
    the ``adapter`` (``"torch"``, ``"sklearn"`` ...) and its ``adapter_options`` (``mean``,
    ``std``) as a task's ``[model]`` table would. ``distance`` / ``space`` are registered
    names (``mmargin plugins`` lists them) or ready objects. ``goal`` is ``"untargeted"``,
    ``"targeted"`` (with ``target``), ``"threshold"`` (with ``threshold``, ``positive``,
    ``scores``) or a ready goal object. The search knobs mean what they mean in a task's
    ``[search]`` table and are checked the same way (a mistake raises
    :class:`~mmargin.errors.InvalidTaskError`, a ``ValueError``, naming the field).
    Returns one :class:`SampleResult` per input, in order.
    """
    from mmargin.goals import make_goal
    from mmargin.resolve import adapter_for, check_device, check_normalisation, component, to_numpy

    for where, value in (
        ("search.strategy", strategy), ("search.budget", budget),
        ("task.batch_size", batch_size), ("search.restarts", restarts),
        ("search.patience", patience), ("search.line_search_steps", line_search_steps),
        ("search.exact", exact), ("task.seed", seed), ("search.report_passes", report_passes),
        ("search.flip_repeats", flip_repeats),
        ("search.baseline_passes", baseline_passes),
    ):  # fmt: skip
        check_value(where, value)
    spec = _spec(budget=budget, batch_size=batch_size, strategy=strategy, exact=exact,
                 line_search_steps=line_search_steps, seed=seed, restarts=restarts,
                 patience=patience, report_passes=report_passes,
                 flip_repeats=flip_repeats, baseline_passes=baseline_passes)  # fmt: skip
    check_device(device, "device")
    goal_options: dict[str, Any] = {
        k: v for k, v in (("threshold", threshold), ("positive", positive), ("scores", scores))
        if v is not None
    }  # fmt: skip
    if isinstance(goal, str):
        goal, target, goal_options = check_goal(goal, target, goal_options)
    x_np, labels_np = to_numpy(x), to_numpy(labels)
    if isinstance(space, str):
        space = component("spaces", Component(space, dict(space_options or {})), "space.name")
    if isinstance(distance, str):
        distance = component(
            "distances", Component(distance, dict(distance_options or {})), "distance.name"
        )
    options = dict(adapter_options or {})
    check_normalisation(options, x_np, "adapter_options")
    wrapped = adapter_for(model, ModelSpec(None, adapter=adapter, adapter_options=options),
                          device, field="adapter", space=space)  # fmt: skip
    try:
        goal_obj = make_goal(goal, target, **goal_options)
    except ValueError as exc:
        raise InvalidTaskError("goal", str(exc)) from None
    return _search(wrapped, space, distance, x_np, labels_np, ids, goal_obj, spec, progress)


@dataclass(frozen=True)
class RunOutput:
    """What ``run_task`` produced: the results, their summary, where they were written and
    the space plugin's example lines (``mmargin_summary_examples``)."""

    task: Task
    results: list[SampleResult]
    summary: Summary
    out: Path | None
    examples: list[str] = dataclasses.field(default_factory=list)


def run_task(
    task: Task | str | Path,
    *,
    model: Any = None,
    data: Any = None,
    out: str | Path | None = None,
    device: str | None = None,
    samples: int | None = None,
    epsilons: Sequence[float] | None = None,
    allow_imports: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RunOutput:
    """Run a task end to end and write its artefacts (when an output folder is known).

    ``task`` is a task file or a :class:`~mmargin.tasks.Task`. ``model`` (a model object)
    and ``data`` (a :class:`~mmargin.data.Dataset` or ``(x, y)``) replace the task's
    ``[model]`` factory and ``[data]`` loader; the task's adapter and its options still
    apply. ``allow_imports`` are packages a ``module:function`` factory may come from
    (what ``--allow-import`` says on the command line); ``device``, ``samples``, ``out``
    and ``epsilons`` override the task's.
    """
    from mmargin.resolve import check_device, resolve
    from mmargin.store import task_record, write_run

    if not isinstance(task, Task):
        task = load_task(task)
    overrides: dict[str, Any] = {}
    if device is not None:
        check_device(device, "--device")
        overrides["device"] = device
    if samples is not None:
        overrides["samples"] = check_value("task.samples", samples)
    if out is not None:
        overrides["out"] = str(out)
    if epsilons is not None:
        overrides["epsilons"] = tuple(float(e) for e in epsilons)
    task = replace(task, **overrides)
    spec = _task_spec(task)
    seed_everything(task.seed)  # before the factory and the loader, which may draw numbers
    live = resolve(task, model=model, data=data, allow_imports=allow_imports)
    if on_start is not None:
        on_start(len(live.dataset))
    results = _search(live.adapter, live.space, live.distance, live.dataset.x, live.dataset.y,
                      live.dataset.ids, live.goal, spec, progress)  # fmt: skip
    from mmargin.datanotes import with_data_notes  # the loader's skipped / repaired files

    results = with_data_notes(results, live.dataset, str(getattr(live.space, "modality", "")),
                              task.space.name, task.distance.name)  # fmt: skip
    summary = summarize(results, task.epsilons, units_label(live.space, live.distance))
    out_dir = None
    if task.out is not None:
        out_dir = Path(task.out)  # relative to the working directory, like any CLI path
        record = task_record(task)
        if model is not None:
            record["model"] = {"in_memory": type(model).__qualname__}
        if data is not None:
            record["data"] = {"in_memory": f"{len(live.dataset)} samples"}
        write_run(out_dir, results, summary, record)
        write_artifacts(live.space, out_dir, results, live.dataset)
    from mmargin.examples import summary_examples

    examples = summary_examples(live.space, results)
    return RunOutput(task=task, results=results, summary=summary, out=out_dir, examples=examples)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's generators from one seed in [0, 2**63-1]
    (numpy's legacy seeding takes 32 bits: it gets a value derived from the full seed)."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
    torch.manual_seed(seed)
