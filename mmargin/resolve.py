"""Turn a checked :class:`~mmargin.tasks.Task` into live objects through the plugins.

Each step maps its failure to an :class:`InvalidTaskError` naming the task field, so a
wrong loader name, an unknown option or a missing weights file is one clear line. The model
factory is planned (:mod:`mmargin.factories`) before anything else is built, so a task that
names code it may not run is refused before any import.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmargin import plugins
from mmargin.data import Dataset
from mmargin.errors import InvalidTaskError
from mmargin.tasks import Component, ModelSpec, Task

if TYPE_CHECKING:
    from mmargin.factories import FactoryPlan


@dataclass
class Resolved:
    """Everything a run needs, built from a task."""

    model: Any
    adapter: Any
    dataset: Dataset
    space: Any
    distance: Any
    goal: Any


def call_with_options(
    factory: Callable[..., Any], options: Mapping[str, Any], field: str, *args: Any
) -> Any:
    """Call a plugin factory, turning unknown or missing options into a task error."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(*args, **options)
        except TypeError as exc:
            accepted = [
                p.name for p in signature.parameters.values()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            ][len(args):]  # fmt: skip
            raise InvalidTaskError(
                field, f"{exc}; accepted options: {', '.join(accepted) or 'none'}"
            ) from None
    try:
        return factory(*args, **options)
    except InvalidTaskError:
        raise
    except (ValueError, TypeError, FileNotFoundError, KeyError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise InvalidTaskError(field, str(message)) from None


def component(kind: str, spec: Component, field: str, *args: Any, model: Any = None) -> Any:
    """Build a registered component (space, distance, loader) from its task table; with a
    ``model``, options it declares that the table left out are filled in
    (:func:`mmargin.modelinfo.loader_options`: an audio model's ``sample_rate``)."""
    try:
        entry = plugins.lookup(kind, spec.name)
    except KeyError as exc:
        raise InvalidTaskError(field, str(exc.args[0])) from None
    table = field.split(".")[0]
    options = spec.options
    if model is not None:
        from mmargin.modelinfo import loader_options

        options = loader_options(entry.factory, spec.options, model)
    return call_with_options(entry.factory, options, table, *args)


def model_plan(task: Task, allow_imports: Sequence[str] = ()) -> FactoryPlan:
    """Where the task's model factory comes from, decided without importing it."""
    from mmargin.factories import allowed_packages, plan_factory

    if task.model is None or task.model.factory is None:
        raise InvalidTaskError("model.factory", "missing; name a registered model "
                               "(`mmargin plugins` lists them) or 'module:function'")  # fmt: skip
    models = plugins.registries()["models"]
    return plan_factory(task.model.factory, task.base, allowed_packages(allow_imports), models)


def load_model(spec: ModelSpec, base: Path, plan: FactoryPlan) -> Any:
    """Call the planned model factory and load weights (``torch.load(weights_only=True)``)."""
    from mmargin.factories import load_factory, local_folder_on_path

    factory = load_factory(plan, plugins.registries()["models"])
    with local_folder_on_path(plan.folder):
        model = call_with_options(factory, spec.options, "model.options")
    if spec.weights is not None:
        path = (base / spec.weights).resolve()
        if not path.is_file():
            raise InvalidTaskError("model.weights", f"file not found: {path}")
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - any unpickling/shape error is a task error
            raise InvalidTaskError("model.weights", f"cannot load {path.name}: {exc}") from None
    return model


def check_device(device: str, field: str = "task.device") -> None:
    """Refuse a device this machine does not have (one line, before any model is moved)."""
    from mmargin.tasks import check_device as spelling

    spelling(device, field)
    if device == "cpu":
        return
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidTaskError(field, f"{device!r} asked for, but CUDA is not available "
                                   f"here (torch {torch.__version__}); use 'cpu'")  # fmt: skip
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InvalidTaskError(field, f"{device!r}: this machine has "
                                   f"{torch.cuda.device_count()} CUDA device(s)")  # fmt: skip
    elif device == "mps" and not torch.backends.mps.is_available():
        raise InvalidTaskError(field, "'mps' asked for, but MPS is not available here; use 'cpu'")


def check_normalisation(options: Mapping[str, Any], x: np.ndarray, field: str) -> None:
    """Refuse a mean/std whose length fits neither one value nor the data's channels
    (axis 1: image channels, audio channels, or the features of a feature vector)."""
    channels = x.shape[1] if x.ndim >= 2 else 1
    for key in ("mean", "std"):
        value = options.get(key)
        if value is None:
            continue
        values = np.atleast_1d(np.asarray(value, dtype=object))
        if values.ndim != 1 or len(values) not in (1, channels):
            raise InvalidTaskError(f"{field}.{key}", f"expected one value or {channels} (one "
                                   f"per channel of inputs shaped {tuple(x.shape[1:])}), got "
                                   f"{len(values) if values.ndim == 1 else value!r}")  # fmt: skip
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise InvalidTaskError(f"{field}.{key}", f"expected numbers, got {value!r}")
        if key == "std" and any(float(v) == 0 for v in values):
            raise InvalidTaskError(f"{field}.std", "a standard deviation of 0 divides by zero")


def adapter_for(
    model: Any, spec: ModelSpec | None, device: str, options: Mapping[str, Any] | None = None,
    field: str = "model.adapter", space: Any = None,
) -> Any:  # fmt: skip
    """Wrap the model: the named adapter, else the first plugin that recognises it. An
    adapter with a ``bind_space(space)`` method is then shown the run's space (the tabular
    adapter learns the schema of a model trained on raw DataFrame columns from it)."""
    adapter = _adapter(model, spec, device, options, field)
    bind = getattr(adapter, "bind_space", None)
    if space is not None and callable(bind):
        try:
            bind(space)
        except (TypeError, ValueError) as exc:
            raise InvalidTaskError(field, str(exc)) from None
    return adapter


def _adapter(
    model: Any, spec: ModelSpec | None, device: str, options: Mapping[str, Any] | None,
    field: str,
) -> Any:  # fmt: skip
    opts = dict(spec.adapter_options if spec is not None else options or {})
    name = spec.adapter if spec is not None else None
    if name is not None:
        try:
            entry = plugins.lookup("adapters", name)
        except KeyError as exc:
            raise InvalidTaskError(field, str(exc.args[0])) from None
        return call_with_options(
            entry.factory, {**opts, "device": device}, "model.adapter_options", model
        )
    try:
        adapter = plugins.manager().hook.mmargin_adapt_model(
            model=model, device=device, options=opts
        )
    except (TypeError, ValueError) as exc:
        raise InvalidTaskError("model.adapter_options", str(exc)) from None
    if adapter is None:
        raise InvalidTaskError(
            field, f"no installed plugin can adapt a {type(model).__name__}; name one"
        )
    return adapter


def as_dataset(data: Any) -> Dataset:
    """An in-memory dataset: a :class:`Dataset`, or ``(x, y)`` / ``(x, y, ids)`` arrays or
    tensors (ids default to the row numbers)."""
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise InvalidTaskError("data", f"expected a Dataset or (x, y), got {type(data).__name__}")
    x, y = to_numpy(data[0]), to_numpy(data[1]).reshape(-1)
    if not np.issubdtype(y.dtype, np.integer):
        raise InvalidTaskError("data", f"labels must be integers, got {y.dtype}")
    ids = [str(i) for i in (data[2] if len(data) == 3 else range(len(y)))]
    try:
        return Dataset(x, y.astype(np.int64), ids)
    except ValueError as exc:
        raise InvalidTaskError("data", str(exc)) from None


def to_numpy(values: Any) -> np.ndarray:
    """A numpy array from an array, a list or a (detached) tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def load_data(task: Task, model: Any) -> Dataset:
    """Run the task's loader with the options the model declares that the task left out,
    and check the data fits the model (:func:`mmargin.modelinfo.check_declared`)."""
    from mmargin.modelinfo import check_declared

    assert task.data is not None
    dataset = component("datasets", task.data, "data.loader", model=model)
    if not isinstance(dataset, Dataset):
        raise InvalidTaskError("data.loader", f"loader returned {type(dataset).__name__}")
    check_declared(dataset.meta, model)
    return dataset


def align_classes(dataset: Dataset, model: Any, adapter: Any) -> Dataset:
    """A folder loader's labels mapped onto the model's classes (see
    :func:`mmargin.modelinfo.align_classes`); one forward pass counts the model's classes
    when it names none."""
    from mmargin import modelinfo

    if dataset.meta.get("class_map") != "folders" or len(dataset) == 0:
        return dataset
    outputs = None
    if modelinfo.class_names(model) is None:
        import torch

        with torch.no_grad():
            outputs = int(adapter(torch.as_tensor(dataset.x[:1])).shape[-1])
    return modelinfo.align_classes(dataset, model, outputs)


def resolve(
    task: Task, *, model: Any = None, data: Any = None, allow_imports: Sequence[str] = (),
    plan: FactoryPlan | None = None,
) -> Resolved:  # fmt: skip
    """Load the model, data, space, distance and goal a task names.

    ``model`` / ``data`` are in-memory replacements for the task's ``[model]`` / ``[data]``
    (then nothing is imported for them); ``allow_imports`` are packages the caller allows a
    ``module:function`` factory to come from (besides the environment and settings file).
    """
    from mmargin.distances import fit_distance
    from mmargin.goals import make_goal
    from mmargin.modelinfo import DECLARED, check_declared

    check_device(task.device)
    if model is None and plan is None:
        plan = model_plan(task, allow_imports)  # refuse a hostile factory before anything runs
    space = component("spaces", task.space, "space.name")
    distance = component("distances", task.distance, "distance.name")
    if data is None and task.data is None:
        raise InvalidTaskError("data", "missing table; name a loader or pass data=")
    if model is None:  # before the data: the model may declare what the loader needs
        assert task.model is not None and plan is not None
        model = load_model(task.model, task.base, plan)
    space = component("spaces", task.space, "space.name", model=model)
    check_declared({k: getattr(space, k, None) for k in DECLARED}, model, "space")
    distance = fit_distance(space, distance)  # e.g. L0 in pixels for images
    dataset = as_dataset(data) if data is not None else load_data(task, model)
    if task.samples is not None:
        dataset = dataset.head(task.samples)
    if task.model is not None:
        check_normalisation(task.model.adapter_options, dataset.x, "model.adapter_options")
    adapter = adapter_for(model, task.model, task.device, space=space)
    if data is None:
        dataset = align_classes(dataset, model, adapter)
    try:
        goal = make_goal(task.goal, task.target, **task.goal_options)
    except ValueError as exc:
        raise InvalidTaskError("goal", str(exc)) from None
    return Resolved(model, adapter, dataset, space, distance, goal)
