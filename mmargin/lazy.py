"""Names a package resolves on first use, so importing it stays cheap (no torch at
``mmargin --help``): one module-level ``__getattr__`` for every such package."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, table: Mapping[str, str | tuple[str, str]]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``table[name]`` is the module that defines
    ``name``, or ``(module, name there)`` when it is defined under another name."""

    def __getattr__(name: str) -> Any:
        entry = table.get(name)
        if entry is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = (entry, name) if isinstance(entry, str) else entry
        return getattr(importlib.import_module(module), attribute)

    return __getattr__
