"""The L1 ball's soft-threshold level θ, found in one sort (Duchi et al. 2008).

The Euclidean projection of ``v`` onto ``{‖w‖₁ ≤ ε}`` (``‖v‖₁ > ε``) is the soft threshold
``sign(v) · max(|v| − θ, 0)`` at the θ > 0 where ``Σ max(|v| − θ, 0) = ε``. With the
magnitudes sorted largest first, ``s₁ ≥ s₂ ≥ …``, and ``c_j = s₁ + … + s_j``, the active
count is ``ρ = max{j : s_j > (c_j − ε) / j}`` and ``θ = (c_ρ − ε) / ρ``: one sort and one
running sum per row, where Michelot's iteration needs a full pass per update (7–8 on the
engine's iterates). On CPU the sort is numpy's (values only, several times faster than
torch's, which ranks (value, index) pairs); the running sums and θ are float64, then
rounded once to the input's dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["TOP", "threshold"]

TOP = 64
"""How many of a row's largest magnitudes the running sums look at first."""


def _threshold_numpy(size: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """θ per row of ``size`` (magnitudes, 2-D, finite, sign bits clear: see
    :func:`_as_keys`) for radii ``eps`` (float64).

    The test at ``j`` reads only the ``j`` largest magnitudes, so the sort and the running
    sums start on the ``TOP`` largest only (picked by a partition) and widen (×4) while a
    row's active count reaches the width looked at (the engine's rows keep a few dozen
    coordinates of 784)."""
    width = size.shape[1]
    rows = np.arange(size.shape[0])
    look = min(width, TOP)
    keys = _as_keys(size)
    while True:
        # a partition puts the ``look`` largest last (linear time); then sort only those
        cut = width - look
        part = np.partition(keys, cut, axis=1)[:, cut:].view(size.dtype) if cut > 0 else size
        top = np.sort(part, axis=1)[:, ::-1]  # largest first
        cums = np.cumsum(top, axis=1, dtype=np.float64)
        ranks = np.arange(1, look + 1, dtype=np.float64)
        active = top * ranks > cums - eps[:, None]
        # the last j where s_j > (c_j − ε) / j; at least 1 (ε = 0: θ = the largest |v|)
        rho = np.maximum(np.where(active, ranks, 0.0).max(axis=1), 1.0)
        if look == width or bool((rho < look).all()):
            break
        look = min(width, 4 * look)
    theta: np.ndarray = (cums[rows, rho.astype(np.int64) - 1] - eps) / rho
    return np.maximum(theta, 0.0)


def _as_keys(size: np.ndarray) -> np.ndarray:
    """``size``'s bits as signed integers of its width, ordered as the magnitudes are: for
    floats with the sign bit clear (``|v|`` from ``torch.abs``: +0, positive values, +∞,
    NaN) the integer order is the float order with NaN largest, numpy's order for floats,
    so a partition of the keys picks the same values. numpy's partition of 32-bit integers
    is ~20 % faster than of float32 (279 against 347 µs on a batch of 100 MNIST rows)."""
    return size.view(np.int32 if size.dtype == np.float32 else np.int64)


def _threshold_torch(size: Tensor, eps: Tensor) -> Tensor:
    """θ per row, the same formula in torch (any device; float64 sums)."""
    ordered = size.sort(dim=1, descending=True).values
    cums = ordered.double().cumsum(dim=1)
    ranks = torch.arange(1, size.shape[1] + 1, dtype=torch.float64, device=size.device)
    e = eps.double().unsqueeze(1)
    active = ordered.double() * ranks > cums - e
    rho = torch.where(active, ranks, 0.0).amax(dim=1).clamp(min=1.0)
    theta = (cums.gather(1, rho.long().unsqueeze(1) - 1).squeeze(1) - e.squeeze(1)) / rho
    return theta.clamp(min=0.0)


def threshold(size: Tensor, eps: Tensor) -> Tensor:
    """The soft-threshold level θ ≥ 0 of each row of ``size`` (``|v|`` as ``torch.abs`` gives
    it, no sign bit set, not even on a zero or NaN; 2-D) for the L1
    ball of radius ``eps`` (one per row), in ``size``'s dtype: ``Σ max(|v| − θ, 0) = ε``
    to rounding for rows outside the ball; a row inside it (``ε`` at least its sum) gets
    θ = 0. Rows with a non-finite entry get a non-finite or meaningless θ (NaN spreads)."""
    if size.device.type == "cpu" and size.dtype in (torch.float32, torch.float64):
        array = size.detach().numpy()
        radii = eps.detach().numpy().astype(np.float64)
        theta = _threshold_numpy(array, radii)
        # a NaN or infinite magnitude makes θ non-finite (NaN sorts last, ∞ sums to ∞):
        # those batches take the torch path, whose NaN handling is torch's own
        if np.isfinite(theta).all():
            return torch.from_numpy(theta.astype(array.dtype))
    return _threshold_torch(size, eps).to(size.dtype)
