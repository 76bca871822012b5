"""The problem a continuous run searches: which model, space, distance and goal, on which
inputs, labels and targets.

Every gradient run of the engine (the ε-ball run, the Lagrangian run, the polish, the
smooth-L0 run, the support-shrinking stage ...) searches the same seven things and hands
them on to the runs it calls, often restricted to the samples still searching. They
travel together as one :class:`Problem`; what a run does on its own (its steps, its
state, where it starts, which class it drives toward) stays an argument of that run.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from mmargin.engine.passes import toward
from mmargin.goals import Goal, flips_from_loss
from mmargin.protocols import Distance, ModelAdapter, Space

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """A batch to search: the model's inputs ``x`` ``(B, ...)``, their ``labels`` ``(B,)``
    and the goal's per-sample ``targets`` (``None`` for a goal without targets), searched
    in ``space`` under ``distance`` for ``goal`` on ``model``."""

    model: ModelAdapter
    space: Space
    distance: Distance
    goal: Goal
    x: Tensor
    labels: Tensor
    targets: Tensor | None = None

    def rows(self, index: Tensor | slice) -> Problem:
        """The same problem on the samples ``index`` only (indices, a boolean mask or a
        slice): its inputs, labels and targets gathered, in that order."""
        return Problem(
            self.model, self.space, self.distance, self.goal, self.x[index], self.labels[index],
            None if self.targets is None else self.targets[index],
        )  # fmt: skip

    def loss(self, scores: Tensor, against: Tensor | None = None) -> Tensor:
        """The goal's loss of ``scores`` (one row per sample), or with ``against`` the
        pairwise loss toward those classes (:func:`~mmargin.engine.passes.toward`)."""
        if against is None:
            return self.goal.loss(scores, self.labels, self.targets)
        return toward(scores, self.labels, against)

    def is_adversarial(self, scores: Tensor) -> Tensor:
        """The goal's flip test of ``scores``, one row per sample."""
        return self.goal.is_adversarial(scores, self.labels, self.targets)

    def flips(self, scores: Tensor, loss: Tensor) -> Tensor:
        """:meth:`is_adversarial` of ``scores`` read off ``loss``, the goal's own loss of
        them already computed, where the goal can (:func:`~mmargin.goals.flips_from_loss`)."""
        return flips_from_loss(self.goal, scores, loss, self.labels, self.targets)
