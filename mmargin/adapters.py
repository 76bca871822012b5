"""Model adapters: one calling convention for every kind of model.

An adapter maps a float tensor batch ``(B, ...)`` in the space's units to class scores
``(B, K)`` (logits or probabilities; the goal's margin loss only compares them). It says
whether gradients flow through it. Plugins register adapters for their model kinds
(scikit-learn estimators, ``transformers`` models, ...); this module has the two the core
needs: torch modules and plain callables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn


@runtime_checkable
class ModelAdapter(Protocol):
    """What the engine needs from a model."""

    differentiable: bool
    device: torch.device

    def __call__(self, x: Tensor) -> Tensor:
        """Scores ``(B, K)`` for a batch; differentiable w.r.t. ``x`` when ``differentiable``."""
        ...


def _as_channel_tensor(values: float | Sequence[float] | None, ndim: int) -> Tensor | None:
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float32)
    if t.dim() == 1 and ndim >= 2:  # per-channel statistics broadcast over C of (B, C, ...)
        t = t.view(1, -1, *([1] * (ndim - 2)))
    return t


@dataclass
class TorchAdapter:
    """A ``torch.nn.Module`` in eval mode on a device, with optional input normalisation.

    ``mean`` / ``std`` (scalars or per-channel lists) are applied inside the adapter, so
    margins stay in the space's units (pixels in ``[0, 1]``), as Foolbox's preprocessing.
    """

    module: nn.Module
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mean: float | Sequence[float] | None = None
    std: float | Sequence[float] | None = None
    differentiable: bool = True

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.module = self.module.to(self.device).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    def __call__(self, x: Tensor) -> Tensor:
        x = x.to(self.device)
        if self.mean is not None or self.std is not None:
            mean = _as_channel_tensor(self.mean, x.dim())
            std = _as_channel_tensor(self.std, x.dim())
            if mean is not None:
                x = x - mean.to(x)
            if std is not None:
                x = x / std.to(x)
        out = self.module(x)
        if isinstance(out, tuple):
            out = out[0]
        logits = getattr(out, "logits", out)
        if not isinstance(logits, Tensor):
            raise TypeError(f"model returned {type(out).__name__}, expected a tensor of scores")
        return logits


@dataclass
class CallableAdapter:
    """A black box ``f(numpy batch) -> scores``: no gradients; the engine uses decisions only."""

    function: Callable[[np.ndarray], Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    differentiable: bool = False

    def __call__(self, x: Tensor) -> Tensor:
        scores = np.asarray(self.function(x.detach().cpu().numpy()), dtype=np.float64)
        if scores.ndim == 1:  # a binary score: class 1 when > 0
            scores = np.stack([-scores, scores], axis=1)
        return torch.as_tensor(scores, dtype=x.dtype, device=x.device)


def adapt(model: Any, device: str | torch.device = "cpu", **options: Any) -> ModelAdapter:
    """The default adapter for a model object: torch modules and plain callables."""
    if isinstance(model, (TorchAdapter, CallableAdapter)):
        return model
    if isinstance(model, nn.Module):
        return TorchAdapter(model, device=torch.device(device), **options)
    if callable(model):
        return CallableAdapter(model, device=torch.device(device))
    raise TypeError(f"cannot adapt a {type(model).__name__}: expected a torch module or callable")
