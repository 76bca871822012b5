"""The ``sine_filters`` model: a differentiable filter bank, no training needed.

For each class ``k`` it correlates the series with a cosine and a sine of ``k + 1`` cycles;
the class score is the energy at that frequency, ``a_k² + b_k²`` (scaled). The matching
frequency wins for clean sines; the engine then finds how much RMS change moves the
energy to another frequency.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SineFilters(nn.Module):
    """Scores ``(B, 3)``: energy of a ``(B, length)`` series at 1, 2 and 3 cycles."""

    bank: Tensor

    def __init__(self, length: int = 64, classes: int = 3, gain: float = 4.0) -> None:
        super().__init__()
        t = torch.arange(length, dtype=torch.float32) / length
        cycles = torch.arange(1, classes + 1, dtype=torch.float32).unsqueeze(1)
        angle = 2 * math.pi * cycles * t
        self.register_buffer("bank", torch.cat([torch.cos(angle), torch.sin(angle)]) * 2 / length)
        self.classes, self.gain = classes, gain

    def forward(self, x: Tensor) -> Tensor:
        coeffs = x.flatten(1) @ self.bank.T
        energy = coeffs[:, : self.classes] ** 2 + coeffs[:, self.classes :] ** 2
        return self.gain * energy


def sine_filters(length: int = 64, gain: float = 4.0) -> SineFilters:
    """The model factory a task names with ``[model] factory = "sine_filters"``."""
    return SineFilters(length=int(length), gain=float(gain)).eval()
