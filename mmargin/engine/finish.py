"""What happens after a search: line search toward the clean input, then re-verification.

Both are shared by every strategy so no plugin ever reports an unchecked flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmargin.adapters import ModelAdapter
from mmargin.engine.state import per_sample
from mmargin.goals import Goal, decide
from mmargin.spaces import ContinuousSpace


@torch.no_grad()
def line_search(
    model: ModelAdapter,
    space: ContinuousSpace,
    goal: Goal,
    x: Tensor,
    delta: Tensor,
    labels: Tensor,
    targets: Tensor | None,
    steps: int,
) -> tuple[Tensor, Tensor]:
    """Shrink each adversarial ``delta`` toward ``x`` by bisection on its scale t ∈ [0, 1].

    ``x + delta`` must be adversarial; the returned perturbation ``t·delta`` (finalised by
    the space) still is, with the smallest t bisection found. Returns it and the forward
    passes each sample used.
    """
    batch = x.shape[0]
    lo = torch.zeros(batch, device=x.device, dtype=x.dtype)
    hi = torch.ones(batch, device=x.device, dtype=x.dtype)
    for _ in range(steps):
        mid = (lo + hi) / 2
        candidate = space.finalize(x, x + delta * per_sample(mid, delta))
        adv = goal.is_adversarial(model(candidate), labels, targets)
        hi = torch.where(adv, mid, hi)
        lo = torch.where(adv, lo, mid)
    passes = torch.full((batch,), steps, dtype=torch.long, device=x.device)
    return space.finalize(x, x + delta * per_sample(hi, delta)) - x, passes


@dataclass(frozen=True)
class Verified:
    """Re-checked outcome per sample: is it adversarial, and which class it lands in."""

    adversarial: Tensor
    adv_label: Tensor
    scores: Tensor


@torch.no_grad()
def verify(
    model: ModelAdapter,
    goal: Goal,
    x_adv: Tensor,
    labels: Tensor,
    targets: Tensor | None,
) -> Verified:
    """A fresh forward pass on the final adversarial inputs, judged by the goal."""
    scores = model(x_adv)
    finite = torch.isfinite(scores).all(dim=1)
    adv = goal.is_adversarial(scores, labels, targets) & finite
    return Verified(adversarial=adv, adv_label=decide(goal, scores), scores=scores)
