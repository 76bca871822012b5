"""What a task will import and run, listed before anything runs (``mmargin check``).

The list names the plugins that will be loaded (installed code the user chose), the model
factory and where it comes from (see :mod:`mmargin.factories`), the weights file (read as
tensors only), and the registered loader, space, distance and adapter with the plugin that
provides each. Building it imports no model code and runs no loader.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmargin import plugins
from mmargin.errors import InvalidTaskError
from mmargin.resolve import model_plan
from mmargin.tasks import Task


def describe_task(task: Task, allow_imports: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(what, description) rows; raises :class:`InvalidTaskError` for what a run would
    refuse (an unknown component name, a factory the task may not import)."""
    rows = [("task", f"{task.name} (from {task.base.resolve()})")]
    pm = plugins.manager()
    loaded = [
        f"{pm.get_name(plugin)} ({dist.project_name} {dist.version})"
        for plugin, dist in pm.list_plugin_distinfo()
    ]
    rows.append(("plugins", ", ".join(sorted(loaded)) or "none"))
    if task.model is not None and task.model.factory is not None:
        rows.append(("model", model_plan(task, allow_imports).describe()))
        if task.model.weights is not None:
            path = (task.base / task.model.weights).resolve()
            rows.append(("weights", f"{path} (tensors only: torch.load(weights_only=True))"))
        adapter = task.model.adapter
        rows.append(("adapter", _entry("adapters", adapter, "model.adapter") if adapter
                     else "chosen by the installed plugins (mmargin_adapt_model)"))  # fmt: skip
    else:
        rows.append(("model", "none named: pass model= to run_task"))
    if task.data is not None:
        rows.append(("data", _entry("datasets", task.data.name, "data.loader")))
    rows.append(("space", _entry("spaces", task.space.name, "space.name")))
    rows.append(("distance", _entry("distances", task.distance.name, "distance.name")))
    rows.append(("device", task.device))
    return rows


def _entry(kind: str, name: str, field: str) -> str:
    try:
        entry = plugins.lookup(kind, name)
    except KeyError as exc:
        raise InvalidTaskError(field, str(exc.args[0])) from None
    return f"{name!r} from plugin {entry.plugin!r}"
