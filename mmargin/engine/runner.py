"""Old import path of the engine's entry point, kept while callers move.

New code imports :func:`minimal_flip` from :mod:`mmargin.engine` and
:class:`SearchSpec` from :mod:`mmargin.engine.spec`.
"""

from __future__ import annotations

from mmargin.engine.continuous import STRATEGIES, choose_strategy
from mmargin.engine.flip import minimal_flip
from mmargin.engine.spec import ExactFn, GradientConfig, SearchSpec

__all__ = ["STRATEGIES", "ExactFn", "GradientConfig", "SearchSpec", "choose_strategy",
           "minimal_flip"]  # fmt: skip
