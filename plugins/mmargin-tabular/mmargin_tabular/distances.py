"""Schema-weighted distances: the units a tabular margin is reported in.

``tabular-l1`` (the default: total cost of the change), ``tabular-l2``, ``tabular-linf``
and ``tabular-l0`` (number of *features* changed — a category switch counts once). The
weights come from the schema (:meth:`Schema.weights`): ``units = "cost"`` (cost points),
``"std"`` (standard deviations, from each feature's ``scale``) or ``"raw"``. Each is the
core's :class:`~mmargin.distances.LpDistance`, so the gradient engine, the line search
and the exact solvers use them unchanged. Raw-unit figures are in each result's extras.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mmargin.plugin import LpDistance
from mmargin_tabular.schema import Schema, load_schema

P_BY_NAME = {"l0": 0.0, "l1": 1.0, "l2": 2.0, "linf": math.inf}
_UNIT_WORDS = {"cost": "cost points", "std": "standard deviations", "raw": "raw units"}


@dataclass(frozen=True)
class FeatureCount(LpDistance):
    """L0 over features: how many features a perturbation changes (one-hot blocks count
    once). ``membership`` is the ``(columns, features)`` 0/1 matrix of the schema."""

    membership: Tensor | None = None

    def norm(self, delta: Tensor) -> Tensor:
        changed = (delta.flatten(1) != 0).to(delta.dtype)
        if self.membership is None:
            return changed.sum(dim=1)
        return (changed @ self.membership.to(changed) > 0).sum(dim=1).to(delta.dtype)


DEFAULT_UNITS = {"l0": "cost", "l1": "cost", "l2": "cost", "linf": "std"}
"""L∞ defaults to scaled (standard-deviation) units: a largest change in money or days
is rarely what a person means; "at most 0.3 sd on any feature" is."""


def make_distance(name: str, schema: Schema, units: str | None = None) -> LpDistance:
    """The schema-weighted distance ``name`` (``l0``, ``l1``, ``l2``, ``linf``) in ``units``
    (default :data:`DEFAULT_UNITS`)."""
    if name not in P_BY_NAME:
        raise ValueError(f"unknown distance {name!r}; expected one of {sorted(P_BY_NAME)}")
    p = P_BY_NAME[name]
    units = units or DEFAULT_UNITS[name]
    weights = torch.as_tensor(schema.weights(units, p), dtype=torch.float32)
    if p == 0.0:
        index = torch.as_tensor(schema.feature_index)
        membership = torch.nn.functional.one_hot(index, len(schema.features)).float()
        return FeatureCount(name="tabular-l0", p=0.0, weights=weights, units="features",
                            membership=membership)  # fmt: skip
    return LpDistance(name=f"tabular-{name}", p=p, weights=weights, units=_UNIT_WORDS[units])


def factory(name: str) -> Callable[..., Any]:
    """A registrable factory ``(schema, units=None)`` for the distance ``name``."""

    def build(schema: Any, units: str | None = None) -> LpDistance:
        return make_distance(name, load_schema(schema), units)

    build.__name__ = f"tabular_{name}"
    build.__doc__ = f"Schema-weighted {name} distance (units: cost, std or raw)."
    return build
