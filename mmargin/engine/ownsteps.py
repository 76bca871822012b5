"""Batched runs whose samples take different numbers of steps (their own lengths).

The leftover (:mod:`mmargin.engine.leftover`) gives each sample the steps its own runs
left unspent, so the samples of one batch want runs of different lengths. Running one
batched call per distinct length paid a step's fixed cost (Python, kernel launches, small
matrix products) once per group: on CPU a LeNet step costs ~4 ms at batch 1 against
~0.25 ms per row at batch 200. Instead, one batched run takes as many steps as the longest
sample, and a sample leaves the batch once its own steps are done: its per-row tensors are
compacted at those steps only (at most one compaction per distinct length). The arithmetic
of every row is its own, so each sample ends exactly where a run of its own length, on it
alone, ends (``lagrangian_run(lengths=...)``, ``polish_run(lengths=...)``).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["compact", "running"]


def running(own: Tensor, k: int) -> Tensor | None:
    """Before step ``k`` (0-based) of a run whose rows take ``own`` steps each: the mask of
    the rows that still have steps, or ``None`` while every row does (nothing to compact)."""
    keep = own > k
    return None if bool(keep.all()) else keep


def compact(keep: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """The rows ``keep`` (a boolean mask) of each per-row tensor in ``values``."""
    return tuple(v[keep] for v in values)
