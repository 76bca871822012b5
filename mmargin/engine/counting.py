"""The one pass counter: forward and backward sample-passes through a model.

A forward call on a batch of B inputs is B forward passes; each backward traversal that
reaches a tensor input is B backward passes (so several per-class gradients through one
forward, as class ranking, DeepFool and FAB take, each count). The engine wraps the
model adapter once with :class:`CountingAdapter`; benchmarks wrap a torch module with
:class:`CountingModule` so that every method is measured by the same rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


class BudgetExhausted(RuntimeError):
    """A pass was refused because it would take a counter past its ``limit``."""


@dataclass
class PassCounter:
    """Forward and backward sample-passes seen so far; ``limit`` (optional) caps their sum:
    a forward call that would go past it raises :class:`BudgetExhausted` before it runs."""

    forward: int = 0
    backward: int = 0
    limit: int | None = None
    observer: Callable[[int], None] | None = None
    """Told the rows of every forward pass (a progress bar that moves per step)."""

    @property
    def total(self) -> int:
        """Forward + backward sample-passes."""
        return self.forward + self.backward

    @property
    def left(self) -> int | None:
        """Passes still allowed under ``limit`` (``None``: no limit)."""
        return None if self.limit is None else self.limit - self.total

    def reset(self) -> None:
        """Start counting from zero again."""
        self.forward = self.backward = 0

    def before_forward(self, rows: int) -> None:
        """Refuse a forward pass of ``rows`` samples that would exceed the limit."""
        if self.limit is not None and self.total + rows > self.limit:
            raise BudgetExhausted(
                f"{rows} more passes would exceed the limit of {self.limit} "
                f"({self.total} already spent)"
            )

    def watch(self, x: Tensor) -> Tensor:
        """``x`` behind an identity node that counts its rows once per backward traversal
        that passes through this forward call (``x`` itself when no gradient can flow)."""
        if torch.is_grad_enabled() and x.requires_grad:
            out: Tensor = _CountBackward.apply(x, self)
            return out
        return x


class _CountBackward(torch.autograd.Function):
    """Identity whose backward adds the batch size to a counter's backward passes."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, counter: PassCounter) -> Tensor:
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        ctx.counter.backward += int(grad.shape[0])
        return grad, None


def _rows(x: Any) -> int:
    return int(x.shape[0]) if isinstance(x, Tensor) else len(x)


class CountingAdapter:
    """A model adapter that counts every sample-pass through the adapter it wraps.

    Tensor inputs count their rows; list inputs (discrete spaces) their length. Forwarded
    ``differentiable`` and ``device`` make it a drop-in :class:`~mmargin.protocols.ModelAdapter`.
    ``limit`` caps the passes (for a budgeted caller such as a per-sample report).
    """

    def __init__(self, model: Any, counter: PassCounter | None = None) -> None:
        self.model = model
        self.counter = counter if counter is not None else PassCounter()
        self.differentiable: bool = bool(model.differentiable)

    @property
    def device(self) -> torch.device:
        """The wrapped adapter's device."""
        device: torch.device = self.model.device
        return device

    @property
    def passes(self) -> int:
        """Forward + backward sample-passes so far."""
        return self.counter.total

    @property
    def left(self) -> int | None:
        """Passes still allowed (``None``: no limit)."""
        return self.counter.left

    def __call__(self, x: Any) -> Tensor:
        rows = _rows(x)
        self.counter.before_forward(rows)
        if isinstance(x, Tensor):
            x = self.counter.watch(x)
        out: Tensor = self.model(x)
        self.counter.forward += rows
        if self.counter.observer is not None:
            self.counter.observer(rows)
        return out

    def limited(self, limit: int) -> CountingAdapter:
        """A fresh counter around the same model that refuses passes beyond ``limit``."""
        return CountingAdapter(self.model, PassCounter(limit=limit))


class CountingModule(nn.Module):
    """A torch module wrapper with the same counting rule, for benchmarks and peers that
    need an ``nn.Module`` (Foolbox, adv_lib, torchattacks, ART)."""

    def __init__(self, model: nn.Module | Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.counter = PassCounter()

    @property
    def passes(self) -> int:
        """Forward + backward sample-passes so far."""
        return self.counter.total

    def reset(self) -> None:
        """Start counting from zero again."""
        self.counter.reset()

    def forward(self, x: Tensor) -> Tensor:
        """The wrapped model's scores, counted."""
        rows = int(x.shape[0])
        self.counter.before_forward(rows)
        out: Tensor = self.model(self.counter.watch(x))
        self.counter.forward += rows
        return out
