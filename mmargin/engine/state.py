"""The per-batch outcome every search strategy returns to the runner."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Per-sample values ``(B,)`` reshaped to broadcast against a batch ``like`` ``(B, ...)``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


@dataclass
class SearchState:
    """Best adversarial perturbation per sample (``inf`` norm where none was found), the
    class it lands in (``-1`` if none) and the forward + backward passes each sample used."""

    best_delta: Tensor
    best_norm: Tensor
    best_class: Tensor
    queries: Tensor

    @classmethod
    def empty(cls, x: Tensor) -> SearchState:
        """Nothing found yet for a batch shaped like ``x``."""
        batch = x.shape[0]
        return cls(
            best_delta=torch.zeros_like(x),
            best_norm=torch.full((batch,), math.inf, device=x.device, dtype=x.dtype),
            best_class=torch.full((batch,), -1, dtype=torch.long, device=x.device),
            queries=torch.zeros(batch, dtype=torch.long, device=x.device),
        )
