"""The ``tabular`` perturbation space: a feature schema as a :class:`ContinuousSpace`.

The engine searches in the continuous relaxation and verifies only valid rows:

- :meth:`TabularSpace.project` (every search step) keeps immutable features fixed,
  allowed directions (``up`` / ``down`` relative to the clean row), bounds, and each
  categorical's one-hot block on the probability simplex;
- :meth:`TabularSpace.finalize` (before every verification and in the line search) maps a
  candidate onto the valid set: integers rounded *away from the clean value* (so a
  candidate that crossed a split ``x > 3.5`` stays across it: 3.2 → 4 when it started at
  2), binaries at 0.5, each categorical to the one-hot of its largest entry (ties keep the
  original category), then the bounds and directions again.

So every adversarial the engine reports satisfies the schema exactly; the plugin's tests
check that property with hypothesis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmargin.plugin import ContinuousSpace
from mmargin_tabular.schema import Schema

_SNAP = 1e-6  # relative change below which a continuous value counts as unchanged


@dataclass
class _Layout:
    """Per-column tensors of a schema on one device / dtype."""

    direction: Tensor
    integer: Tensor
    binary: Tensor
    groups: list[Tensor]


@dataclass
class TabularSpace(ContinuousSpace):
    """Rows encoded by a :class:`~mmargin_tabular.schema.Schema` (see the module docs).

    ``reference`` optionally holds valid rows (e.g. training data) that the decision-based
    strategy may project onto the space as starting points.
    """

    schema: Schema | None = None
    reference: np.ndarray | None = field(default=None, repr=False)
    _extra: dict[tuple[str, str], _Layout] = field(default_factory=dict, repr=False,
                                                   compare=False)  # fmt: skip

    def __post_init__(self) -> None:
        if self.schema is None:
            raise ValueError("TabularSpace needs a schema")
        s = self.schema
        self.name, self.modality = "tabular", "tabular"
        self.lower, self.upper = s.lower.copy(), s.upper.copy()
        self.mask = s.mask.copy()
        self.sample_shape = (s.n_columns,)
        if self.reference is not None:
            ref = np.asarray(self.reference, dtype=np.float32)
            if ref.ndim != 2 or ref.shape[1] != s.n_columns:
                raise ValueError(f"reference rows must be (M, {s.n_columns}), got {ref.shape}")
            ok = [p is None for p in self.check(ref)]
            self.reference = ref[np.asarray(ok, dtype=bool)]

    @property
    def rounds(self) -> bool:
        """Whether :meth:`finalize` rounds the relaxation (a mutable integer, binary or
        categorical feature): the engine's ``auto`` then polishes gradient flips with the
        decision-based search (``hybrid``)."""
        assert self.schema is not None
        return any(f.mutable and f.type != "continuous" for f in self.schema.features)

    @property
    def coordinate_groups(self) -> list[np.ndarray]:
        """Columns that change together (one per feature): used by coordinate searches."""
        assert self.schema is not None
        return [np.arange(s.start, s.stop) for s in self.schema.slices]

    # -- checks ---------------------------------------------------------------------------
    def _check_one(self, row: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> str | None:
        """Per-feature validation with messages that name the feature."""
        assert self.schema is not None
        for f, s in zip(self.schema.features, self.schema.slices, strict=True):
            values = row[s]
            if f.type == "categorical":
                if np.isnan(values).any():
                    return f"feature {f.name!r} is missing"
                if not np.all((values == 0) | (values == 1)) or values.sum() != 1:
                    return (f"feature {f.name!r} is not one of its categories (an unseen "
                            f"category, or a one-hot block that does not sum to 1)")  # fmt: skip
                continue
            value = float(values[0])
            if math.isnan(value):
                return f"feature {f.name!r} is missing"
            if not math.isfinite(value):
                return f"feature {f.name!r} is infinite"
            tol = 1e-6 * (1.0 + abs(value))
            if value < f.lower - tol or value > f.upper + tol:
                return f"feature {f.name!r} = {value:g} is outside [{f.lower:g}, {f.upper:g}]"
            if f.type in ("integer", "binary") and abs(value - round(value)) > tol:
                return f"feature {f.name!r} = {value:g} must be an integer"
        return None

    # -- what the engine calls ------------------------------------------------------------
    def _layout(self, like: Tensor) -> _Layout:
        key = (str(like.device), str(like.dtype))
        if key not in self._extra:
            assert self.schema is not None
            s = self.schema
            binary = np.array([f.type == "binary" for f in s.features for _ in range(f.width)])
            dev = like.device
            self._extra[key] = _Layout(
                direction=torch.as_tensor(s.direction, device=dev).to(like.dtype),
                integer=torch.as_tensor(s.integer & ~binary, device=dev),
                binary=torch.as_tensor(binary, device=dev),
                groups=[torch.as_tensor(g, device=dev) for g in s.groups],
            )
        return self._extra[key]

    def _relax(self, x: Tensor, delta: Tensor) -> Tensor:
        """``x + delta`` inside mask, directions and bounds (continuous relaxation)."""
        lo, hi, mask = self._tensors(x)
        if mask is not None:
            delta = delta * mask
        direction = self._layout(x).direction
        delta = torch.where(direction > 0, delta.clamp(min=0), delta)
        delta = torch.where(direction < 0, delta.clamp(max=0), delta)
        return torch.maximum(torch.minimum(x + delta, hi), lo)

    def project(self, x: Tensor, delta: Tensor) -> Tensor:
        """The relaxation: mask, directions, bounds; one-hot blocks on the simplex."""
        new = self._relax(x, delta)
        for cols in self._layout(x).groups:
            new[:, cols] = _simplex(new[:, cols])
        return new - x

    def finalize(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """A valid row per sample (see the module docs); unchanged values are exactly ``x``."""
        new = self._relax(x, x_adv - x)
        t = self._layout(x)
        d = new - x
        outward = torch.sign(d) * torch.ceil((d.abs() - 1e-3).clamp(min=0))
        new = torch.where(t.integer, x + outward, new)
        new = torch.where(t.binary, torch.round(new), new)
        for cols in t.groups:
            block = new[:, cols]
            original = x[:, cols]
            best = (block + 1e-6 * original).argmax(dim=1)  # ties keep the original
            new[:, cols] = torch.nn.functional.one_hot(best, cols.numel()).to(new.dtype)
        new = self._relax(x, new - x)
        unchanged = (new - x).abs() <= _SNAP * (1.0 + x.abs())
        return torch.where(unchanged, x, new)

    # -- what the exact solvers need -------------------------------------------------------
    def sample_box(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-sample ``(lower, upper, free)`` for one flat row: directions become bounds."""
        assert self.schema is not None
        s = self.schema
        lo = np.where(s.direction > 0, np.maximum(s.lower, x), s.lower)
        hi = np.where(s.direction < 0, np.minimum(s.upper, x), s.upper)
        free = (s.mask > 0) & (hi > lo)
        return np.where(free, lo, x), np.where(free, hi, x), free


def _simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row onto the probability simplex (Duchi et al. 2008)."""
    k = v.shape[1]
    u, _ = v.sort(dim=1, descending=True)
    css = u.cumsum(dim=1) - 1.0
    ks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    cond = u - css / ks > 0
    rho = cond.to(v.dtype).cumsum(dim=1).argmax(dim=1)
    theta = css.gather(1, rho.unsqueeze(1)) / (rho + 1).to(v.dtype).unsqueeze(1)
    return (v - theta).clamp(min=0)


def tabular_space(schema: Any, reference: Any = None) -> TabularSpace:
    """Build the space from a schema spec (name, path or mapping) and optional reference
    rows (an array, or ``"fraud"`` for the synthetic training split's rows)."""
    from mmargin_tabular.schema import load_schema

    sch = load_schema(schema)
    ref = None
    if isinstance(reference, str):
        if reference != "fraud":
            raise ValueError(f"reference: expected 'fraud' or an array, got {reference!r}")
        from mmargin_tabular.data import fraud_split

        ref = fraud_split("train", n=2000, seed=7)[0]
    elif reference is not None:
        ref = np.asarray(reference, dtype=np.float32)
    return TabularSpace(schema=sch, reference=ref)
