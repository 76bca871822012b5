"""Turn a checked :class:`~mmargin.tasks.Task` into live objects through the plugins.

Each step maps its failure to an :class:`InvalidTaskError` naming the task field, so a
wrong loader name, an unknown option or a missing weights file is one clear line.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmargin import plugins
from mmargin.data import Dataset
from mmargin.errors import InvalidTaskError
from mmargin.tasks import Component, ModelSpec, Task


@dataclass
class Resolved:
    """Everything a run needs, built from a task."""

    model: Any
    adapter: Any
    dataset: Dataset
    space: Any
    distance: Any
    goal: Any


def import_object(path: str, field: str = "model.factory") -> Any:
    """The object at ``package.module:attribute`` (a plain import, never ``eval``)."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidTaskError(field, f"cannot import module {module_name!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InvalidTaskError(field, f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


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


def component(kind: str, spec: Component, field: str, *args: Any) -> Any:
    """Build a registered component (space, distance, loader) from its task table."""
    try:
        entry = plugins.lookup(kind, spec.name)
    except KeyError as exc:
        raise InvalidTaskError(field, str(exc.args[0])) from None
    table = field.split(".")[0]
    return call_with_options(entry.factory, spec.options, table, *args)


def load_model(spec: ModelSpec, base: Path) -> Any:
    """Call the model factory and load weights (``torch.load(weights_only=True)``)."""
    factory = import_object(spec.factory)
    if not callable(factory):
        raise InvalidTaskError("model.factory", f"{spec.factory!r} is not callable")
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


def adapter_for(model: Any, spec: ModelSpec, device: str) -> Any:
    """Wrap the model: the named adapter, else the first plugin that recognises it."""
    options = dict(spec.adapter_options)
    if spec.adapter is not None:
        try:
            entry = plugins.lookup("adapters", spec.adapter)
        except KeyError as exc:
            raise InvalidTaskError("model.adapter", str(exc.args[0])) from None
        return call_with_options(
            entry.factory, {**options, "device": device}, "model.adapter_options", model
        )
    adapter = plugins.manager().hook.mmargin_adapt_model(
        model=model, device=device, options=options
    )
    if adapter is None:
        raise InvalidTaskError(
            "model.adapter", f"no installed plugin can adapt a {type(model).__name__}; name one"
        )
    return adapter


def resolve(task: Task) -> Resolved:
    """Load the model, data, space, distance and goal a task names."""
    from mmargin.goals import make_goal

    space = component("spaces", task.space, "space.name")
    distance = component("distances", task.distance, "distance.name")
    dataset = component("datasets", task.data, "data.loader")
    if not isinstance(dataset, Dataset):
        raise InvalidTaskError("data.loader", f"loader returned {type(dataset).__name__}")
    if task.samples is not None:
        dataset = dataset.head(task.samples)
    model = load_model(task.model, task.base)
    adapter = adapter_for(model, task.model, task.device)
    goal = make_goal(task.goal, task.target, **task.goal_options)
    return Resolved(model, adapter, dataset, space, distance, goal)
