"""Task files: a TOML evaluation spec, checked field by field before anything runs.

A task names a model (a registered model factory, or ``module:function`` from the task's
own folder or a package the user allowed: see :mod:`mmargin.factories`; optional weights),
the data, the space, the distance, the goal and the search budget. Every problem is reported
as :class:`~mmargin.errors.InvalidTaskError` naming the dotted field and what was
expected, so the CLI can print one line. Unknown keys are errors, not silently ignored.

Example::

    [task]
    name = "mnist-l2"
    samples = 500
    [model]
    factory = "mnist_cnn"
    [data]
    loader = "mnist"
    split = "test"
    [space]
    name = "image"
    [distance]
    name = "l2"
    [search]
    budget = 1000
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmargin.engine.spec import DEFAULT_BASELINE_PASSES
from mmargin.errors import InvalidTaskError
from mmargin.taskfile import INFO_TABLES, absolute, absolute_paths


@dataclass(frozen=True)
class Component:
    """A named plugin component (loader, space, distance) with its options."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """Where the model comes from and how it is adapted (``factory`` is ``None`` when the
    caller hands ``run_task`` a model object)."""

    factory: str | None
    weights: str | None = None
    adapter: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    adapter_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A parsed, type-checked task. ``base`` is the folder relative paths resolve against
    (and the only folder a ``module:function`` factory may be imported from).

    ``model`` / ``data`` are ``None`` when the task leaves them to the caller
    (``run_task(task, model=..., data=...)``).
    """

    name: str
    model: ModelSpec | None
    data: Component | None
    space: Component
    distance: Component
    goal: str = "untargeted"
    target: int | None = None
    goal_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    samples: int | None = None
    batch_size: int = 128
    device: str = "cpu"
    out: str | None = None
    strategy: str = "auto"
    budget: int = 1000
    restarts: int = 1
    exact: str = "auto"
    line_search_steps: int = 12
    patience: int = 0
    report_passes: int = 0
    flip_repeats: int = 10
    baseline_passes: int = DEFAULT_BASELINE_PASSES
    epsilons: tuple[float, ...] = ()
    base: Path = Path(".")


_SCALARS: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "task": {
        "name": (str, "a string"),
        "seed": (int, "an integer in [0, 2**63 - 1]"),
        "samples": (int, "a positive integer"),
        "batch_size": (int, "a positive integer"),
        "device": (str, "a device such as 'cpu' or 'cuda'"),
        "out": (str, "a folder path"),
    },
    "goal": {
        "kind": (str, "'untargeted', 'targeted' or 'threshold'"),
        "target": (int, "a class index"),
        "threshold": ((int, float), "a number: a probability in (0, 1), or a raw score"),
        "positive": (int, "a class index"),
        "scores": (str, "'proba' or 'raw'"),
    },
    "search": {
        "strategy": (
            str,
            "'auto', 'gradient', 'decision', 'hybrid', 'exact', 'discrete', "
            "'greedy', 'beam' or 'exhaustive'",
        ),
        "budget": (int, "a positive integer (forward + backward passes per sample)"),
        "restarts": (int, "an integer >= 0"),
        "exact": (str, "'auto', 'never' or 'only'"),
        "line_search_steps": (int, "an integer >= 0"),
        "patience": (int, "an integer >= 0"),
        "report_passes": (int, "an integer >= 0 (passes set aside for the per-sample report)"),
        "flip_repeats": (
            int,
            "an integer in [1, 1000] (passes re-checking a flip of a "
            "non-deterministic model; 90% must agree)",
        ),
        "baseline_passes": (int, "an integer >= 0 (passes for the random baseline; 0 = off)"),
    },
    "report": {"epsilons": (list, "a list of numbers")},
}
_CHOICES = {
    "goal.kind": ("untargeted", "targeted", "threshold"),
    "goal.scores": ("proba", "raw"),
    "search.strategy": (
        "auto",
        "gradient",
        "decision",
        "hybrid",
        "exact",
        "discrete",
        "greedy",
        "beam",
        "exhaustive",
    ),
    "search.exact": ("auto", "never", "only"),
}
_POSITIVE = {"task.samples", "task.batch_size", "search.budget", "search.flip_repeats"}
SEED_MAX = 2**63 - 1
"""Seeds are integers in [0, 2**63 - 1], the range torch's generators accept."""
_MAXIMUM = {"task.seed": SEED_MAX, "search.budget": 10**7, "search.restarts": 1000,
            "task.batch_size": 10**6, "search.line_search_steps": 64,
            "search.patience": 10**7, "search.report_passes": 10**7,
            "search.flip_repeats": 1000, "search.baseline_passes": 10**7}  # fmt: skip
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")
_TABLES = ("task", "model", "data", "space", "distance", "goal", "search", "report")
FIELDS = tuple(f"{table}.{key}" for table, keys in _SCALARS.items() for key in keys)
"""Every scalar field a task file may set, as ``"table.key"`` (what a written task holds)."""


def load_task(path: str | Path) -> Task:
    """Read and check a task file; raises :class:`InvalidTaskError` naming the bad field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidTaskError(str(path), "task file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidTaskError(str(path), f"cannot read the task file ({exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidTaskError(str(path), f"not valid TOML: {exc}") from None
    return parse_task(raw, base=path.parent, default_name=path.stem)


def parse_task(raw: Mapping[str, Any], base: Path = Path("."), default_name: str = "task") -> Task:
    """Check a task given as nested dicts (what ``tomllib`` returns). Relative paths in it
    resolve against ``base`` (see :mod:`mmargin.taskfile`); a ``[versions]`` table (what a
    run's ``task.resolved.toml`` records) is accepted and ignored."""
    raw = {k: v for k, v in raw.items() if k not in INFO_TABLES}
    for key, value in raw.items():
        if key not in _TABLES:
            raise InvalidTaskError(key, f"unknown table; expected one of {', '.join(_TABLES)}")
        if not isinstance(value, Mapping):
            raise InvalidTaskError(key, f"expected a table, got {_kind(value)}")
    values: dict[str, Any] = {}
    for table, fields in _SCALARS.items():
        section = raw.get(table, {})
        for key, value in section.items():
            where = f"{table}.{key}"
            if key not in fields:
                raise InvalidTaskError(where, f"unknown key; expected one of {', '.join(fields)}")
            values[where] = _check(where, value, *fields[key])
    for where in ("space", "distance"):
        if where not in raw:
            raise InvalidTaskError(where, "missing table")
    epsilons = values.get("report.epsilons", [])
    for i, eps in enumerate(epsilons):
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
            raise InvalidTaskError(f"report.epsilons[{i}]", f"expected a number, got {eps!r}")
    goal, target, goal_options = check_goal(
        values.get("goal.kind", "untargeted"),
        values.get("goal.target"),
        {
            k: values[f"goal.{k}"]
            for k in ("threshold", "positive", "scores")
            if f"goal.{k}" in values
        },
    )
    data = _component("data", raw["data"], "loader") if "data" in raw else None
    if data is not None:
        data = Component(data.name, absolute_paths(data.options, base))
    model = _model(raw["model"], base) if "model" in raw else None
    if "task.out" in values:
        values["task.out"] = absolute(values["task.out"], base)
    return Task(
        name=values.get("task.name", default_name),
        model=model,
        data=data,
        space=_component("space", raw["space"], "name"),
        distance=_component("distance", raw["distance"], "name"),
        goal=goal,
        target=target,
        goal_options=goal_options,
        seed=values.get("task.seed", 0),
        samples=values.get("task.samples"),
        batch_size=values.get("task.batch_size", 128),
        device=values.get("task.device", "cpu"),
        out=values.get("task.out"),
        strategy=values.get("search.strategy", "auto"),
        budget=values.get("search.budget", 1000),
        restarts=values.get("search.restarts", 1),
        exact=values.get("search.exact", "auto"),
        line_search_steps=values.get("search.line_search_steps", 12),
        patience=values.get("search.patience", 0),
        report_passes=values.get("search.report_passes", 0),
        flip_repeats=values.get("search.flip_repeats", 10),
        baseline_passes=values.get("search.baseline_passes", DEFAULT_BASELINE_PASSES),
        epsilons=tuple(float(e) for e in epsilons),
        base=base,
    )


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)  # fmt: skip


def check_value(where: str, value: Any) -> Any:
    """Check one task field (``"search.budget"``) the way a task file's is checked: what the
    Python API uses so that its mistakes read like a task file's."""
    table, _, key = where.partition(".")
    return _check(where, value, *_SCALARS[table][key])


def check_goal(
    kind: str, target: int | None, options: Mapping[str, Any]
) -> tuple[str, int | None, dict[str, Any]]:
    """Check a goal's kind, target and options (``threshold``, ``positive``, ``scores``) the
    way a task's ``[goal]`` table is checked; returns them as given."""
    check_value("goal.kind", kind)
    if target is not None:
        check_value("goal.target", target)
    goal_options = dict(options)
    for key, value in goal_options.items():
        if key not in ("threshold", "positive", "scores"):
            raise InvalidTaskError(f"goal.{key}", "unknown goal option; expected threshold, "
                                   "positive or scores")  # fmt: skip
        check_value(f"goal.{key}", value)
    if kind == "targeted" and target is None:
        raise InvalidTaskError("goal.target", "a targeted goal needs a target class")
    if kind == "threshold" and "threshold" not in goal_options:
        raise InvalidTaskError("goal.threshold", "a threshold goal needs a threshold")
    tau, scale = goal_options.get("threshold", 0.5), goal_options.get("scores", "proba")
    if not math.isfinite(tau) or (scale == "proba" and not 0 < tau < 1):
        raise InvalidTaskError("goal.threshold", "expected a probability in (0, 1) (or a finite "
                               f"raw score with scores = 'raw'), got {tau!r}")  # fmt: skip
    if kind != "threshold" and goal_options:
        first = next(iter(goal_options))
        raise InvalidTaskError(f"goal.{first}", "only used by kind = 'threshold'")
    return kind, target, goal_options


def check_device(value: Any, where: str = "task.device") -> str:
    """A torch device spelling (``cpu``, ``cuda``, ``cuda:1``, ``mps``); whether it exists on
    this machine is checked when the model is adapted."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise InvalidTaskError(where, f"expected 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}")
    return value


def _check(where: str, value: Any, expected: type | tuple[type, ...], words: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, expected):
        raise InvalidTaskError(where, f"expected {words}, got {_kind(value)} {value!r}")
    if where in _CHOICES and value not in _CHOICES[where]:
        raise InvalidTaskError(
            where, f"expected one of {', '.join(_CHOICES[where])}, got {value!r}"
        )
    if where in _POSITIVE and isinstance(value, int) and value < 1:
        raise InvalidTaskError(where, f"expected {words}, got {value!r}")
    if isinstance(value, int) and value < 0 and where != "goal.threshold":
        raise InvalidTaskError(where, f"expected {words}, got {value!r}")
    if where in _MAXIMUM and isinstance(value, int) and value > _MAXIMUM[where]:
        raise InvalidTaskError(where, f"expected {words} of at most {_MAXIMUM[where]}, "
                               f"got {value!r}")  # fmt: skip
    if where == "task.device":
        check_device(value, where)
    return value


def _component(table: str, raw: Mapping[str, Any], key: str) -> Component:
    if key not in raw:
        raise InvalidTaskError(f"{table}.{key}", "missing; it names the plugin component to use")
    name = raw[key]
    if not isinstance(name, str):
        raise InvalidTaskError(f"{table}.{key}", f"expected a string, got {_kind(name)}")
    return Component(name=name, options={k: v for k, v in raw.items() if k != key})


def _model(raw: Mapping[str, Any], base: Path) -> ModelSpec:
    allowed = {"factory", "weights", "adapter", "options", "adapter_options"}
    for key in raw:
        if key not in allowed:
            raise InvalidTaskError(
                f"model.{key}", f"unknown key; expected one of {sorted(allowed)}"
            )
    factory = raw.get("factory")
    if factory is not None and (not isinstance(factory, str) or not factory.strip()):
        raise InvalidTaskError(
            "model.factory",
            f"expected a registered model name or 'module:function', "
            f"got {_kind(factory)} {factory!r}",
        )
    for key in ("weights", "adapter"):
        if key in raw and not isinstance(raw[key], str):
            raise InvalidTaskError(f"model.{key}", f"expected a string, got {_kind(raw[key])}")
    for key in ("options", "adapter_options"):
        if key in raw and not isinstance(raw[key], Mapping):
            raise InvalidTaskError(f"model.{key}", f"expected a table, got {_kind(raw[key])}")
    return ModelSpec(
        factory=factory,
        weights=absolute(raw["weights"], base) if raw.get("weights") else None,
        adapter=raw.get("adapter"),
        options=absolute_paths(raw.get("options", {}), base),
        adapter_options=dict(raw.get("adapter_options", {})),
    )
