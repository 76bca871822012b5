"""The minimal-flip search engine: the only place in mmargin that searches.

``from mmargin.engine import minimal_flip`` is the entry point (resolved lazily, so that
importing :mod:`mmargin.engine.spec` stays cheap); :mod:`mmargin.engine.spec` holds the
search specification.
"""

from __future__ import annotations

from typing import Any

__all__ = ["minimal_flip"]


def __getattr__(name: str) -> Any:
    if name == "minimal_flip":
        from mmargin.engine.flip import minimal_flip

        return minimal_flip
    raise AttributeError(f"module 'mmargin.engine' has no attribute {name!r}")
