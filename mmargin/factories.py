"""Where a task's model may come from: what a shared task file is allowed to execute.

A task file is data, but ``model.factory`` names code to call. It resolves to exactly one of

1. a **registered model**: a name a plugin registered through ``mmargin_register_models``
   (``factory = "mnist_cnn"``);
2. a **module in the task file's own folder**: ``factory = "mymodels:build"`` with
   ``mymodels.py`` beside the task (that folder is made importable while the model is
   built; the module must not shadow an installed or standard-library module);
3. a **package the user allowed outside the task file**: ``factory = "mypkg.models:build"``
   after ``mmargin run --allow-import mypkg``, ``MMARGIN_ALLOW_IMPORTS=mypkg`` or
   ``allow_imports = ["mypkg"]`` in the user settings file (:func:`settings_path`).

Never the standard library or builtins (even if "allowed"), never an object that is not a
function or class defined in the module it is named from (a re-exported ``os.system``).
:func:`plan_factory` decides this from the strings alone, before anything is imported, so
a hostile task is refused in one line; :func:`load_factory` then imports what was planned.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import keyword
import os
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmargin.errors import InvalidTaskError

FIELD = "model.factory"
ENV_ALLOW = "MMARGIN_ALLOW_IMPORTS"
ENV_SETTINGS = "MMARGIN_SETTINGS"

_LOCAL_MODULES: dict[str, Path] = {}
"""Top-level names imported from a task's folder, and that folder (so a second task folder
with a module of the same name replaces the first instead of being refused)."""


@dataclass(frozen=True)
class FactoryPlan:
    """A model factory a task may call, decided before anything is imported.

    ``kind`` is ``registered``, ``local`` (a module in the task's folder ``folder``) or
    ``allowed`` (a package the user allowed; ``granted_by`` says where).
    """

    spec: str
    kind: Literal["registered", "local", "allowed"]
    module: str = ""
    attr: str = ""
    plugin: str = ""
    folder: Path | None = None
    granted_by: str = ""

    def describe(self) -> str:
        """One line for ``mmargin run`` / ``mmargin check``: what will be imported."""
        if self.kind == "registered":
            return f"model factory {self.spec!r}, registered by plugin {self.plugin!r}"
        if self.kind == "local":
            return (f"model factory {self.attr!r} from module {self.module!r} in the task's "
                    f"folder {self.folder}")  # fmt: skip
        top = self.module.split(".")[0]
        return (f"model factory {self.attr!r} from module {self.module!r} (package {top!r} "
                f"allowed by {self.granted_by})")  # fmt: skip


def settings_path() -> Path:
    """The user settings file: ``$MMARGIN_SETTINGS``, else ``$XDG_CONFIG_HOME/mmargin/
    settings.toml`` (``~/.config/mmargin/settings.toml``)."""
    if os.environ.get(ENV_SETTINGS):
        return Path(os.environ[ENV_SETTINGS]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(config) / "mmargin" / "settings.toml"


def allowed_packages(extra: Sequence[str] = ()) -> dict[str, str]:
    """Packages the user allowed task files to import from, mapped to who allowed them.

    ``extra`` comes from ``--allow-import`` (or the API's ``allow_imports``); the
    environment variable and the settings file add theirs. A standard-library name or a
    dotted name is refused (:class:`InvalidTaskError` on field ``allow_imports``).
    """
    found: dict[str, str] = {}
    settings = settings_path()
    if settings.is_file():
        try:
            listed = tomllib.loads(settings.read_text(encoding="utf-8")).get("allow_imports", [])
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidTaskError(
                str(settings), f"cannot read the settings file ({exc})"
            ) from None
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise InvalidTaskError(f"{settings}: allow_imports", "expected a list of package names")
        found.update(dict.fromkeys(listed, f"the settings file {settings}"))
    env = [n.strip() for n in os.environ.get(ENV_ALLOW, "").split(",") if n.strip()]
    found.update(dict.fromkeys(env, f"${ENV_ALLOW}"))
    found.update(dict.fromkeys(extra, "--allow-import"))
    for name, source in found.items():
        if not _is_dotted_name(name) or "." in name:
            raise InvalidTaskError("allow_imports", f"{name!r} (from {source}) is not a "
                                   "top-level package name")  # fmt: skip
        if _is_stdlib(name):
            raise InvalidTaskError(
                "allow_imports",
                f"{name!r} (from {source}) is part of Python's standard library, "
                "which a task may never import",
            )
    return found


def plan_factory(
    spec: str, folder: Path, allowed: Mapping[str, str], models: Mapping[str, Any]
) -> FactoryPlan:
    """Decide where ``model.factory`` comes from, importing nothing.

    ``models`` is the registry of model factories (name → entry with ``.plugin``), ``folder``
    the task file's folder, ``allowed`` what :func:`allowed_packages` returned. Anything
    else raises :class:`InvalidTaskError` on ``model.factory``, in one line.
    """
    if ":" not in spec:
        if spec in models:
            return FactoryPlan(spec, "registered", plugin=str(models[spec].plugin))
        known = ", ".join(sorted(models)) or "none"
        raise InvalidTaskError(FIELD, f"{spec!r} is not a registered model (registered: "
                               f"{known}); or write 'module:function'")  # fmt: skip
    module, _, attr = spec.partition(":")
    if not _is_dotted_name(module) or not attr.isidentifier() or keyword.iskeyword(attr):
        raise InvalidTaskError(FIELD, f"expected a registered model name or "
                               f"'module:function', got {spec!r}")  # fmt: skip
    if attr.startswith("__"):
        raise InvalidTaskError(FIELD, f"{spec!r}: a dunder attribute is never a model factory")
    top = module.split(".")[0]
    if _is_stdlib(top):
        raise InvalidTaskError(FIELD, f"{spec!r} is refused: a task may not call into "
                               f"Python's standard library ({top!r})")  # fmt: skip
    folder = folder.resolve()
    if _local_file(folder, module) is not None:
        _check_not_shadowing(top, folder, spec)
        return FactoryPlan(spec, "local", module=module, attr=attr, folder=folder)
    if top in allowed:
        return FactoryPlan(spec, "allowed", module=module, attr=attr, granted_by=allowed[top])
    hint = f"; the registered model {attr!r} may be what you want" if attr in models else ""
    raise InvalidTaskError(FIELD, (
        f"{spec!r} is refused: {module!r} is not a module in the task's folder ({folder}) and "
        f"package {top!r} is not allowed (allow it outside the task: --allow-import {top} or "
        f"{ENV_ALLOW}={top}){hint}"
    ))  # fmt: skip


def load_factory(plan: FactoryPlan, models: Mapping[str, Any]) -> Callable[..., Any]:
    """Import what ``plan`` names and return the factory (checked to be defined there)."""
    if plan.kind == "registered":
        factory: Callable[..., Any] = models[plan.spec].factory
        return factory
    with _importable(plan.folder):
        if plan.kind == "local":
            _forget_other_folder(plan.module.split(".")[0], plan.folder)
        try:
            module = importlib.import_module(plan.module)
        except ImportError as exc:
            raise InvalidTaskError(FIELD, f"cannot import module {plan.module!r} ({exc})") from None
    if plan.kind == "local":
        assert plan.folder is not None
        where = Path(getattr(module, "__file__", "") or "").resolve()
        if not where.is_relative_to(plan.folder):
            raise InvalidTaskError(FIELD, f"module {plan.module!r} was found at {where}, "
                                   f"outside the task's folder {plan.folder}")  # fmt: skip
        _LOCAL_MODULES[plan.module.split(".")[0]] = plan.folder
    obj = vars(module).get(plan.attr)
    if obj is None:
        raise InvalidTaskError(FIELD, f"module {plan.module!r} has no attribute {plan.attr!r}")
    inner = inspect.unwrap(obj)
    home = plan.module.split(".")[0]  # defined in the task's folder / the allowed package
    defined = getattr(inner, "__module__", None) or ""
    if not (inspect.isfunction(inner) or inspect.isclass(inner)) or not callable(obj):
        raise InvalidTaskError(FIELD, f"{plan.spec!r} is not a function or class")
    if defined != home and not defined.startswith(home + "."):
        raise InvalidTaskError(
            FIELD,
            f"{plan.spec!r} is refused: it is defined in {defined!r}, not in {home!r} "
            "(re-exported callables are not factories)",
        )
    return obj


def local_folder_on_path(folder: Path | None) -> contextlib.AbstractContextManager[None]:
    """While active, the task's folder is importable (a local model's forward may import
    siblings lazily); a no-op for ``None``."""
    return _importable(folder)


@contextlib.contextmanager
def _importable(folder: Path | None) -> Iterator[None]:
    if folder is None or str(folder) in sys.path:
        yield
        return
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


def _is_dotted_name(name: str) -> bool:
    parts = name.split(".")
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def _is_stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "__main__"


def _local_file(folder: Path, module: str) -> Path | None:
    """The file of ``module`` inside ``folder`` (``a/b.py`` or ``a/b/__init__.py``), if any."""
    parts = module.split(".")
    top = folder / parts[0]
    if not ((folder / f"{parts[0]}.py").is_file() or (top / "__init__.py").is_file()):
        return None
    base = folder.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _check_not_shadowing(top: str, folder: Path, spec: str) -> None:
    """Refuse a task-folder module whose name an installed module already has."""
    loaded = sys.modules.get(top)
    if loaded is not None and top not in _LOCAL_MODULES:
        where = getattr(loaded, "__file__", None) or "built in"
        raise InvalidTaskError(FIELD, f"{spec!r} is refused: {top!r} in the task's folder "
                               f"would shadow the installed module at {where}")  # fmt: skip
    if loaded is None:
        found = importlib.util.find_spec(top)
        origin = Path(found.origin).resolve() if found and found.origin else None
        if found is not None and (origin is None or not origin.is_relative_to(folder)):
            raise InvalidTaskError(FIELD, f"{spec!r} is refused: {top!r} in the task's folder "
                                   f"would shadow the installed module at {origin}")  # fmt: skip


def _forget_other_folder(top: str, folder: Path | None) -> None:
    """Drop a same-named module imported earlier from another task's folder."""
    if top in _LOCAL_MODULES and _LOCAL_MODULES[top] != folder:
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
        del _LOCAL_MODULES[top]
