"""Progress of a run: a bar with rate and ETA on stderr, or the caller's own callback.

The engine reports finished samples after each batch and, through
:class:`~mmargin.engine.driver.Units`, the rows of every forward pass inside a batch.
:class:`BarProgress` turns the passes into an estimate of the samples done so far in the
batch (each sample may spend up to ``budget`` passes, about half of them forward), so the
bar moves at every step and snaps to the true count when the batch is finished.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Tick = Callable[[int], None]


class BarProgress:
    """A tqdm bar over the samples of a run that also moves per search step."""

    def __init__(self, bar: Any, budget: int, batch_size: int) -> None:
        self.bar = bar
        self.per_row = 2.0 / max(budget, 1)  # forward rows seen ≈ half the passes spent
        self.cap = 0.95 * batch_size
        self.partial = 0.0

    def __call__(self, samples: int) -> None:
        """``samples`` more samples are finished (and on disk)."""
        self.bar.update(samples - self.partial)
        self.bar.n = round(self.bar.n)  # whole samples again, no float drift past the total
        self.partial = 0.0

    def step(self, rows: int) -> None:
        """A forward pass of ``rows`` rows inside the batch in flight."""
        room = min(self.cap, self.bar.total - self.bar.n + self.partial - 1e-6) - self.partial
        gain = min(rows * self.per_row, max(room, 0.0))
        if gain > 0:
            self.partial += gain
            self.bar.update(gain)


@contextmanager
def progress_callback(
    progress: Tick | bool | None, total: int, budget: int, batch_size: int
) -> Iterator[Tick | None]:
    """What the engine should call as samples finish: ``progress`` itself when it is a
    callback (called with the number of samples each batch finished), a bar on stderr
    (samples, rate, ETA; moving per search step) when it is ``True``, nothing otherwise.
    The bar is closed on the way out."""
    if progress is None or progress is False:
        yield None
        return
    if callable(progress):
        yield progress
        return
    bar = make_bar(total)
    try:
        yield BarProgress(bar, budget, batch_size)
    finally:
        bar.close()


def make_bar(total: int) -> Any:
    """A tqdm bar over ``total`` samples on stderr, one decimal for fractional progress."""
    from tqdm import tqdm

    return tqdm(total=total, unit="sample", file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1, bar_format="{l_bar}{bar}| {n:.0f}/{total} "
                "[{elapsed}<{remaining}, {rate_fmt}]")  # fmt: skip
