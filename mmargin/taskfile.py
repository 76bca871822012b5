"""Paths in a task file, and the task written back as a task file (``task.resolved.toml``).

Every relative path a task names resolves against the task file's folder, never the
working directory: ``task.out``, ``model.weights``, and the options of ``[data]`` and
``[model.options]`` whose key says it is a path (:func:`is_path_key`: ``path``, ``folder``,
``root``, ``file``, ``dir``, ``weights`` or a name ending in ``_path``, ``_file``,
``_dir``, ``_folder`` or ``_root``). :func:`absolute_paths` makes them absolute when the
task is parsed, so a parsed task means the same wherever it is run from.

:func:`task_tables` turns a parsed task back into the tables of a task file (defaults
filled in, paths absolute) and :func:`dump_toml` writes them with ``tomli_w``; reading
the result with :func:`mmargin.tasks.load_task` gives the same task, so a run folder's
``task.resolved.toml`` runs again (``mmargin run runs/x/task.resolved.toml``). A model
factory from the original task's folder (``module:function``) is still only imported
from the folder of the task file being run (see :mod:`mmargin.factories`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PATH_KEYS = frozenset({"path", "folder", "root", "file", "dir", "directory", "weights"})
"""Option names whose string value is a file-system path."""
PATH_SUFFIXES = ("_path", "_file", "_dir", "_folder", "_root")
"""Option-name endings whose string value is a file-system path."""
INFO_TABLES = ("versions",)
"""Tables a written task carries for the record only (package versions); reading a task
accepts and ignores them."""


def is_path_key(key: str) -> bool:
    """Whether an option named ``key`` holds a path (by the naming rule above)."""
    return key in PATH_KEYS or key.endswith(PATH_SUFFIXES)


def absolute(value: str, base: Path) -> str:
    """``value`` as an absolute path: ``~`` expanded, a relative one joined to ``base``."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def absolute_paths(options: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """``options`` with every path-named string value (:func:`is_path_key`) made absolute
    against ``base``; lists of strings under such a key too. Other values are kept."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if not is_path_key(key):
            pass
        elif isinstance(value, str) and value:
            value = absolute(value, base)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = [absolute(v, base) for v in value]
        out[key] = value
    return out


def task_tables(task: Any, fields: Sequence[str]) -> dict[str, Any]:
    """A parsed :class:`~mmargin.tasks.Task` as the tables of a task file, defaults written.

    ``parse_task(task_tables(t, FIELDS))`` equals ``t`` up to ``base``: each scalar field
    ``"table.key"`` of ``fields`` (:data:`mmargin.tasks.FIELDS`) is written under its table
    from the task attribute of the same name (``goal.kind`` from ``goal``, the threshold
    options from ``goal_options``).
    """
    tables: dict[str, dict[str, Any]] = {}
    for where in fields:
        table, _, key = where.partition(".")
        if table == "goal" and key != "target":
            value = task.goal if key == "kind" else task.goal_options.get(key)
        else:
            value = getattr(task, key, None)
        if isinstance(value, tuple):
            value = list(value)
        if value is not None:
            tables.setdefault(table, {})[key] = value
    if task.model is not None:
        model: dict[str, Any] = {"factory": task.model.factory, "weights": task.model.weights,
                                 "adapter": task.model.adapter}  # fmt: skip
        tables["model"] = {k: v for k, v in model.items() if v is not None}
        for key in ("options", "adapter_options"):
            if getattr(task.model, key):
                tables["model"][key] = dict(getattr(task.model, key))
    if task.data is not None:
        tables["data"] = {"loader": task.data.name, **task.data.options}
    tables["space"] = {"name": task.space.name, **task.space.options}
    tables["distance"] = {"name": task.distance.name, **task.distance.options}
    order = ("task", "model", "data", "space", "distance", "goal", "search", "report")
    return {name: tables[name] for name in order if name in tables}


def dump_toml(data: Mapping[str, Any]) -> str:
    """``data`` (nested tables of strings, numbers, booleans, lists) as TOML text.

    Written by ``tomli_w``, so any key or string (quotes, newlines, non-ASCII) reads back
    exactly; ``None`` values are left out (TOML has no null) and tuples become lists.
    """
    import tomli_w

    return tomli_w.dumps(_plain(data))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value
