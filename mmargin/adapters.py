"""Model adapters: one calling convention for every kind of model.

An adapter maps a float tensor batch ``(B, ...)`` in the space's units to class scores
``(B, K)`` (logits or probabilities; the goal's margin loss only compares them). It says
whether gradients flow through it. Plugins register adapters for their model kinds
(scikit-learn estimators, ``transformers`` models, ...); this module has the two the core
needs: torch modules and plain callables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmargin.protocols import ModelAdapter

__all__ = ["CallableAdapter", "ModelAdapter", "TorchAdapter", "adapt", "check_device"]

_DEVICE = re.compile(r"(cpu|cuda|mps)(:\d+)?")


def check_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` names, or a ``ValueError`` with one line saying why not
    (a misspelt device, ``cuda`` on a machine without a GPU, a GPU index that is not there)."""
    text = str(name).strip().lower()
    if not _DEVICE.fullmatch(text):
        raise ValueError(f"device {str(name)!r}: expected cpu, cuda or cuda:N (or mps)")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r}: no CUDA GPU is available on this machine; "
                             "use device = \"cpu\"")  # fmt: skip
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA GPU(s)")  # fmt: skip
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {text!r}: MPS is not available on this machine")
    return device


def members_of(module: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """Every submodule and parameter of ``module`` (what :func:`inference_mode_of` switches)."""
    return list(module.modules()), list(module.parameters())


@contextmanager
def inference_mode_of(
    module: nn.Module, members: tuple[list[nn.Module], list[nn.Parameter]] | None = None
) -> Iterator[None]:
    """Run ``module`` in eval mode with frozen parameters, then put back exactly what was
    there (training flags of every submodule, ``requires_grad`` of every parameter), even
    when the call raises: the caller's model is never left changed. ``members``: the
    module's :func:`members_of`, if the caller has them already (walking the module tree
    costs ~40-70 µs a call on the tuning models, a share of a small model's step)."""
    modules, parameters = members_of(module) if members is None else members
    training = [m for m in modules if m.training]
    trainable = [p for p in parameters if p.requires_grad]
    for m in training:
        m.training = False
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m in training:
            m.training = True
        for p in trainable:
            p.requires_grad_(True)


def _as_channel_tensor(values: float | Sequence[float] | None, ndim: int) -> Tensor | None:
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float32)
    if t.dim() == 1 and ndim >= 2:  # per-channel statistics broadcast over C of (B, C, ...)
        t = t.view(1, -1, *([1] * (ndim - 2)))
    return t


@dataclass
class TorchAdapter:
    """A ``torch.nn.Module`` run in eval mode on a device, with optional normalisation.

    ``mean`` / ``std`` (scalars or per-channel lists) are applied inside the adapter, so
    margins stay in the space's units (pixels in ``[0, 1]``), as Foolbox's preprocessing.
    The module is never left changed: each call switches it to eval mode with frozen
    parameters and restores its training flags and ``requires_grad`` afterwards (the
    engine takes gradients with respect to the input only). On another device than the
    module's, the module is moved there (a copy is the caller's choice).
    """

    module: nn.Module
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mean: float | Sequence[float] | None = None
    std: float | Sequence[float] | None = None
    differentiable: bool = True
    _members: tuple[nn.Module, tuple[list[nn.Module], list[nn.Parameter]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """The module's submodules and parameters, read at the first call (the engine calls
    the adapter once per step)."""

    def __post_init__(self) -> None:
        self.device = check_device(self.device)
        first = next(iter(self.module.parameters()), None)
        if first is not None and first.device != self.device:
            self.module = self.module.to(self.device)

    def members(self) -> tuple[list[nn.Module], list[nn.Parameter]]:
        """:func:`members_of` the module, read once per module object: a new ``module``
        is read again, a submodule added in place to the same object after the first call
        is not (replace the module, or make a new adapter, to change its layers)."""
        if self._members is None or self._members[0] is not self.module:
            self._members = (self.module, members_of(self.module))
        return self._members[1]

    def __call__(self, x: Tensor) -> Tensor:
        x = x.to(self.device)
        if self.mean is not None or self.std is not None:
            mean = _as_channel_tensor(self.mean, x.dim())
            std = _as_channel_tensor(self.std, x.dim())
            if mean is not None:
                x = x - mean.to(x)
            if std is not None:
                x = x / std.to(x)
        with inference_mode_of(self.module, self.members()):
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
        return TorchAdapter(model, device=check_device(device), **options)
    if callable(model):
        return CallableAdapter(model, device=check_device(device))
    raise TypeError(f"cannot adapt a {type(model).__name__}: expected a torch module or callable")
