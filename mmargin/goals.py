"""Goals: what counts as a flip, and the loss the gradient search drives below zero.

Every goal gives a per-sample *margin loss* that is negative when the input is
adversarial; a flip counts once the loss clears a small tolerance (:func:`flip_tolerance`)
so that it does not hinge on float32 rounding. The engine's flip criterion and the final
verification use the same ``is_adversarial`` so a reported flip always means the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Goal(Protocol):
    """What the engine needs from a goal: a margin loss (< 0 ⇔ adversarial) and the test.

    ``targets`` is the per-sample target tensor for goals that have one (else ``None``).
    """

    name: str

    def loss(self, scores: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
        """Per-sample margin loss, negative exactly when the input is adversarial."""
        ...

    def is_adversarial(
        self, scores: Tensor, labels: Tensor, targets: Tensor | None = None
    ) -> Tensor:
        """Per-sample flip criterion; the engine and the final verification both use it."""
        ...


FLIP_TOLERANCE = 1e-5
"""A flip must win by this much relative to the scores' magnitude, so that it survives the
float32 rounding differences between batched and single-sample evaluation."""


def flip_tolerance(scores: Tensor) -> Tensor:
    """Per-sample margin a flip must clear: ``FLIP_TOLERANCE · (1 + max |score|)``."""
    return FLIP_TOLERANCE * (1 + scores.detach().abs().amax(dim=1))


def _best_other(scores: Tensor, exclude: Tensor) -> tuple[Tensor, Tensor]:
    """Max score and its class over all classes except ``exclude`` (per sample)."""
    masked = scores.clone()
    masked.scatter_(1, exclude.unsqueeze(1), float("-inf"))
    return masked.max(dim=1)


@dataclass(frozen=True)
class Untargeted:
    """Any class other than the true one wins: loss = z_y − max_{j≠y} z_j."""

    name: str = "untargeted"

    def loss(self, scores: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
        true = scores.gather(1, labels.unsqueeze(1)).squeeze(1)
        other, _ = _best_other(scores, labels)
        return true - other

    def is_adversarial(
        self, scores: Tensor, labels: Tensor, targets: Tensor | None = None
    ) -> Tensor:
        return self.loss(scores, labels, targets) < -flip_tolerance(scores)


@dataclass(frozen=True)
class Targeted:
    """A chosen class wins: loss = max_{j≠t} z_j − z_t, with ``t`` per sample."""

    target: int
    name: str = "targeted"

    def targets_for(self, labels: Tensor) -> Tensor:
        """The per-sample target tensor (the same class for every sample)."""
        return torch.full_like(labels, self.target)

    def loss(self, scores: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
        t = self.targets_for(labels) if targets is None else targets
        wanted = scores.gather(1, t.unsqueeze(1)).squeeze(1)
        other, _ = _best_other(scores, t)
        return other - wanted

    def is_adversarial(
        self, scores: Tensor, labels: Tensor, targets: Tensor | None = None
    ) -> Tensor:
        return self.loss(scores, labels, targets) < -flip_tolerance(scores)


def make_goal(kind: str = "untargeted", target: int | None = None) -> Goal:
    """A goal from its task-file spelling."""
    if kind == "untargeted":
        return Untargeted()
    if kind == "targeted":
        if target is None:
            raise ValueError("a targeted goal needs a target class")
        return Targeted(target=int(target))
    raise ValueError(f"unknown goal {kind!r}; expected 'untargeted' or 'targeted'")
