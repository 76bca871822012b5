"""How a gradient search spends its passes: which runs, how long, against which class.

An untargeted search can settle on the boundary of a class that is not the nearest one,
and on adversarially trained models (flat, noisy losses) the first-order ranking of the
classes at the clean input often misses the nearest one too. So the steps are split into

1. a **first** run of the usual ``z_y − max_j z_j`` loss (it finds *a* boundary, fast);
2. short **probes**: one pairwise run ``z_y − z_c`` per candidate class ``c`` — the best
   first-order ranked classes other than the one the first run landed in — each a whole
   annealed run of its own, so what a probe reaches predicts what its class can give;
3. **refinements**: runs warm-started from the best flip so far, driving the pairwise loss
   toward the class that flip lies in (the winner of the first run and the probes).

Nothing here is per model: the shares are fractions of the steps left after ranking,
and every choice is per sample (its own ranking, its own best), so a sample's result
never depends on the other samples of its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Leg", "legs", "probe_classes", "refine_classes", "toward"]


@dataclass(frozen=True)
class Leg:
    """One run of a search: ``kind`` is ``first``, ``probe`` (``index``: which candidate
    class) or ``refine``; ``steps`` its length in steps (2 passes each)."""

    kind: str
    steps: int
    index: int = 0


def legs(steps: int, restarts: int, probes: int, first_share: float,
         probe_share: float, split_min: int = 0) -> list[Leg]:  # fmt: skip
    """The runs of a class-aware search of ``steps`` steps: the first run gets
    ``first_share`` of them, each of ``probes`` probes ``probe_share``, and ``restarts``
    refinements share the rest. Probes that would get fewer than 8 steps are dropped
    (too short to anneal), and their steps go to the refinements. A search of fewer than
    ``split_min`` steps is one run: its runs would be too short to anneal (measured on the
    tuning models, L∞ and L1 at 250 and 500 passes: one whole run finds smaller flips)."""
    if restarts < 1 or steps < 2 or steps < split_min:
        return [Leg("first", steps)]
    probe = int(steps * probe_share)
    probes = probes if probe >= 8 else 0
    first = max(int(steps * first_share), 1)
    rest = steps - first - probes * probe
    per = rest // restarts
    if per < 1:
        return [Leg("first", first), *(Leg("refine", (steps - first) // restarts)
                                        for _ in range(restarts))]  # fmt: skip
    out = [Leg("first", first), *(Leg("probe", probe, i) for i in range(probes))]
    return out + [Leg("refine", per) for _ in range(restarts)]


def probe_classes(ranked: Tensor, found: Tensor, count: int) -> Tensor:
    """Per sample, the first ``count`` ranked candidate classes other than ``found`` (the
    class its first run landed in, ``-1`` for none): ``(B, count)``, the last candidate
    repeated where a sample has too few."""
    other = ranked != found.unsqueeze(1)
    # stable order: the candidates that differ from `found` first, in ranked order
    order = torch.argsort((~other).to(torch.int8), dim=1, stable=True)
    kept = ranked.gather(1, order)[:, : max(count, 1)]
    if kept.shape[1] < count:
        kept = torch.cat([kept, kept[:, -1:].expand(-1, count - kept.shape[1])], dim=1)
    return kept


def refine_classes(best_class: Tensor, ranked: Tensor, labels: Tensor) -> Tensor:
    """The class a refinement drives toward: the class of the best flip so far, or the
    nearest ranked class where there is none (or it is the label)."""
    bad = (best_class < 0) | (best_class == labels)
    return torch.where(bad, ranked[:, 0], best_class)


def toward(scores: Tensor, labels: Tensor, against: Tensor) -> Tensor:
    """The pairwise loss ``z_y − z_c`` that drives each sample toward its chosen class
    ``c = against`` (a run's loss; the flip criterion stays the goal's)."""
    z = scores.gather(1, torch.stack([labels, against], dim=1))
    return z[:, 0] - z[:, 1]
