"""The plugin host: one pluggy manager, plugins found through the ``mmargin`` entry point.

Built-in plugins (the core's own distances and spaces, the image plugin ...) load exactly
the way a third-party plugin does: through ``[project.entry-points.mmargin]``. Loading is
lazy and happens once; a plugin that implements a misspelled hook fails loudly
(``check_pending``), and one that raises while it is imported or registers becomes a
:class:`~mmargin.errors.PluginError` naming it. Registries map names to factories and
remember which plugin provided each, for ``mmargin plugins`` and for error messages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pluggy

from mmargin import hookspecs
from mmargin.errors import PluginError

KINDS = ("spaces", "distances", "adapters", "datasets", "models")

_pm: pluggy.PluginManager | None = None
_registries: dict[str, dict[str, Entry]] | None = None


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, factory, one-line help and providing plugin."""

    name: str
    factory: Callable[..., Any]
    help: str
    plugin: str


def manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every installed plugin loaded and checked.

    ``MMARGIN_DISABLE_PLUGINS`` (comma-separated entry-point names) keeps plugins out.
    """
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("mmargin")
        pm.add_hookspecs(hookspecs)
        for name in os.environ.get("MMARGIN_DISABLE_PLUGINS", "").split(","):
            if name.strip():
                pm.set_blocked(name.strip())
        for name in _entry_point_names():
            try:
                pm.load_setuptools_entrypoints("mmargin", name=name)
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"a mmargin plugin is broken: {exc}") from exc
            except Exception as exc:  # any failure importing a plugin
                raise PluginError(
                    f"plugin {name!r} failed to load ({type(exc).__name__}: {_line(exc)}); "
                    f"uninstall it or set MMARGIN_DISABLE_PLUGINS={name}"
                ) from exc
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"a mmargin plugin is broken: {exc}") from exc
        _pm = pm
    return _pm


def _entry_point_names() -> list[str]:
    """The names in the ``mmargin`` entry-point group, in a stable order."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group="mmargin")})


def _line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or "no message"


def registries() -> dict[str, dict[str, Entry]]:
    """Everything the loaded plugins registered, by kind (``spaces``, ``distances``...)."""
    global _registries
    if _registries is None:
        pm = manager()
        found: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            caller = getattr(pm.hook, f"mmargin_register_{kind}")
            for impl in caller.get_hookimpls():
                register = _registrar(found[kind], kind, impl.plugin_name)
                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:  # a plugin's own bug, named
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} failed while registering its {kind} "
                        f"({type(exc).__name__}: {_line(exc)})"
                    ) from exc
        _registries = found
    return _registries


def _registrar(table: dict[str, Entry], kind: str, plugin: str) -> Callable[..., None]:
    def register(name: str, factory: Callable[..., Any], help: str = "") -> None:
        if name in table:
            raise PluginError(
                f"{kind[:-1]} {name!r} is registered twice: by plugin "
                f"{table[name].plugin!r} and by plugin {plugin!r}"
            )
        table[name] = Entry(name=name, factory=factory, help=help, plugin=plugin)

    return register


def lookup(kind: str, name: str) -> Entry:
    """The entry registered under ``name``, or a :class:`KeyError` listing what exists."""
    table = registries()[kind]
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise KeyError(f"unknown {kind[:-1]} {name!r}; installed: {known}")
    return table[name]


def reset() -> None:
    """Forget the registries so the next lookup asks the plugins again (used by tests)."""
    global _registries
    _registries = None


@contextlib.contextmanager
def registered(plugin: object, name: str | None = None) -> Iterator[pluggy.PluginManager]:
    """Register a plugin object for the duration of a ``with`` block (tests, notebooks)."""
    pm = manager()
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
        reset()
        yield pm
    finally:
        pm.unregister(plugin)
        reset()


def describe() -> list[tuple[str, str, str, str]]:
    """Rows of (plugin, kind, name, help) for ``mmargin plugins``, sorted."""
    rows = []
    for kind, table in registries().items():
        for entry in table.values():
            rows.append((entry.plugin, kind[:-1], entry.name, entry.help))
    pm = manager()
    for hook in ("mmargin_exact_margin", "mmargin_adapt_model", "mmargin_sample_report",
                 "mmargin_write_artifacts"):  # fmt: skip
        for impl in getattr(pm.hook, hook).get_hookimpls():
            rows.append((impl.plugin_name, "hook", hook.removeprefix("mmargin_"), ""))
    return sorted(rows)
