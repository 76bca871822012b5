"""The record every exact method returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ExactMargin:
    """A proven minimal (or lower-bounded) margin for one sample.

    ``margin`` is the size of ``adversarial - x`` in the requested norm (``inf`` when no
    flip exists inside the constraint set); ``lower`` is a proven lower bound (equal to
    ``margin`` when ``optimal``); ``adversarial`` is the minimiser as a flat or shaped
    array like ``x`` (``None`` when no flip exists); ``adv_label`` the class it lands in;
    ``method`` names how it was obtained (``"linear-closed-form"``, ``"milp"``, or
    ``"crown"`` / ``"interval"`` for a certified bound alone: then ``adversarial`` is
    ``None``, ``margin`` is ``inf`` and ``optimal`` false — ``lower`` is what is proven);
    ``plugin`` the plugin that answered (the host fills it in).
    """

    margin: float
    lower: float
    adversarial: np.ndarray | None
    adv_label: int | None
    method: str
    optimal: bool
    info: dict[str, float] = field(default_factory=dict)
    plugin: str = ""
    """The plugin that answered (filled by the host; named when a claim is discarded)."""
