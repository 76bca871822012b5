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

from mmargin.l1ball import threshold
from mmargin.protocols import Distance, l2_scale
from mmargin.ranking import top_mask

__all__ = ["Distance", "LpDistance", "fit_distance", "lp", "pixel_l0", "plain_l2"]

_TINY = 1e-12


def _count_nonzero(flat: Tensor) -> Tensor:
    """Non-zero entries per row, in ``flat``'s dtype (float arithmetic: ``sign(|v|)``
    counts a NaN as non-zero too, like ``v != 0``, without a boolean pass)."""
    return flat.abs().sign_().nan_to_num_(nan=1.0).sum(dim=1)


def _lp_norm(flat: Tensor, p: float) -> Tensor:
    """The Lp norm of each row for p in {0, 1, 2, ∞}: the L∞ norm as ``amax(|v|)`` and the
    L1 norm as ``Σ|v|``, a few times cheaper on CPU than ``linalg.vector_norm``'s general
    path (L∞ is exact either way; L1 may differ from it in the last bit)."""
    if p == math.inf:
        return flat.abs().amax(dim=1)
    if p == 1.0:
        return flat.abs().sum(dim=1)
    if p == 0.0:
        return _count_nonzero(flat)
    return torch.linalg.vector_norm(flat, p, dim=1)


def _project_l1(flat: Tensor, eps: Tensor) -> Tensor:
    """Euclidean projection of each row onto the L1 ball of radius ``eps``: soft
    thresholding ``v − clamp(v, −θ, θ)`` at the θ ≥ 0 where ``Σ max(|v| − θ, 0) = eps``.

    Only the rows outside the ball are touched (on the engine's iterates most rows are
    inside: they are returned as they are, bit for bit); their θ comes from one sort per
    row (:func:`mmargin.l1ball.threshold`, Duchi et al. 2008; numpy's sort on CPU), not
    from Michelot's pass-per-update iteration. A batch wholly inside is ``flat`` itself.
    """
    size = flat.abs()
    total = size.sum(dim=1)
    outside = ~(total <= eps)  # NaN sums count as outside, as they did
    if flat.shape[0] and bool(outside.all()):  # the usual case: no row list to build
        return _soft_threshold(flat, threshold(size, eps).unsqueeze(1))
    rows = outside.nonzero().squeeze(1)
    if rows.numel() == 0:
        return flat
    part = flat[rows]
    theta = threshold(size[rows], eps[rows]).unsqueeze(1)
    return flat.index_copy(0, rows, _soft_threshold(part, theta))


def _soft_threshold(flat: Tensor, theta: Tensor) -> Tensor:
    """``flat − clamp(flat, −θ, θ)`` with one θ per row (``(B, 1)``), the clamp taken as a
    maximum then a minimum (what torch's clamp computes): torch's three-operand clamp with
    a bound broadcast along each row costs ~3× the two binary ops on CPU (69 against 24 µs
    on a batch of 100 MNIST rows). The same numbers bit for bit wherever θ > 0; where an
    entry equals a bound the two may hand back either operand, which for non-zero values
    are the same bits, so only a row with θ = 0 exactly may get the other sign of a zero
    (torch's clamp itself gives either there, by the batch's layout), which the box
    projection after every step undoes (``tests/test_step_kernels.py``)."""
    kept = torch.maximum(flat, -theta)
    torch.minimum(kept, theta, out=kept)
    return torch.sub(flat, kept, out=kept)


def _project_l0(flat: Tensor, eps: Tensor) -> Tensor:
    """Keep the ``floor(eps)`` largest-magnitude coordinates of each row, zero the rest
    (:func:`mmargin.ranking.top_mask`: partial ranking, numpy's sort on CPU)."""
    return flat * top_mask(flat.abs(), eps)


def _project_l0_grouped(u: Tensor, eps: Tensor, axis: int) -> Tensor:
    """Keep the ``floor(eps)`` positions (all coordinates along ``axis`` together: a pixel's
    channels) with the largest L2 size over ``axis``, zero the others."""
    size = torch.linalg.vector_norm(u, dim=axis, keepdim=True)
    return u * top_mask(size.flatten(1), eps).view_as(size)


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
        u = self._scale(delta)
        if self.p == 0.0 and self.group_axis is not None:
            if u.shape[self.group_axis] == 1:  # one channel: the amax over it is |u| itself
                return _count_nonzero(u.flatten(1))
            return _count_nonzero(u.abs().amax(dim=self.group_axis).flatten(1))
        return _lp_norm(u.flatten(1), self.p)

    def dual_norm(self, grad: Tensor) -> Tensor:
        flat = self._unscale(grad).flatten(1)
        if self.dual_p == 1.0:  # L∞ and L0: ``linalg.vector_norm``'s own sum, kept as is
            return torch.linalg.vector_norm(flat, 1.0, dim=1)
        return _lp_norm(flat, self.dual_p)

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        u = self._scale(delta)
        flat = u.flatten(1)
        eps = eps.to(flat)
        if self.group_axis is not None:
            return self._unscale(_project_l0_grouped(u, eps, self.group_axis))
        if self.p == math.inf:
            limit = eps.unsqueeze(1)
            flat = flat.clamp(min=-limit, max=limit)
        elif self.p == 2.0:
            norms = torch.linalg.vector_norm(flat, dim=1).clamp(min=_TINY)
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


def plain_l2(distance: Any) -> bool:
    """Whether ``distance`` is the plain (unweighted) L2 norm of :class:`LpDistance`: its own
    dual norm, computed by one ``linalg.vector_norm`` call, with the gradient ``δ / ‖δ‖``."""
    return isinstance(distance, LpDistance) and distance.p == 2.0 and distance.weights is None


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
