"""What an exact method is told about one sample: the feature constraints and the model.

Two small typed descriptions that plugins provide through hooks (see
:mod:`mmargin.hookspecs`) and that the core's exact hook turns into a solver model:

- :class:`FeatureConstraints` (hook ``mmargin_exact_constraints(space, distance, x)``):
  per-feature bounds of the perturbed row (directions folded in), which features may
  change, which are integers, which columns form one-hot groups, the per-feature costs
  and the norm ``p`` — everything the *space* and the *distance* say about one row;
- :class:`ExactModel` (hook ``mmargin_exact_model(model)``): the model's parameters in a
  form the solvers read — affine layers with ReLUs between them, or a tree ensemble —
  and its ``head``, i.e. how the adapter's scores derive from the last layer's outputs
  (see :data:`HEADS`), which is what maps a goal onto the outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mmargin.exact.nets import Layers, fold_affine_input

if TYPE_CHECKING:
    from mmargin.exact.graph import Graph
    from mmargin.exact.trees import TreeEnsemble

__all__ = ["HEADS", "ExactModel", "FeatureConstraints", "Layers", "feature_constraints"]

HEADS = {
    "logits": "the outputs are the adapter's scores (torch logits): arg-max; a probability "
              "threshold is on their softmax, a raw threshold on a column",
    "softmax": "the adapter returns the log-softmax of the outputs: arg-max; probability "
               "thresholds (two classes)",
    "logit": "one output, the log-odds of class 1 (class 1 iff > 0); probability thresholds",
    "ovr": "one-vs-rest logits, normalised by the adapter: arg-max only",
    "decision": "raw decision scores (one output f means the scores [-f, f]): arg-max; raw "
                "thresholds",
    "proba": "the outputs are class probabilities (forests): arg-max; probability thresholds",
}  # fmt: skip
"""How an adapter's scores derive from a model's outputs; :func:`mmargin.exact.rules.flip_rule`
maps a goal onto the outputs accordingly."""


@dataclass(frozen=True)
class FeatureConstraints:
    """The constraint set and the cost of a perturbation of one flat row ``x``.

    ``lower`` / ``upper`` bound each column of the perturbed row (a direction such as
    "only up" is a bound at ``x``); ``free`` marks the columns that may change;
    ``integer`` the integer columns; ``groups`` the column indices of each one-hot block
    (exactly one column is 1); ``weights`` the per-column cost of a unit change and
    ``group_costs`` the cost of switching each group's category, in the distance's units;
    ``p`` the norm (0, 1, 2 or inf) that combines the per-feature costs. ``name`` says
    what the constraints come from (``"box"``, ``"schema"``) in messages. Build with
    :func:`feature_constraints`, which normalises and checks the arrays.
    """

    x: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    free: np.ndarray
    integer: np.ndarray
    weights: np.ndarray
    p: float
    groups: tuple[np.ndarray, ...] = ()
    group_costs: tuple[float, ...] = ()
    name: str = "space"

    @property
    def discrete_free(self) -> bool:
        """True when an integer column or a one-hot block may change (a continuous
        relaxation is then only a lower bound)."""
        return bool(np.any(self.free & self.integer) or
                    any(np.any(self.free[g]) for g in self.groups))  # fmt: skip

    @property
    def in_groups(self) -> np.ndarray:
        """True for the columns of one-hot groups."""
        out = np.zeros(self.x.size, dtype=bool)
        for g in self.groups:
            out[g] = True
        return out

    @property
    def bounded(self) -> bool:
        """True when every free column has finite bounds."""
        f = self.free
        return bool(np.all(np.isfinite(self.lower[f])) and np.all(np.isfinite(self.upper[f])))

    def valid(self, row: np.ndarray, tol: float = 1e-6) -> bool:
        """Whether ``row`` honours the integer columns and the one-hot groups."""
        ints = self.integer & self.free
        if np.any(np.abs(row[ints] - np.round(row[ints])) > tol):
            return False
        for g in self.groups:
            block = row[g]
            off = np.minimum(np.abs(block), np.abs(block - 1))
            if np.any(off > tol) or abs(block.sum() - 1) > tol:
                return False
        return True

    def size(self, delta: np.ndarray) -> float:
        """``‖weights ⊙ delta‖_p`` (``p = 0``: the number of columns changed)."""
        d = np.abs(np.asarray(delta, dtype=np.float64).ravel()) * self.weights
        if d.size == 0:
            return 0.0
        if self.p == 0:
            return float(np.count_nonzero(d))
        if self.p == math.inf:
            return float(d.max())
        if self.p == 2:
            return float(np.linalg.norm(d))
        return float(d.sum())


def feature_constraints(
    x: np.ndarray,
    p: float,
    *,
    lower: Any = -math.inf,
    upper: Any = math.inf,
    free: Any = True,
    integer: Any = False,
    weights: Any = 1.0,
    groups: Sequence[np.ndarray] = (),
    group_costs: Sequence[float] | None = None,
    name: str = "space",
) -> FeatureConstraints:
    """A checked :class:`FeatureConstraints` for the flat row ``x`` (arrays broadcast).

    Columns with ``upper <= lower`` are frozen; frozen columns get ``lower = upper = x``;
    free ones bounds that contain ``x``. ``group_costs`` default to the weighted norm of
    a switch (two columns changing by 1). Raises ``ValueError`` for bad weights, groups
    or norms.
    """
    xf = np.asarray(x, dtype=np.float64).ravel()
    shape = xf.shape

    def flat(v: Any, dtype: Any, what: str) -> np.ndarray:
        arr = np.asarray(v, dtype=dtype)
        try:
            return np.broadcast_to(arr.ravel() if arr.size == xf.size else arr, shape).copy()
        except ValueError:
            raise ValueError(f"{what} of shape {arr.shape} does not fit {xf.size} features") \
                from None  # fmt: skip

    pf = float(p)
    if pf not in (0.0, 1.0, 2.0, math.inf):
        raise ValueError(f"p must be 0, 1, 2 or inf, got {p!r}")
    lo, hi = flat(lower, np.float64, "lower"), flat(upper, np.float64, "upper")
    fr = flat(free, bool, "free") & (hi > lo)
    w = flat(weights, np.float64, "weights")
    if not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError("weights must be finite and strictly positive")
    grp = tuple(np.asarray(g, dtype=np.int64) for g in groups)
    if any(g.size < 2 or g.min() < 0 or g.max() >= xf.size for g in grp):
        raise ValueError("each one-hot group needs >= 2 valid column indices")
    if group_costs is None:
        costs = tuple(_switch(w[g], pf) for g in grp)
    else:
        costs = tuple(float(c) for c in group_costs)
        if len(costs) != len(grp):
            raise ValueError(f"{len(grp)} groups but {len(costs)} group costs")
    lo, hi = np.where(fr, np.minimum(lo, xf), xf), np.where(fr, np.maximum(hi, xf), xf)
    return FeatureConstraints(
        x=xf, lower=lo, upper=hi, free=fr, integer=flat(integer, bool, "integer"), weights=w,
        p=pf, groups=grp,
        group_costs=costs, name=name,
    )  # fmt: skip


def _switch(w: np.ndarray, p: float) -> float:
    """The weighted ``p``-norm of a switch between the two costliest columns of a group."""
    top = np.sort(w)[-2:]
    if p == 0:
        return 2.0
    if p == math.inf:
        return float(top.max())
    return float(np.sum(top**p) ** (1.0 / p))


@dataclass(frozen=True)
class ExactModel:
    """A model's parameters as the exact solvers read them.

    Exactly one of ``layers`` (affine layers, ReLU between them; one layer is a linear
    model), ``graph`` (a traced :class:`~mmargin.exact.graph.Graph`), ``module`` (a torch
    module, traced by :meth:`for_input` once the input shape is known) and ``ensemble``
    (a :class:`~mmargin.exact.trees.TreeEnsemble`) is set; ``head`` is one of
    :data:`HEADS`. ``mean`` / ``std`` (scalars, per-feature or per-channel values)
    describe an input normalisation ``(x - mean) / std`` the adapter applies before the
    first layer (:meth:`for_input` folds it in). ``info`` names the source for messages
    (``info["device"]``: where bounds are propagated).
    """

    head: str
    layers: Layers | None = None
    ensemble: TreeEnsemble | None = None
    mean: Any = None
    std: Any = None
    info: dict[str, str] = field(default_factory=dict)
    graph: Graph | None = None
    module: Any = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)}, got {self.head!r}")
        given = [f for f in (self.layers, self.ensemble, self.graph, self.module) if f is not None]
        if len(given) != 1:
            raise ValueError("an ExactModel has exactly one of layers, graph, module or ensemble")

    @property
    def n_outputs(self) -> int:
        """Width of the model's output vector."""
        if self.ensemble is not None:
            return self.ensemble.n_outputs
        if self.graph is not None:
            return self.graph.n_outputs
        assert self.layers is not None, "trace the module first (for_input)"
        return int(self.layers[-1][0].shape[0])

    @property
    def hidden_units(self) -> int:
        """ReLU units (and max-pool outputs) in all (0 for linear models and tree ensembles)."""
        if self.graph is not None:
            return self.graph.hidden_units
        return sum(int(w.shape[0]) for w, _ in (self.layers or [])[:-1])

    def network(self) -> Graph | None:
        """The model as a graph (layers converted), ``None`` for tree ensembles."""
        from mmargin.exact.graph import graph_from_layers

        if self.graph is not None:
            return self.graph
        return graph_from_layers(self.layers) if self.layers is not None else None

    def for_input(self, shape: tuple[int, ...]) -> ExactModel:
        """This model on raw inputs of ``shape``: a module traced (a plain chain of affine
        operations and ReLUs becomes ``layers``), the normalisation folded into layer one.
        Raises :class:`~mmargin.exact.graph.UnsupportedModel` naming what cannot be traced."""
        if self.module is not None:
            from mmargin.exact.graph import chain_layers
            from mmargin.exact.tracing import trace

            mean = None if self.mean is None else _channels(self.mean, shape, 0.0)
            std = None if self.std is None else _channels(self.std, shape, 1.0)
            graph = trace(self.module, shape, mean, std)
            layers = chain_layers(graph)
            if layers is not None:
                return ExactModel(self.head, layers=layers, info=self.info)
            return ExactModel(self.head, graph=graph, info=self.info)
        if self.layers is None or (self.mean is None and self.std is None):
            return self
        layers = fold_affine_input(self.layers, _channels(self.mean, shape, 0.0),
                                   _channels(self.std, shape, 1.0))  # fmt: skip
        return ExactModel(self.head, layers=layers, info=self.info)


def _channels(values: Any, shape: tuple[int, ...], default: float) -> np.ndarray:
    """Scalar, per-feature or per-channel (first axis) ``values`` for one flat sample."""
    if values is None:
        return np.full(int(np.prod(shape)), default)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and len(shape) >= 2:
        arr = arr.reshape(-1, *([1] * (len(shape) - 1)))
    return np.broadcast_to(arr, shape).ravel()
