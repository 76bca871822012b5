"""The typed contract between the engine and plugins: what a space, a distance, a model
adapter and a loader must provide, and the small records they exchange with the engine.

A leaf module (it imports only typing, numpy and torch types), so plugins, the engine and
the host can all depend on it. Every member listed here is one the engine calls; optional
per-problem capabilities have defaults in :class:`ProblemBase` instead of attribute probes.
Plugin authors import these names from :mod:`mmargin.plugin`.

Three kinds of perturbation space exist, told apart by their ``kind``:

* ``"continuous"`` (:class:`Space`): additive δ in a box, searched by the gradient,
  decision and hybrid strategies (images, tabular features, waveforms);
* ``"discrete"`` (:class:`DiscreteSpace`): edits at positions, searched by greedy, beam or
  exhaustive enumeration (words, characters, tokens);
* ``"relaxed"`` (:class:`RelaxedSpace`): discrete inputs searched through a continuous
  encoding (text through its input embeddings), then decoded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from mmargin.data import Dataset


# -- records exchanged with discrete and relaxed spaces -------------------------------------
def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)


@dataclass(frozen=True)
class Edit:
    """One change at one position: ``value`` replaces what is there, at ``cost``.

    ``value`` must be hashable (a word, a token id, a category); ``text`` is what a person
    reads in a report (``"good -> gud"``).
    """

    position: int
    value: Any
    cost: float = 1.0
    text: str = ""

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view of the edit for ``SampleResult.extras``."""
        return {
            "position": self.position,
            "value": _plain(self.value),
            "cost": self.cost,
            "text": self.text,
        }


@dataclass(frozen=True)
class Ranking:
    """Importance of positions for one input (larger = try first) and what it cost.

    ``queries`` counts model passes (a forward + backward gradient ranking is 2).
    ``estimates`` optionally maps a position to the estimated change of the goal's loss
    for each of its candidates (same order as ``candidates(position)``); the search then
    evaluates the most promising candidates first.
    """

    importance: Mapping[int, float]
    queries: int
    estimates: Mapping[int, np.ndarray] | None = None


@dataclass(frozen=True)
class Encoding:
    """One input as a continuous point: ``point`` (float32, e.g. tokens × dims), ``free``
    (1 where a coordinate may change, broadcastable to ``point``; ``None``: all), ``notes``
    for the report (truncation ...) and ``info``, private to the space (token ids ...)."""

    point: np.ndarray
    free: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    info: Any = None


@dataclass
class Found:
    """What a discrete search returns: the best flipping edits (``None`` if none), a proven
    lower bound on the cost of any flip, the method that found it and why it stopped."""

    edits: tuple[Edit, ...] | None
    lower: float | None
    method: str
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)


# -- models ---------------------------------------------------------------------------------
@runtime_checkable
class ModelAdapter(Protocol):
    """What the engine needs from a model: scores ``(B, K)`` for a batch.

    Continuous spaces pass a float tensor ``(B, ...)`` in the space's units; discrete
    spaces pass a list of inputs (strings for text). ``differentiable`` says whether
    gradients flow from the scores to a tensor input; ``device`` is where tensors go.
    An adapter must leave the caller's model as it was given (mode, ``requires_grad``).
    """

    differentiable: bool

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        ...

    def __call__(self, x: Any) -> Tensor:
        """Scores ``(B, K)`` for a batch; differentiable w.r.t. ``x`` when ``differentiable``."""
        ...


# -- distances ------------------------------------------------------------------------------
@runtime_checkable
class Distance(Protocol):
    """An Lp-like distance for continuous spaces: the units a margin is reported in.

    ``p`` is the exponent the search follows (0, 1, 2 or ``inf``): the engine derives the
    step length from it. ``norm``, ``dual_norm`` and ``project`` work on batches, one value
    per sample.
    """

    name: str
    p: float

    def norm(self, delta: Tensor) -> Tensor:
        """Per-sample size of a batch of perturbations ``(B, ...)`` → ``(B,)``."""
        ...

    def dual_norm(self, grad: Tensor) -> Tensor:
        """Per-sample dual norm of a batch of gradients ``(B, ...)`` → ``(B,)``."""
        ...

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        """The batch projected onto the balls of per-sample radius ``eps`` ``(B,)``."""
        ...


def l2_scale(p: float, eps: Tensor, free_dims: Tensor) -> Tensor:
    """The L2 radius of the widest point of an Lp ball of radius ``eps`` with ``free_dims``
    free coordinates: what sets the gradient search's step length for any distance."""
    if p == math.inf:
        return eps * free_dims.to(eps).clamp(min=1).sqrt()
    if p == 0.0:
        return eps.clamp(min=1).sqrt()
    return eps


@runtime_checkable
class EditDistance(Protocol):
    """The distance of a discrete space: names the units and measures a final flip.

    ``measure(x, x_adv, edits)`` is the reported margin; return the summed edit costs when
    the costs are the distance (the search minimises those costs).
    """

    name: str

    def measure(self, x: Any, x_adv: Any, edits: Sequence[Edit]) -> float:
        """The size of the flip from ``x`` to ``x_adv`` made by ``edits``."""
        ...


# -- spaces ---------------------------------------------------------------------------------
@runtime_checkable
class Space(Protocol):
    """A continuous perturbation space (``kind = "continuous"``): a box, a mask and a
    ``finalize`` step onto the valid set. :class:`mmargin.spaces.ContinuousSpace` is the
    reference implementation; subclass it."""

    name: str
    modality: str

    @property
    def kind(self) -> str:
        """``"continuous"``."""
        ...

    def check(self, x: np.ndarray) -> list[str | None]:
        """Per sample ``None`` or why it cannot be searched; raise for a bad batch shape."""
        ...

    def project(self, x: Tensor, delta: Tensor) -> Tensor:
        """The perturbation made valid (mask, box); returns the projected delta."""
        ...

    def finalize(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """A candidate mapped onto the valid set (integers, one-hot) before verification."""
        ...

    def free_gradient(self, x: Tensor, delta: Tensor, grad: Tensor) -> Tensor:
        """The loss gradient with frozen and bound-blocked components zeroed."""
        ...

    def free_dims(self, x: Tensor) -> Tensor:
        """Per-sample number of coordinates that may change ``(B,)``."""
        ...

    def random(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A random direction of unit L2 norm per sample, shaped like ``x``."""
        ...

    @property
    def coordinate_groups(self) -> Sequence[np.ndarray] | None:
        """Coordinates that move together (one-hot blocks), or ``None`` for singletons."""
        ...

    @property
    def reference(self) -> np.ndarray | None:
        """Valid inputs (e.g. training rows) the decision strategy may start from."""
        ...


class ProblemBase:
    """Defaults for the optional members of a :class:`DiscreteProblem`; subclass it.

    Override what your space can do better: ``admissible`` (constraints on a whole
    combination), ``neutral`` (a masking edit for leave-one-out importance), ``rank``
    (cheap importance, e.g. from gradients), ``size`` (denominator of the relative
    margin), ``report`` (extras such as the adversarial text), ``notes``.
    """

    notes: Sequence[str] = ()

    def admissible(self, edits: Sequence[Edit]) -> bool:
        """Whether a combination of edits is allowed as a whole (default: always)."""
        return True

    def neutral(self, position: int) -> Edit | None:
        """A masking edit at ``position`` for leave-one-out importance (default: none)."""
        return None

    def rank(self, goal: Any, label: int, targets: Any, current: Sequence[Edit]) -> Ranking | None:
        """Importance of the free positions given the kept edits (default: none)."""
        return None

    def size(self) -> float:
        """The size of the input for the relative margin (default: unknown, ``nan``)."""
        return math.nan

    def report(self, edits: Sequence[Edit], adversarial: Any) -> dict[str, Any]:
        """Extras for a verified flip (default: none)."""
        return {}


@runtime_checkable
class DiscreteProblem(Protocol):
    """One input prepared for the discrete search (built by :meth:`DiscreteSpace.problem`).

    ``positions``, ``candidates`` and ``apply`` are the core; the rest have defaults in
    :class:`ProblemBase`.
    """

    notes: Sequence[str]

    def positions(self) -> Sequence[int]:
        """The positions that may change (possibly none)."""
        ...

    def candidates(self, position: int) -> Sequence[Edit]:
        """The allowed edits at ``position``, after the space's constraints."""
        ...

    def apply(self, edits: Sequence[Edit]) -> Any:
        """The input with ``edits`` (at distinct positions) applied."""
        ...

    def admissible(self, edits: Sequence[Edit]) -> bool:
        """Whether a combination of edits is allowed as a whole."""
        ...

    def neutral(self, position: int) -> Edit | None:
        """A masking edit for leave-one-out importance, or ``None``."""
        ...

    def rank(self, goal: Any, label: int, targets: Any, current: Sequence[Edit]) -> Ranking | None:
        """Importance of the free positions (``queries`` = passes spent), or ``None``."""
        ...

    def size(self) -> float:
        """The size of the input (denominator of the relative margin), ``nan`` if none."""
        ...

    def report(self, edits: Sequence[Edit], adversarial: Any) -> dict[str, Any]:
        """Extras for a verified flip."""
        ...


@runtime_checkable
class DiscreteSpace(Protocol):
    """A perturbation space of discrete edits.

    ``search_config`` (a :class:`mmargin.engine.spec.DiscreteConfig` or ``None``) carries
    the search knobs a task file sets in its ``[space]`` table.
    """

    name: str
    modality: str
    search_config: Any

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        """Per input, ``None`` when it can be searched or a message saying why not."""
        ...

    def problem(self, model: Any, x: Any) -> DiscreteProblem:
        """Prepare one input (positions, candidates) for ``model``."""
        ...


@runtime_checkable
class RelaxedSpace(Protocol):
    """Discrete inputs searched through a continuous encoding, then decoded."""

    name: str
    modality: str

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        """Per input, ``None`` when it can be searched or a message saying why not."""
        ...

    def encode(self, model: Any, x: Any) -> Encoding:
        """The continuous point the model reads for input ``x``."""
        ...

    def continuous_model(self, model: Any) -> ModelAdapter:
        """A differentiable adapter mapping a batch of points ``(B, *shape)`` to scores."""
        ...

    def decode(
        self, model: Any, x: Any, encoding: Encoding, point: np.ndarray
    ) -> tuple[Any, dict[str, Any]]:
        """The discrete input nearest to an adversarial ``point``, and extras to report.

        Extras may hold ``"implausible"``: why the point is no meaningful adversarial (say,
        farther from the input than any discrete edit could move it); the sample is then
        reported as not flipped, with that reason and ``extras["implausible_margin"]``."""
        ...


# -- data -----------------------------------------------------------------------------------
class Loader(Protocol):
    """A data loader factory: ``loader(**options)`` returns a :class:`~mmargin.data.Dataset`
    in the space's units (options come from the task's ``[data]`` table)."""

    def __call__(self, **options: Any) -> Dataset:
        """Load the data."""
        ...


def space_kind(space: Any) -> str:
    """``"continuous"``, ``"discrete"`` or ``"relaxed"``: which engine path searches it.

    Continuous spaces say so with ``kind``; discrete and relaxed spaces are recognised by
    their methods (``problem`` / ``encode`` + ``decode``), as their protocols define them.
    """
    if isinstance(space, RelaxedSpace):
        return "relaxed"
    if isinstance(space, DiscreteSpace):
        return "discrete"
    return "continuous"
