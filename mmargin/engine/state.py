"""What strategies share: the per-batch outcome they return to the driver, a broadcast
helper, per-sample random streams and the test of a search's first gradient."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmargin.protocols import Distance

VANISHING = 1e3
"""A gradient so small that the first-order distance to the boundary, ``loss / ‖∇‖_*``,
exceeds this many times ``1 + ‖x‖`` is vanishing (saturated probabilities, for one): it
counts as unusable, like a zero one."""


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Per-sample values ``(B,)`` reshaped to broadcast against a batch ``like`` ``(B, ...)``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def moved(delta: Tensor, norms: Tensor, host: bool) -> Tensor:
    """Per sample, whether the perturbation ``delta`` moved at all (some entry is not 0),
    given its ``norms`` under any distance: a norm above 0 has a non-zero entry, so on the
    host (where reading ``norms`` back is free) only the rows whose norm is 0 or NaN are
    read (a norm can underflow to 0); elsewhere every row is, without a sync."""
    if not host:
        return delta.flatten(1).abs().amax(dim=1) > 0
    out = norms > 0
    if bool(out.all()):
        return out
    rest = (~out).nonzero().squeeze(1)
    out[rest] = delta[rest].flatten(1).abs().amax(dim=1) > 0
    return out


@dataclass
class SearchState:
    """Best adversarial perturbation per sample (``inf`` norm where none was found), the
    class it lands in (``-1`` if none) and the forward + backward passes each sample used.
    ``flags`` holds per-sample boolean masks a search raises, named after the attack-failure
    indicators of :mod:`mmargin.engine.indicators` (``zero_gradients`` ...).
    ``alternate`` (L0 only, else ``None``): per sample the best flip of a dissimilar run
    that is not ``best_delta`` (zero where there is none), which the support-shrinking
    stage (:mod:`mmargin.engine.sparse`) shrinks too when its passes allow."""

    best_delta: Tensor
    best_norm: Tensor
    best_class: Tensor
    queries: Tensor
    flags: dict[str, Tensor] = field(default_factory=dict)
    alternate: Tensor | None = None

    def record(self, where: Tensor, norms: Tensor, delta: Tensor, scores: Tensor) -> None:
        """Keep the flips at batch rows ``where`` (sizes ``norms``, perturbations ``delta``,
        the model's ``scores`` there) as the best so far; callers pass improvements only."""
        self.best_norm[where] = norms
        self.best_delta[where] = delta
        self.best_class[where] = scores.argmax(dim=1)

    def flag(self, name: str, rows: Tensor) -> None:
        """Raise the flag ``name`` for the samples ``rows`` (indices or a boolean mask)."""
        mask = self.flags.setdefault(name, torch.zeros_like(self.queries, dtype=torch.bool))
        mask[rows] = True

    def searching(self, only: Tensor | None = None) -> Tensor:
        """The rows a run searches, ascending: every sample but those flagged
        ``zero_gradients`` (they left the search at its first step), within ``only`` (a
        boolean mask) when given."""
        rows = torch.arange(self.queries.shape[0], device=self.queries.device)
        dead = self.flags.get("zero_gradients")
        if dead is not None:
            rows = rows[~dead]
        if only is not None:
            rows = rows[only[rows]]
        return rows

    def flipped_away(self, labels: Tensor, only: Tensor | None = None) -> Tensor:
        """Per sample (a boolean mask), whether a run that starts from the best flip has one
        to start from: a flip found, into another class than ``labels``, a usable gradient
        (no ``zero_gradients`` flag), within ``only`` when given."""
        chosen = torch.isfinite(self.best_norm) & (self.best_class >= 0)
        chosen &= self.best_class != labels
        if only is not None:
            chosen &= only
        dead = self.flags.get("zero_gradients")
        return chosen if dead is None else chosen & ~dead

    def raised(self, row: int) -> list[str]:
        """The flags raised for sample ``row``, sorted."""
        return sorted(name for name, mask in self.flags.items() if bool(mask[row]))

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


def sample_seed(seed: int, sample: str) -> int:
    """A 63-bit seed for one sample's random stream, from the run's seed and its id."""
    digest = hashlib.blake2b(f"{seed}\x00{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class Streams:
    """One random stream (a seeded ``torch.Generator``) per sample of a batch.

    Draws for a set of rows go to each row's own sample stream, in row order, so what a
    sample draws never depends on which other samples share its batch.
    """

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self.generators = list(generators)

    @classmethod
    def for_samples(cls, seed: int, ids: Sequence[str]) -> Streams:
        """Fresh streams for the samples ``ids`` of a run seeded with ``seed``."""
        return cls([torch.Generator().manual_seed(sample_seed(seed, s)) for s in ids])

    def __len__(self) -> int:
        return len(self.generators)

    def subset(self, rows: Tensor | Sequence[int]) -> Streams:
        """The streams of some samples (the same generators, not copies)."""
        index = rows.tolist() if isinstance(rows, Tensor) else list(rows)
        return Streams([self.generators[int(i)] for i in index])

    def draw(self, owner: Tensor, fn: Callable[[int, int, torch.Generator], Tensor]) -> Tensor:
        """Rows drawn by ``fn(sample, count, generator)`` from each owner's stream, placed
        back in the order of ``owner`` (``(R,)`` sample indices into these streams)."""
        owners = owner.tolist()
        rows: dict[int, list[int]] = {}
        for r, o in enumerate(owners):
            rows.setdefault(int(o), []).append(r)
        parts: list[Tensor] = []
        order: list[int] = []
        for o in sorted(rows):
            parts.append(fn(o, len(rows[o]), self.generators[o]))
            order.extend(rows[o])
        out = torch.cat(parts)
        back = torch.empty(len(order), dtype=torch.long)
        back[torch.as_tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return out[back.to(out.device)]


def usable(distance: Distance, x: Tensor, grad: Tensor, loss: Tensor, finite: Tensor) -> Tensor:
    """Per sample, whether a search's first gradient at ``x`` is usable: ``finite`` (the
    raw gradient had no NaN or infinity), ``grad`` (cleaned, the space's free gradient)
    not all zero, and not vanishing (see :data:`VANISHING`) for the goal's ``loss``."""
    ok = finite & (grad.flatten(1).abs().amax(dim=1) > 0)
    reach = loss.clamp(min=0) / distance.dual_norm(grad).clamp(min=1e-30)
    return ok & (reach <= VANISHING * (1 + distance.norm(x)))
