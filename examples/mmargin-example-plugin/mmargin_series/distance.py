"""The ``energy`` distance: the Euclidean size of the change to a series, ``‖δ‖₂``.

Written from scratch to the ``Distance`` protocol (no subclassing) to show every member
the engine uses; the core's ``l2`` is the same norm. With ``δ`` flattened per sample:

- ``norm(δ) = ‖δ‖₂`` (one value per sample);
- ``dual_norm(g) = ‖g‖₂``: Hölder holds tightly, ``<g, δ> <= norm(δ) · dual_norm(g)``,
  which is what turns the engine's first-order estimate ``loss / dual_norm(∇)`` into a
  distance to the decision boundary;
- ``project(δ, ε)``: the Euclidean projection onto the ball ``norm <= ε``;
- ``p = 2``: the engine sizes its steps from ``p`` (the L2 radius of an ε-ball of an
  Lp norm). A norm rescaled by a constant (an RMS ``‖δ‖₂ / √T``, say) would make its
  steps too short by that constant: report such units with ``units`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass(frozen=True)
class EnergyDistance:
    """The Euclidean size of a change to a series, in the series' own units."""

    name: str = "energy"
    p: float = 2.0
    units: str = "L2 of the change, series units"

    def norm(self, delta: Tensor) -> Tensor:
        """Per-sample size of a batch of perturbations ``(B, T)`` -> ``(B,)``."""
        return delta.flatten(1).norm(dim=1)

    def dual_norm(self, grad: Tensor) -> Tensor:
        """Per-sample dual norm of a batch of gradients (L2 is its own dual)."""
        return grad.flatten(1).norm(dim=1)

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        """The batch projected onto the balls of per-sample radius ``eps``."""
        flat = delta.flatten(1)
        scale = (eps.to(flat) / flat.norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
        return (flat * scale.unsqueeze(1)).view_as(delta)


def energy_reference(delta: np.ndarray) -> np.ndarray:
    """The definition in numpy, for the conformance kit's norm check."""
    flat = np.asarray(delta, dtype=np.float64).reshape(len(delta), -1)
    return np.sqrt((flat**2).sum(axis=1))


def energy_distance() -> EnergyDistance:
    """The factory a task's ``[distance]`` table calls (``name = "energy"``, no options)."""
    return EnergyDistance()
