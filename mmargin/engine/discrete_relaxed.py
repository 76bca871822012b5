"""Old import path of the relaxed-space types, kept while plugins move to
:mod:`mmargin.plugin`; the strategy is :mod:`mmargin.engine.relaxed`."""

from __future__ import annotations

from mmargin.protocols import Encoding, RelaxedSpace

__all__ = ["Encoding", "RelaxedSpace"]
