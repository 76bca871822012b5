"""The ``series`` space: additive changes to a 1-D time series, inside a value range.

A configured :class:`~mmargin.plugin.ContinuousSpace` is all the engine needs: the box
bounds every value to ``[lower, upper]`` and ``window = (start, end)`` freezes every step
outside ``start <= t < end`` (a mask). ``check``, ``project``, ``finalize``,
``free_gradient`` and ``random`` are inherited; the conformance kit checks them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmargin.plugin import ContinuousSpace


@dataclass
class SeriesSpace(ContinuousSpace):
    """Series of ``length`` steps with values in ``[lower, upper]``; only the steps of
    ``window`` (all when ``None``) may change."""

    name: str = "series"
    modality: str = "time series"
    lower: float | np.ndarray = -2.0
    upper: float | np.ndarray = 2.0
    length: int = 64
    window: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.length < 2:
            raise ValueError(f"length: expected at least 2 steps, got {self.length}")
        self.sample_shape = (self.length,)
        if self.window is not None:
            start, end = (int(v) for v in self.window)
            if not 0 <= start < end <= self.length:
                raise ValueError(
                    f"window: expected [start, end] with 0 <= start < end <= {self.length}, "
                    f"got {list(self.window)}"
                )
            mask = np.zeros(self.length)
            mask[start:end] = 1.0
            self.window, self.mask = (start, end), mask


def series_space(
    length: int = 64, lower: float = -2.0, upper: float = 2.0, window: list[int] | None = None
) -> SeriesSpace:
    """The factory a task's ``[space]`` table calls: ``name = "series"`` plus these options."""
    if not lower < upper:
        raise ValueError(f"lower must be < upper, got {lower} and {upper}")
    if window is not None and len(window) != 2:
        raise ValueError(f"window: expected [start, end], got {window!r}")
    return SeriesSpace(
        lower=float(lower),
        upper=float(upper),
        length=int(length),
        window=None if window is None else (int(window[0]), int(window[1])),
    )
