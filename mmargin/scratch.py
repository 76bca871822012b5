"""Scratch tensors reused from one call to the next: the per-step projections' buffers.

The gradient engine projects a whole batch onto the distance's ε-ball at every step. A
projection that allocates batch-sized temporaries at every step costs more than their
arithmetic on CPU: glibc hands freed blocks of that size back to the operating system
and the next step faults the pages in again (``bench/overhead.py``, batch 500). The
functions here keep, per thread, one buffer per name and hand out a view of its first
elements shaped like the caller's tensor; the buffer grows when a larger batch asks for
it and is reused for every smaller one (the engine's batches shrink as samples stop).

A scratch tensor holds whatever the previous call left in it: callers overwrite it
entirely (``out=`` operations) before reading it, and never return it (results are fresh
tensors). Buffers above :data:`LIMIT` elements are not kept (a one-off huge batch does
not pin its memory); :func:`release` drops this thread's buffers.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

__all__ = ["LIMIT", "release", "scratch"]

LIMIT = 1 << 24
"""Largest buffer kept between calls, in elements (64 MiB of float32); larger requests
get a fresh tensor every time."""

_LOCAL = threading.local()


def _buffers() -> dict[str, tuple[Tensor, Tensor]]:
    table: dict[str, tuple[Tensor, Tensor]] | None = getattr(_LOCAL, "buffers", None)
    if table is None:
        table = {}
        _LOCAL.buffers = table
    return table


def scratch(name: str, like: Tensor) -> Tensor:
    """An uninitialised contiguous tensor of ``like``'s shape, dtype and device, backed by
    this thread's buffer ``name`` (the same memory on every call that fits in it)."""
    numel = like.numel()
    if numel > LIMIT:
        return torch.empty(like.shape, dtype=like.dtype, device=like.device)
    table = _buffers()
    entry = table.get(name)
    if entry is not None:
        buffer, view = entry
        if view.shape == like.shape and view.dtype == like.dtype and view.device == like.device:
            return view  # the common case: the same batch as the last step
        if buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
            entry = None
    if entry is None:
        buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
    view = buffer[:numel].view(like.shape)
    table[name] = (buffer, view)
    return view


def release() -> None:
    """Drop this thread's scratch buffers (the next call allocates them again)."""
    _buffers().clear()
