"""Perturbation spaces: where an adversarial input may live.

A continuous space is a box (per-coordinate lower / upper bounds, possibly infinite) with
an optional mask of coordinates that may change, and an optional ``finalize`` step that
maps a candidate onto the valid discrete set (integers, one-hot) before it is verified.
The engine calls the members of :class:`mmargin.protocols.Space`; modality plugins
subclass or configure it (images: NCHW in ``[0, 1]``; tabular: a feature schema).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mmargin.errors import InvalidInputError

Bound = float | np.ndarray


@dataclass
class ContinuousSpace:
    """A box-constrained, optionally masked, continuous perturbation space.

    ``sample_shape`` (without the batch dimension) is checked when given; ``ndim`` checks
    only the number of dims (images: 3 for C, H, W). ``lower`` / ``upper`` broadcast to one
    sample; ``mask`` is 1 where a coordinate may change. ``modality`` names the kind of
    input for reports. ``reference`` optionally holds valid rows (e.g. training data) that
    the decision strategy may start from; ``coordinate_groups`` (``None`` here: every
    coordinate alone) lists coordinates that move together.
    """

    kind: ClassVar[str] = "continuous"

    name: str = "box"
    modality: str = "features"
    lower: Bound = -math.inf
    upper: Bound = math.inf
    mask: np.ndarray | None = None
    sample_shape: tuple[int, ...] | None = None
    ndim: int | None = None
    reference: np.ndarray | None = field(default=None, repr=False)
    _cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor, Tensor | None]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def coordinate_groups(self) -> list[np.ndarray] | None:
        """Coordinates that change together (one-hot blocks); ``None``: each on its own."""
        return None

    # -- checks ---------------------------------------------------------------------------
    def check(self, x: np.ndarray) -> list[str | None]:
        """Validate a batch ``(N, ...)`` before any search.

        Raises :class:`InvalidInputError` when the batch as a whole is unusable (wrong
        number of dims or shape); returns, per sample, ``None`` when it is fine or a message
        saying why it cannot be searched (NaN/inf, outside the bounds) — one bad sample must
        not sink the run.
        """
        if x.ndim < 1 or x.shape[0] == 0:
            raise InvalidInputError(
                f"space {self.name!r}: expected a non-empty batch, got {x.shape}"
            )
        shape = tuple(x.shape[1:])
        if self.sample_shape is not None and shape != tuple(self.sample_shape):
            raise InvalidInputError(
                f"space {self.name!r}: expected samples of shape {tuple(self.sample_shape)}, "
                f"got {shape} (batch shape {tuple(x.shape)})"
            )
        if self.ndim is not None and len(shape) != self.ndim:
            raise InvalidInputError(
                f"space {self.name!r}: expected {self.ndim}-dim samples (batch of "
                f"{self.ndim + 1} dims), got batch shape {tuple(x.shape)}"
            )
        lower = np.broadcast_to(np.asarray(self.lower, dtype=np.float64), shape)
        upper = np.broadcast_to(np.asarray(self.upper, dtype=np.float64), shape)
        problems: list[str | None] = []
        for row in x.reshape(x.shape[0], -1) if shape else x.reshape(-1, 1):
            problems.append(self._check_one(row, lower.ravel(), upper.ravel()))
        return problems

    def _check_one(self, row: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> str | None:
        if not np.all(np.isfinite(row)):
            return f"input has {int((~np.isfinite(row)).sum())} NaN/inf values"
        tol = 1e-6
        below = row < lower - tol
        above = row > upper + tol
        if below.any() or above.any():
            return (
                f"input outside the bounds of space {self.name!r}: "
                f"{int(below.sum() + above.sum())} values outside "
                f"[{lower.min():g}, {upper.max():g}] (min {row.min():g}, max {row.max():g})"
            )
        return None

    # -- what the engine calls ------------------------------------------------------------
    def _tensors(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            shape = like.shape[1:]
            lo = torch.as_tensor(np.broadcast_to(self.lower, shape).copy(), dtype=like.dtype)
            hi = torch.as_tensor(np.broadcast_to(self.upper, shape).copy(), dtype=like.dtype)
            mask = None
            if self.mask is not None:
                mask = torch.as_tensor(np.broadcast_to(self.mask, shape).copy(), dtype=like.dtype)
                mask = mask.to(like.device)
            self._cache[key] = (lo.to(like.device), hi.to(like.device), mask)
        return self._cache[key]

    def free_dims(self, x: Tensor) -> Tensor:
        """Per-sample number of coordinates that may change."""
        _, _, mask = self._tensors(x)
        n = x[0].numel() if mask is None else int(mask.sum().item())
        return torch.full((x.shape[0],), float(n), device=x.device)

    def project(self, x: Tensor, delta: Tensor) -> Tensor:
        """Make ``x + delta`` valid: frozen coordinates stay, the box holds. Returns delta."""
        lo, hi, mask = self._tensors(x)
        if mask is not None:
            delta = delta * mask
        point = x + delta  # a fresh buffer: clamped and shifted back in place
        return torch.clamp(point, lo, hi, out=point).sub_(x)

    def free_gradient(self, x: Tensor, delta: Tensor, grad: Tensor) -> Tensor:
        """The loss gradient with blocked components zeroed: frozen coordinates and those
        at a bound that a descent step (along ``-grad``) would push further out.

        One clamp of ``grad`` between per-coordinate limits: at the upper bound ``grad``
        may not go below 0 (a descent step would go up), at the lower bound not above 0,
        anywhere else it is free. Only float passes (boolean masks over a batch cost
        several float passes on CPU)."""
        lo, hi, mask = self._tensors(x)
        big = torch.finfo(grad.dtype).max
        point = x + delta
        floor = (hi - point).clamp_(min=0).sign_().mul_(-big)  # 0 at the upper bound
        ceiling = point.sub_(lo).clamp_(min=0).sign_().mul_(big)  # 0 at the lower bound
        grad = torch.clamp(grad, floor, ceiling)
        return grad if mask is None else grad * mask

    def finalize(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Map a candidate onto the valid set before it is verified (default: the box)."""
        return x + self.project(x, x_adv - x)

    def random(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A random direction of unit L2 norm per sample over the free coordinates."""
        _, _, mask = self._tensors(x)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        if mask is not None:
            noise = noise * mask
        norms = noise.flatten(1).norm(dim=1).clamp(min=1e-12)
        return noise / norms.view(-1, *([1] * (x.dim() - 1)))


def box(
    lower: Bound = -math.inf,
    upper: Bound = math.inf,
    *,
    mask: np.ndarray | None = None,
    sample_shape: Sequence[int] | None = None,
    name: str = "box",
    modality: str = "features",
) -> ContinuousSpace:
    """A plain box space over feature vectors (the engine's non-image reference space)."""
    return ContinuousSpace(
        name=name,
        modality=modality,
        lower=lower,
        upper=upper,
        mask=mask,
        sample_shape=tuple(sample_shape) if sample_shape is not None else None,
    )
