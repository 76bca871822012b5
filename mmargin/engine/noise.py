"""Random-noise margins: the smallest level of random noise that flips a prediction.

The adversarial margin is the distance to the *nearest* flip; the random-noise margin is
the distance to a flip along *random* directions. Their ratio, in the same space and
distance, is the unit-free "how much worse than chance" figure of the design, comparable
across pixels, words, features and samples.

For each of ``draws`` seeded noise directions ``u`` (the space's ``random`` by default:
unit L2 over the free coordinates; a modality may pass its own sampler) the search looks
for the smallest scale ``s`` at which ``finalize(x, apply(x, u, s))`` is adversarial:
growing ``s`` geometrically until a flip, then bisecting on ``log s``. Draws after a flip
was found start at the scale where their size equals the best so far and are dropped at
once when that does not flip, so they only cost a pass unless they can win. Each pass is
one forward pass per sample, counted; a sample stops at ``budget``. The result is an
upper bound along the directions tried (``inf`` where none flipped).

``x`` must be classified as ``labels`` (not yet adversarial): the caller's clean pass says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mmargin.adapters import ModelAdapter
from mmargin.engine.state import per_sample
from mmargin.goals import Goal
from mmargin.spaces import ContinuousSpace

Measure = Callable[[Tensor], Tensor]
"""Per-sample size of a perturbation batch ``(B, ...)`` → ``(B,)`` (a distance's ``norm``)."""
Sampler = Callable[[Tensor, torch.Generator], Tensor]
"""Noise directions shaped like ``x`` for a batch, drawn from the generator."""
Apply = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``apply(x, u, s)`` → the noisy batch at per-sample scale ``s`` (default ``x + s·u``)."""


@dataclass(frozen=True)
class NoiseConfig:
    """Knobs of the random-noise search.

    ``start`` and ``max_scale`` are relative to each sample's L2 norm (absolute when it is
    0): the first scale tried and the largest before a direction counts as not flipping.
    ``grow`` is the factor between bracketing scales; ``steps`` the bisection steps on
    ``log s`` per direction (relative precision ``grow ** 2**-steps``); ``budget`` the
    forward passes per sample for all draws together.
    """

    draws: int = 8
    budget: int = 200
    steps: int = 10
    grow: float = 2.0
    start: float = 1e-3
    max_scale: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.draws < 1 or self.budget < 1 or self.steps < 0:
            raise ValueError(
                f"NoiseConfig: draws and budget must be >= 1 and steps >= 0, "
                f"got {self.draws}, {self.budget} and {self.steps}"
            )
        if not (self.grow > 1 and 0 < self.start < self.max_scale):
            raise ValueError(
                f"NoiseConfig: expected grow > 1 and 0 < start < max_scale, got "
                f"{self.grow}, {self.start} and {self.max_scale}"
            )


@dataclass
class NoiseMargin:
    """Per sample: the smallest flipping noise found (zeros where none), its size by the
    measure (``inf`` where none), its scale ``s`` (``inf`` where none) and the passes used."""

    delta: Tensor
    size: Tensor
    scale: Tensor
    queries: Tensor

    @property
    def found(self) -> Tensor:
        """True where some noise draw flipped the sample."""
        return torch.isfinite(self.size)


def add_scaled(x: Tensor, u: Tensor, s: Tensor) -> Tensor:
    """The default ``apply``: ``x + s·u`` with one scale per sample."""
    return x + u * per_sample(s, u)


@torch.no_grad()
def noise_margin(
    model: ModelAdapter,
    space: ContinuousSpace,
    goal: Goal,
    x: Tensor,
    labels: Tensor,
    targets: Tensor | None = None,
    *,
    measure: Measure,
    config: NoiseConfig = NoiseConfig(),
    sample: Sampler | None = None,
    apply: Apply = add_scaled,
) -> NoiseMargin:
    """The smallest random-noise perturbation that flips each sample of ``x``."""
    sample = sample or space.random
    generator = torch.Generator().manual_seed(config.seed)
    batch = x.shape[0]
    ref = x.flatten(1).norm(dim=1)
    ref = torch.where(ref > 0, ref, torch.ones_like(ref))
    out = NoiseMargin(
        delta=torch.zeros_like(x),
        size=torch.full((batch,), math.inf, device=x.device),
        scale=torch.full((batch,), math.inf, device=x.device),
        queries=torch.zeros(batch, dtype=torch.long, device=x.device),
    )
    for _ in range(config.draws):
        if bool((out.queries >= config.budget).all()):
            break
        u = sample(x, generator).to(x)
        unit = measure(u).clamp(min=1e-30)
        start = torch.where(out.found, out.size / unit, ref * config.start)
        _one_direction(
            model, space, goal, x, labels, targets, u, start, ref, measure, config, apply, out
        )
    return out


def _one_direction(
    model: ModelAdapter,
    space: ContinuousSpace,
    goal: Goal,
    x: Tensor,
    labels: Tensor,
    targets: Tensor | None,
    u: Tensor,
    start: Tensor,
    ref: Tensor,
    measure: Measure,
    config: NoiseConfig,
    apply: Apply,
    out: NoiseMargin,
) -> None:
    """Bracket and bisect the flipping scale along ``u`` for every sample, updating ``out``."""
    batch = x.shape[0]
    s = start.clone()
    lo = torch.zeros(batch, device=x.device)
    hi = torch.full((batch,), math.inf, device=x.device)
    prune = out.found.clone()  # a draw that cannot beat the best so far stops at once
    halvings = torch.zeros(batch, dtype=torch.long, device=x.device)
    bisections = torch.zeros(batch, dtype=torch.long, device=x.device)
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    while True:
        active &= out.queries < config.budget
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        si = s[idx]
        xi = x[idx]
        candidate = space.finalize(xi, apply(xi, u[idx], si))
        ti = targets[idx] if targets is not None else None
        adv = goal.is_adversarial(model(candidate), labels[idx], ti)
        out.queries[idx] += 1
        delta = candidate - xi
        size = measure(delta)
        better = adv & (size < out.size[idx])
        sel = idx[better]
        out.delta[sel] = delta[better]
        out.size[sel] = size[better]
        out.scale[sel] = si[better]

        lo_i = torch.where(adv, lo[idx], si)
        hi_i = torch.where(adv, si, hi[idx])
        lo[idx], hi[idx] = lo_i, hi_i
        bracketed = torch.isfinite(hi_i) & (lo_i > 0)
        bisections[idx] += bracketed.long()
        halvings[idx] += (adv & (lo_i == 0)).long()
        nxt = torch.where(
            ~torch.isfinite(hi_i),
            si * config.grow,
            torch.where(lo_i == 0, si / config.grow, torch.sqrt(lo_i * hi_i.clamp(max=1e30))),
        )
        s[idx] = nxt
        done = (
            (prune[idx] & ~adv)  # the size of the best so far does not flip along u
            | (~torch.isfinite(hi_i) & (nxt > ref[idx] * config.max_scale))
            | (bracketed & ((bisections[idx] > config.steps) | (hi_i <= lo_i * (1 + 1e-6))))
            | (halvings[idx] > 60)  # flips at any tiny scale: clean input not classified
        )
        prune[idx] = False
        active[idx] = ~done
