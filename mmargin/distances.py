"""Distances: the units a margin is reported in, with what the gradient engine needs.

A distance measures a batch of perturbations per sample and knows three more things the
minimum-norm search uses: its dual norm (to turn a first-order boundary estimate
``loss / ‖∇‖_*`` into a distance), the projection onto its ball of radius ε, and the
steepest-ascent direction of unit size. Weighted variants (``‖w ⊙ δ‖_p``, cost per unit
of each feature) are the same norm after the change of variables ``u = w ⊙ δ``.

This module imports torch; the host only imports it when a search runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from mmargin.protocols import Distance, l2_scale

__all__ = ["Distance", "LpDistance", "fit_distance", "lp", "pixel_l0"]

_TINY = 1e-12


def _project_l1(flat: Tensor, eps: Tensor) -> Tensor:
    """Euclidean projection of each row onto the L1 ball of radius ``eps`` (Duchi et al. 2008)."""
    abs_flat = flat.abs()
    inside = abs_flat.sum(dim=1) <= eps
    if bool(inside.all()):
        return flat
    sorted_abs, _ = abs_flat.sort(dim=1, descending=True)
    cumsum = sorted_abs.cumsum(dim=1)
    ks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    cond = sorted_abs - (cumsum - eps.unsqueeze(1)) / ks > 0
    # rho = last index where the condition holds (cond is monotone: True then False)
    rho = cond.to(flat.dtype).cumsum(dim=1).argmax(dim=1)
    theta = (cumsum.gather(1, rho.unsqueeze(1)).squeeze(1) - eps) / (rho + 1).to(flat.dtype)
    projected = flat.sign() * (abs_flat - theta.clamp(min=0).unsqueeze(1)).clamp(min=0)
    return torch.where(inside.unsqueeze(1), flat, projected)


def _project_l0(flat: Tensor, eps: Tensor) -> Tensor:
    """Keep the ``floor(eps)`` largest-magnitude coordinates of each row, zero the rest."""
    k = eps.floor().clamp(min=0, max=flat.shape[1]).long()
    order = flat.abs().argsort(dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return torch.where(ranks < k.unsqueeze(1), flat, torch.zeros_like(flat))


def _project_l0_grouped(u: Tensor, eps: Tensor, axis: int) -> Tensor:
    """Keep the ``floor(eps)`` positions (all coordinates along ``axis`` together: a pixel's
    channels) with the largest L2 size over ``axis``, zero the others."""
    size = u.norm(dim=axis, keepdim=True)
    kept = _project_l0(size.flatten(1), eps).view_as(size) != 0
    return torch.where(kept, u, torch.zeros_like(u))


@dataclass(frozen=True)
class LpDistance:
    """The (optionally weighted) Lp norm, p ∈ {0, 1, 2, ∞}, over all non-batch dims.

    With ``weights`` (positive, shape of one sample) the norm is ``‖w ⊙ δ‖_p``: the
    cost-weighted distances of tabular data. ``units`` is what a report prints beside it.
    ``group_axis`` (L0 only) counts positions instead of coordinates: a position changes
    when any coordinate along that batch axis does (axis 1 of NCHW images: pixels, every
    channel of a pixel counting once).
    """

    name: str
    p: float
    weights: Tensor | None = None
    units: str = ""
    group_axis: int | None = None

    def __post_init__(self) -> None:
        if self.p not in (0.0, 1.0, 2.0, math.inf):
            raise ValueError(f"LpDistance: p must be 0, 1, 2 or inf, got {self.p!r}")
        if self.weights is not None and not bool((self.weights > 0).all()):
            raise ValueError("LpDistance: weights must all be > 0 (freeze features with a mask)")
        if self.group_axis is not None and (self.p != 0.0 or self.group_axis < 1):
            raise ValueError("LpDistance: group_axis is for L0, and a non-batch axis (>= 1)")

    @property
    def dual_p(self) -> float:
        """The dual exponent q with 1/p + 1/q = 1 (L0 uses L∞'s dual as its heuristic)."""
        return {0.0: 1.0, 1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[self.p]

    def _scale(self, delta: Tensor) -> Tensor:
        return delta if self.weights is None else delta * self.weights.to(delta)

    def _unscale(self, u: Tensor) -> Tensor:
        return u if self.weights is None else u / self.weights.to(u)

    def norm(self, delta: Tensor) -> Tensor:
        flat = self._scale(delta).flatten(1)
        if self.p == 0.0 and self.group_axis is not None:
            moved = (self._scale(delta) != 0).any(dim=self.group_axis)
            return moved.flatten(1).sum(dim=1).to(delta.dtype)
        if self.p == 0.0:
            return (flat != 0).sum(dim=1).to(delta.dtype)
        return flat.norm(p=self.p, dim=1)

    def dual_norm(self, grad: Tensor) -> Tensor:
        flat = self._unscale(grad).flatten(1)
        return flat.norm(p=self.dual_p, dim=1)

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        u = self._scale(delta)
        flat = u.flatten(1)
        eps = eps.to(flat)
        if self.group_axis is not None:
            return self._unscale(_project_l0_grouped(u, eps, self.group_axis))
        if self.p == math.inf:
            flat = torch.maximum(torch.minimum(flat, eps.unsqueeze(1)), -eps.unsqueeze(1))
        elif self.p == 2.0:
            norms = flat.norm(dim=1).clamp(min=_TINY)
            flat = flat * (eps / norms).clamp(max=1.0).unsqueeze(1)
        elif self.p == 1.0:
            flat = _project_l1(flat, eps)
        else:
            flat = _project_l0(flat, eps)
        return self._unscale(flat.view_as(delta))

    def to_l2_scale(self, eps: Tensor, free_dims: Tensor) -> Tensor:
        """The L2 radius of the ε-ball's widest point (the engine computes it from ``p``
        with :func:`mmargin.protocols.l2_scale`; kept for callers of the old member)."""
        return l2_scale(self.p, eps, free_dims)


_LP_NAMES: dict[str, float] = {"l0": 0.0, "l0_channels": 0.0, "l1": 1.0, "l2": 2.0,
                               "linf": math.inf}  # fmt: skip


def lp(name: str, weights: Tensor | None = None, units: str = "") -> LpDistance:
    """An Lp distance by name: ``l0``, ``l1``, ``l2`` or ``linf``; ``l0_channels`` is L0
    that counts every coordinate (each channel of a pixel) even where a space groups them
    (the ``image`` space makes ``l0`` count pixels: see :func:`pixel_l0`)."""
    key = name.lower()
    if key not in _LP_NAMES:
        raise ValueError(f"unknown Lp distance {name!r}; expected one of {sorted(_LP_NAMES)}")
    return LpDistance(name=key, p=_LP_NAMES[key], weights=weights, units=units)


def pixel_l0(distance: Any) -> Any:
    """``distance`` counting pixels when it is the plain ``l0`` (channels of a pixel count
    once: ``group_axis=1`` of NCHW, units ``pixels``); any other distance as it is."""
    if isinstance(distance, LpDistance) and distance.name == "l0" and distance.group_axis is None:
        return replace(distance, group_axis=1, units=distance.units or "pixels")
    return distance


def fit_distance(space: Any, distance: Any) -> Any:
    """The distance a run measures in: what the space's optional ``distance_for(distance)``
    makes of it (the ``image`` space: L0 in pixels), else ``distance`` itself."""
    method = getattr(space, "distance_for", None)
    return method(distance) if callable(method) else distance
