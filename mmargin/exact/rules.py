"""Goals as linear conditions on a model's outputs: what "flipped" means to a solver.

A :class:`FlipRule` is a list of *alternatives*; each alternative ``(A, b)`` holds when
``A @ F >= b`` row by row for the model's output vector ``F`` (networks ask for a hair
more, :attr:`ExactLimits.flip_tol`, and re-check strictly), and the input is flipped
when one alternative holds. Arg-max goals give one alternative per rival class
(untargeted) or one alternative with a row per other class (targeted); a two-class
decision — a one-output model, or a threshold goal — is one half-space on the log-odds
(a probability threshold ``τ`` becomes the logit threshold ``log τ/(1-τ)``), on a raw
score, or on a probability, moved by :attr:`ExactLimits.safety` so that a solver's point
is also a flip in the engine's float32 re-check. Every exact method (linear, ReLU, tree
ensemble) builds its flip condition from a rule made here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmargin.exact.limits import LIMITS, ExactLimits

Alternative = tuple[np.ndarray, np.ndarray]
"""``(A, b)``: holds when ``A @ F >= b`` (every row) for the outputs ``F``."""


@dataclass(frozen=True)
class FlipRule:
    """The flip as alternatives on the outputs; ``argmax = (label, target)`` when the
    rule is the plain arg-max over two or more outputs (linear models then have a
    closed form); ``other`` is the class a two-class decision flips to; ``closed``: the
    boundary itself counts as a flip."""

    alternatives: tuple[Alternative, ...]
    argmax: tuple[int, int | None] | None = None
    other: int | None = None
    closed: bool = False

    def holds(self, f: np.ndarray) -> bool:
        """Whether outputs ``f`` are a flip: some alternative with ``A @ f > b`` (``>=``
        when ``closed``: a one-output model is class 0 at exactly 0)."""
        f = np.asarray(f, dtype=np.float64).ravel()
        if self.closed:
            return any(bool(np.all(a @ f >= b)) for a, b in self.alternatives)
        return any(bool(np.all(a @ f > b)) for a, b in self.alternatives)

    def adv_label(self, f: np.ndarray) -> int:
        """The class the outputs ``f`` decide (arg-max rules) or the flipped-to class."""
        f = np.asarray(f, dtype=np.float64).ravel()
        if self.other is not None:
            return self.other
        return int(f[0] > 0) if f.size == 1 else int(np.argmax(f))


def check_classes(n_cls: int, label: int, target: int | None, binary: bool) -> int | None:
    """Validate ``label`` / ``target`` against ``n_cls`` classes; the target to use (a binary
    model's only other class makes targeted and untargeted the same, so ``None``)."""
    if not 0 <= label < n_cls:
        raise ValueError(f"label must be in [0, {n_cls}), got {label}")
    if target is not None and (not 0 <= target < n_cls or target == label):
        raise ValueError(f"target must be in [0, {n_cls}) and differ from label, got {target}")
    return None if binary else target


def argmax_rule(n_out: int, label: int, target: int | None, margin: float = 0.0) -> FlipRule:
    """Arg-max over ``n_out`` outputs (one output: class 1 iff ``F > 0``), each row asked
    to win by ``margin``; ``ValueError`` for a label / target out of range."""
    if n_out == 1:
        check_classes(2, label, target, True)
        sign = 1.0 if label == 0 else -1.0  # label 0: F > 0; label 1: F <= 0
        return FlipRule(((np.array([[sign]]), np.array([margin])),), None, 1 - label,
                        closed=label == 1)  # fmt: skip
    tgt = check_classes(n_out, label, target, False)
    eye = np.eye(n_out)
    if tgt is None:
        alts = tuple(((eye[j] - eye[label])[None], np.array([margin]))
                     for j in range(n_out) if j != label)  # fmt: skip
    else:
        rows = np.stack([eye[tgt] - eye[j] for j in range(n_out) if j != tgt])
        alts = ((rows, np.full(n_out - 1, margin)),)
    return FlipRule(alts, (label, tgt))


def binary_side(goal: Any, label: int, target: int | None) -> tuple[int, float, bool] | None:
    """For a two-class decision: ``(class c, threshold on c's score, want_c)`` — the flip
    needs ``score_c >= threshold`` (``want_c``) or below it. The score is the log-odds for a
    probability threshold (the threshold then ``log τ/(1-τ)``) and for arg-max goals
    (threshold 0), the raw score for ``scores = "raw"``. ``None`` when the goal is not one
    half-space on one score (a target equal to the label, a class outside {0, 1})."""
    from mmargin.goals import Targeted, Threshold, Untargeted

    if goal is None or isinstance(goal, (Untargeted, Targeted)):
        if isinstance(goal, Targeted) and goal.target == label:
            return None
        return 1, 0.0, label == 0  # arg-max: class 1 iff log-odds > 0
    if isinstance(goal, Threshold):
        if (goal.target is not None and goal.target == label) or goal.positive not in (0, 1):
            return None
        tau = goal.threshold
        level = math.log(tau / (1 - tau)) if goal.scores == "proba" else tau
        return goal.positive, level, label != goal.positive
    return None


def flip_rule(
    head: str,
    n_out: int,
    goal: Any,
    label: int,
    target: int | None,
    *,
    limits: ExactLimits = LIMITS,
    argmax_margin: float = 0.0,
) -> FlipRule | None:
    """The goal as a :class:`FlipRule` on the outputs of a model with this ``head`` (see
    :data:`mmargin.exact.problem.HEADS`), or ``None`` when the goal is not linear there
    (a threshold on more than two classes, a raw threshold on probabilities ...).

    Two-class decisions (one output, or a threshold goal) are moved past the boundary by
    ``limits.safety · (1 + |level|)`` (``limits.safety / 2`` on probabilities); arg-max
    rows over two or more outputs must win by ``argmax_margin``.
    """
    from mmargin.goals import Targeted, Threshold, Untargeted

    threshold = isinstance(goal, Threshold)
    if not threshold and goal is not None and not isinstance(goal, (Untargeted, Targeted)):
        return None
    if not threshold and n_out >= 2:
        return argmax_rule(n_out, label, target, argmax_margin)
    if n_out > 2:
        return None
    if not 0 <= label < 2:
        raise ValueError(f"label must be in [0, 2), got {label}")
    side = binary_side(goal, label, target)
    if side is None:
        return None
    c, level, want = side
    row = _score_row(head, n_out, c, goal.scores if threshold else "argmax")
    if row is None:
        return None
    if head == "proba":  # the threshold is on the probability itself
        level, safety = float(goal.threshold), limits.safety / 2
    else:
        safety = limits.safety * (1.0 + abs(level))
    if want:
        return FlipRule(((row[None], np.array([level + safety])),), None, 1 - label)
    return FlipRule(((-row[None], np.array([-(level - safety)])),), None, 1 - label)


def _score_row(head: str, n_out: int, c: int, scores: str) -> np.ndarray | None:
    """The row ``r`` with ``r @ F`` = class ``c``'s log-odds (``scores = "proba"``; the
    probability itself for ``head = "proba"``), raw score (``"raw"``) or the sign of the
    one output (``"argmax"``), else ``None``."""
    sign = 1.0 if c == 1 else -1.0
    eye = np.eye(max(n_out, 1))
    if scores == "argmax":  # one output: class 1 iff F > 0, whatever F means
        return np.array([sign]) if n_out == 1 else None
    if scores == "raw":
        if head == "decision":
            return np.array([sign]) if n_out == 1 else eye[c]
        if head == "logits" and n_out == 2:
            return eye[c]
        return None
    if head == "decision":
        return None
    if n_out == 1:
        return np.array([sign]) if head == "logit" else None
    if head in ("softmax", "logits"):
        return eye[c] - eye[1 - c]
    if head == "proba":
        return eye[c]
    return None
