"""The conformance kit's error and protocol-membership check (a leaf the checks import)."""

from __future__ import annotations

from typing import Any


class ConformanceError(AssertionError):
    """A plugin object broke its contract; the message says which check and what broke."""


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` (a :mod:`mmargin.protocols` class) that ``obj`` lacks."""
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {
        k
        for k, v in vars(protocol).items()
        if not k.startswith("_") and (callable(v) or isinstance(v, property))
    }
    return sorted(n for n in names if not hasattr(obj, n))


def require_protocol(obj: Any, protocol: type) -> None:
    """Raise :class:`ConformanceError` naming the missing members unless ``obj`` has every
    member of ``protocol``."""
    missing = missing_members(obj, protocol)
    if missing:
        raise ConformanceError(
            f"{type(obj).__name__} does not implement mmargin.protocols.{protocol.__name__}: "
            f"missing {', '.join(missing)}"
        )
