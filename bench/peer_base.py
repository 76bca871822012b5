"""What every compared method shares: the norms, the :class:`Method` record and its
``config``/``run`` signatures, and the iteration count that fits a pass budget."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from mmargin.engine.counting import CountingModule

NORMS = ("l2", "linf", "l1")
"""The norms a run measures by default."""
ALL_NORMS = (*NORMS, "l0")
"""Every norm the harness can measure; L0 counts changed pixels (on demand: ``--norms``)."""
P = {"l2": 2.0, "linf": math.inf, "l1": 1.0, "l0": 0.0}


RunFn = Callable[
    [CountingModule, Tensor, Tensor, str, dict[str, Any]], tuple[Tensor, dict[str, Any]]
]
ConfigFn = Callable[[str, int], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    """One compared method: ``key`` is ``library.attack``; ``config(norm, budget)`` gives
    the settings recorded in the results and passed to ``run``."""

    key: str
    library: str
    attack: str
    norms: tuple[str, ...]
    config: ConfigFn
    run: RunFn
    notes: dict[str, str] = field(default_factory=dict)


def steps(budget: int, per_step: int, fixed: int) -> int:
    """Iterations that fit ``budget`` passes: ``fixed`` passes around the loop, ``per_step``
    passes per iteration (at least one iteration)."""
    return max((budget - fixed) // per_step, 1)
