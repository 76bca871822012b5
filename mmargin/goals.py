"""Goals: what counts as a flip, and the loss the gradient search drives below zero.

Every goal gives a per-sample *margin loss* that is negative when the input is
adversarial; a flip counts once the loss clears a small tolerance (:func:`flip_tolerance`)
so that it does not hinge on float32 rounding. The engine's flip criterion and the final
verification use the same ``is_adversarial`` so a reported flip always means the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Goal(Protocol):
    """What the engine needs from a goal: a margin loss (< 0 ⇔ adversarial), the test, the
    per-sample targets and the decision rule (defaults for the last two: :class:`GoalBase`).

    ``targets`` is the per-sample target tensor for goals that have one (else ``None``).
    """

    @property
    def name(self) -> str:
        """The goal's task-file spelling (``untargeted``, ``targeted``...)."""
        ...

    def loss(self, scores: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
        """Per-sample margin loss, negative exactly when the input is adversarial."""
        ...

    def is_adversarial(
        self, scores: Tensor, labels: Tensor, targets: Tensor | None = None
    ) -> Tensor:
        """Per-sample flip criterion; the engine and the final verification both use it."""
        ...

    def targets_for(self, labels: Tensor) -> Tensor | None:
        """The per-sample target classes, or ``None`` for goals without a target."""
        ...

    def decide(self, scores: Tensor) -> Tensor:
        """The class the goal's decision rule assigns to each row of scores."""
        ...


class GoalBase:
    """Defaults for a goal's optional members: no targets, arg-max decisions. Subclass it."""

    def targets_for(self, labels: Tensor) -> Tensor | None:
        """No per-sample targets (an untargeted goal)."""
        return None

    def decide(self, scores: Tensor) -> Tensor:
        """The arg-max class of each row."""
        return scores.argmax(dim=1)


FLIP_TOLERANCE = 1e-5
"""A flip must win by this much relative to the scores' magnitude, so that it survives the
float32 rounding differences between batched and single-sample evaluation."""


def flip_tolerance(scores: Tensor) -> Tensor:
    """Per-sample margin a flip must clear: ``FLIP_TOLERANCE · (1 + max |score|)``."""
    return FLIP_TOLERANCE * (1 + scores.detach().abs().amax(dim=1))


class _LossFlip(GoalBase):
    """A goal that flips where its own loss falls below ``-flip_tolerance``; it can tell
    that from a loss already computed (:meth:`flipped`)."""

    def loss(self, scores: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
        """The goal's loss (negative once it is met); each subclass defines it."""
        raise NotImplementedError

    def is_adversarial(
        self, scores: Tensor, labels: Tensor, targets: Tensor | None = None
    ) -> Tensor:
        return self.flipped(scores, self.loss(scores, labels, targets))

    def flipped(self, scores: Tensor, loss: Tensor) -> Tensor:
        """:meth:`is_adversarial` from this goal's ``loss`` of ``scores``, already
        computed (the gradient search has it from its forward pass)."""
        return loss < -flip_tolerance(scores)


def flips_from_loss(
    goal: Goal, scores: Tensor, loss: Tensor, labels: Tensor, targets: Tensor | None = None
) -> Tensor:
    """``goal.is_adversarial(scores, labels, targets)`` read off ``loss``, the goal's own
    loss of ``scores`` already computed, when the goal can (``flipped``: the same test
    without computing the loss again); else the goal's test itself."""
    flipped = getattr(goal, "flipped", None)
    if callable(flipped):
        out: Tensor = flipped(scores, loss)
        return out
    return goal.is_adversarial(scores, labels, targets)


def _best_other(scores: Tensor, exclude: Tensor) -> tuple[Tensor, Tensor]:
    """Max score and its class over all classes except ``exclude`` (per sample)."""
    masked = scores.clone()
    masked.scatter_(1, exclude.unsqueeze(1), float("-inf"))
    return masked.max(dim=1)


@dataclass(frozen=True)
class Untargeted(_LossFlip):
    """Any class other than the true one wins: loss = z_y − max_{j≠y} z_j."""

    name: str = "untargeted"

    def loss(self, scores: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
        true = scores.gather(1, labels.unsqueeze(1)).squeeze(1)
        other, _ = _best_other(scores, labels)
        return true - other


@dataclass(frozen=True)
class Targeted(_LossFlip):
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


@dataclass(frozen=True)
class Threshold(GoalBase):
    """A decision taken at a threshold on one class's score, not by arg-max.

    The model decides class ``positive`` when its probability (``scores = "proba"``: the
    softmax of the adapter's logits or log-probabilities, i.e. ``predict_proba``) or its raw
    score column (``scores = "raw"``: ``decision_function``) is at least ``threshold``, and
    otherwise the highest-scoring other class. A flip is a change of that decision (to
    ``target`` when one is given). :meth:`decide` is the rule; the runner uses it for the
    clean pass and the re-verification (:func:`decide`), so "already misclassified" and
    "flipped" mean the same thing as in production. The loss works in log-odds
    (``logit p − logit τ``), which is affine in the logits of a logistic model. ``tie``
    (in log-odds, or raw score units) absorbs float32 rounding so that a probability
    exactly at the threshold counts as reaching it, as ``p >= τ`` does in float64.
    """

    threshold: float
    positive: int = 1
    target: int | None = None
    scores: str = "proba"
    name: str = "threshold"
    tie: float = 1e-6

    def __post_init__(self) -> None:
        if self.scores not in ("proba", "raw"):
            raise ValueError(
                f"threshold goal: scores must be 'proba' or 'raw', got {self.scores!r}"
            )
        if self.scores == "proba" and not 0.0 < self.threshold < 1.0:
            raise ValueError(
                f"threshold goal: a probability threshold must be in (0, 1), got {self.threshold}"
            )
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold goal: threshold must be finite, got {self.threshold}")
        if self.positive < 0 or (self.target is not None and self.target < 0):
            raise ValueError("threshold goal: positive and target must be class indices >= 0")

    def margin(self, scores: Tensor) -> Tensor:
        """Per-sample signed distance to the threshold: ``>= 0`` ⇔ ``positive`` is decided."""
        if self.positive >= scores.shape[1]:
            raise ValueError(
                f"threshold goal: positive class {self.positive} but the model has "
                f"{scores.shape[1]} classes"
            )
        if self.scores == "raw":
            return scores[:, self.positive] - self.threshold + self.tie
        logp = torch.log_softmax(scores, dim=1)
        rest = logp.clone()
        rest[:, self.positive] = float("-inf")
        log_odds = logp[:, self.positive] - torch.logsumexp(rest, dim=1)
        return log_odds - math.log(self.threshold / (1.0 - self.threshold)) + self.tie

    def decide(self, scores: Tensor) -> Tensor:
        """The decided class per sample: ``positive`` at or above the threshold."""
        positive = torch.full((scores.shape[0],), self.positive, device=scores.device)
        _, other = _best_other(scores, positive)
        return torch.where(self.margin(scores) >= 0, positive, other)

    def targets_for(self, labels: Tensor) -> Tensor | None:
        """The per-sample target tensor, or ``None`` for "any change of decision"."""
        return None if self.target is None else torch.full_like(labels, self.target)

    def loss(self, scores: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
        m = self.margin(scores)
        is_pos = labels == self.positive
        if targets is None:  # leave the decided class: drop below / rise above the threshold
            other = _among_others(scores, labels, self.positive)
            return torch.where(is_pos, m, torch.minimum(-m, other))
        to_pos = targets == self.positive
        rival = _among_others(scores, targets, self.positive, rival=True)
        return torch.where(to_pos, -m, torch.maximum(m, rival))

    def is_adversarial(
        self, scores: Tensor, labels: Tensor, targets: Tensor | None = None
    ) -> Tensor:
        decided = self.decide(scores)
        return decided != labels if targets is None else decided == targets


def _among_others(scores: Tensor, cls: Tensor, positive: int, rival: bool = False) -> Tensor:
    """``z_cls − max z_j`` over classes ``j ∉ {cls, positive}`` (``+inf`` when none exist);
    with ``rival`` the sign flips: ``max z_j − z_cls`` (``−inf`` when none exist)."""
    masked = scores.clone()
    masked.scatter_(1, cls.unsqueeze(1), float("-inf"))
    masked[:, positive] = float("-inf")
    best = masked.max(dim=1).values
    own = scores.gather(1, cls.unsqueeze(1)).squeeze(1)
    return best - own if rival else own - best


def decide(goal: Goal, scores: Tensor) -> Tensor:
    """The class a goal's decision rule assigns to each row of scores (``goal.decide``)."""
    return goal.decide(scores)


def make_goal(
    kind: str | Goal = "untargeted",
    target: int | None = None,
    *,
    threshold: float | None = None,
    positive: int = 1,
    scores: str = "proba",
) -> Goal:
    """A goal from its task-file spelling (a ready :class:`Goal` is returned unchanged)."""
    if not isinstance(kind, str):
        return kind
    if kind == "untargeted":
        return Untargeted()
    if kind == "targeted":
        if target is None:
            raise ValueError("a targeted goal needs a target class")
        return Targeted(target=int(target))
    if kind == "threshold":
        if threshold is None:
            raise ValueError("a threshold goal needs a threshold")
        return Threshold(float(threshold), positive=int(positive), target=target, scores=scores)
    raise ValueError(f"unknown goal {kind!r}; expected 'untargeted', 'targeted' or 'threshold'")
