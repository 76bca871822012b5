"""The data a task evaluates: what every data loader returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """A labelled batch of inputs, already in the model's input space.

    ``x`` is a float32 array of shape ``(N, *sample_shape)`` (images: ``(N, C, H, W)`` in
    ``[0, 1]``); ``y`` holds the N integer labels; ``ids`` names each sample (file name, row
    index) so results can be traced back; ``meta`` carries free-form facts a report may show
    (source, split, class names).
    """

    x: np.ndarray
    y: np.ndarray
    ids: Sequence[str]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0] or len(self.ids) != self.y.shape[0]:
            raise ValueError(
                f"Dataset: x, y and ids must have the same length, got "
                f"{self.x.shape[0]}, {self.y.shape[0]} and {len(self.ids)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def head(self, n: int) -> Dataset:
        """The first ``n`` samples (all of them when ``n`` is larger)."""
        return Dataset(self.x[:n], self.y[:n], list(self.ids[:n]), dict(self.meta))
