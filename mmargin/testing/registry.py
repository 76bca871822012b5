"""The conformance kit's view of the plugin registry: build a registered component as a
task would, and find what a plugin registers without a conformance case."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mmargin.testing.cases import Case

REGISTRY_KINDS = ("spaces", "distances", "adapters", "datasets", "models")
"""The registry tables a plugin fills (``mmargin.plugins.KINDS``)."""


def build_registered(kind: str, name: str, *args: Any, **options: Any) -> Any:
    """The object the factory registered as ``name`` in table ``kind`` returns, looked up
    through the plugin registry exactly as a task file's name is."""
    from mmargin import plugins

    return plugins.lookup(kind, name).factory(*args, **options)


def unchecked_registrations(
    plugin: str, cases: Iterable[Case], *, also: Iterable[str] = ()
) -> dict[str, set[str]]:
    """Per registry table, the names ``plugin`` registers that no case covers (empty when
    everything is checked). A case covers a name it is called by, or any dash-separated
    part of its name (``"word-mr_cnn"`` covers ``word`` and ``mr_cnn``); ``also`` lists
    names checked elsewhere."""
    from mmargin import plugins

    names = {case.name for case in cases}
    covered = names | {part for name in names for part in name.split("-")} | set(also)
    missing: dict[str, set[str]] = {}
    for kind in REGISTRY_KINDS:
        mine = {e.name for e in plugins.registries()[kind].values() if e.plugin == plugin}
        if mine - covered:
            missing[kind] = mine - covered
    return missing
