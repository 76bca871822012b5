"""The conformance kit catches what it claims to: each deliberately broken object fails
the check for the property it breaks (and the correct twin passes it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from mmargin.adapters import CallableAdapter, TorchAdapter
from mmargin.data import Dataset
from mmargin.distances import LpDistance, lp
from mmargin.protocols import Edit, ProblemBase
from mmargin.spaces import ContinuousSpace, box
from mmargin.testing import (
    ConformanceError,
    check_adapter,
    check_discrete_space,
    check_distance,
    check_edit_distance,
    check_loader,
    check_space,
    linear_model,
)
from mmargin.testing import continuous as cc
from mmargin.testing import discrete as dc
from mmargin.testing import models as mc

X = np.random.default_rng(0).uniform(0.0, 1.0, (6, 5)).astype(np.float32)
MASK = np.array([1.0, 0.0, 1.0, 1.0, 0.0])


def _space(**kw: Any) -> ContinuousSpace:
    return box(0.0, 1.0, sample_shape=(5,), **kw)


def test_correct_objects_pass() -> None:
    check_space(_space(), X)
    check_space(_space(mask=MASK), X)
    for name in ("l0", "l1", "l2", "linf"):
        check_distance(lp(name), (2, 3))
        check_distance(lp(name, weights=torch.tensor([0.5, 2.0, 1.0, 3.0])), (4,))
    check_adapter(TorchAdapter(linear_model(5, 3, seed=0)), X)
    check_adapter(CallableAdapter(lambda a: a @ np.ones((5, 3)) * np.arange(3)), X)


# -- spaces -------------------------------------------------------------------------------
@dataclass
class NoProjection(ContinuousSpace):
    def project(self, x: Tensor, delta: Tensor) -> Tensor:
        return delta


@dataclass
class HalfProjection(ContinuousSpace):
    def project(self, x: Tensor, delta: Tensor) -> Tensor:
        return super().project(x, delta * 0.5)


@dataclass
class IgnoresMask(ContinuousSpace):
    def project(self, x: Tensor, delta: Tensor) -> Tensor:
        return torch.clamp(x + delta, 0.0, 1.0) - x


@dataclass
class RejectsAll(ContinuousSpace):
    def check(self, x: np.ndarray) -> list[str | None]:
        problems = super().check(x)
        return ["bad batch"] * len(problems) if any(problems) else problems


@dataclass
class LeakyGradient(ContinuousSpace):
    def free_gradient(self, x: Tensor, delta: Tensor, grad: Tensor) -> Tensor:
        return grad


@dataclass
class LongRandom(ContinuousSpace):
    def random(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return super().random(x, generator) * 2


@dataclass
class DriftingFinalize(ContinuousSpace):
    def finalize(self, x: Tensor, x_adv: Tensor) -> Tensor:
        return x + 0.9 * self.project(x, x_adv - x)


@pytest.mark.parametrize(
    ("space", "check", "message"),
    [
        (NoProjection(lower=0.0, upper=1.0), cc.check_space_project_valid, "leave the box"),
        (HalfProjection(lower=0.0, upper=1.0), cc.check_space_project_idempotent, "idempotent"),
        (IgnoresMask(lower=0.0, upper=1.0, mask=MASK), cc.check_space_project_valid, "mask"),
        (RejectsAll(lower=0.0, upper=1.0), cc.check_space_flags_bad_sample, "other, valid"),
        (LeakyGradient(lower=0.0, upper=1.0), cc.check_space_free_gradient, "leave the box"),
        (LongRandom(lower=0.0, upper=1.0), cc.check_space_random, "unit L2"),
        (DriftingFinalize(lower=0.0, upper=1.0), cc.check_space_finalize, "idempotent"),
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__) if not isinstance(v, str) else v,
)
def test_broken_space_fails(space: Any, check: Callable[..., None], message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        check(space, X)
    check(_space(mask=MASK if isinstance(space, IgnoresMask) else None), X)  # twin passes


# -- distances ----------------------------------------------------------------------------
@dataclass(frozen=True)
class OffNorm(LpDistance):
    def norm(self, delta: Tensor) -> Tensor:
        return super().norm(delta) * 1.01


@dataclass(frozen=True)
class SquaredNorm(LpDistance):
    def norm(self, delta: Tensor) -> Tensor:
        return super().norm(delta) ** 2


@dataclass(frozen=True)
class SmallDual(LpDistance):
    def dual_norm(self, grad: Tensor) -> Tensor:
        return grad.flatten(1).abs().amax(dim=1)  # L∞: too small for L2


@dataclass(frozen=True)
class LooseDual(LpDistance):
    def dual_norm(self, grad: Tensor) -> Tensor:
        return grad.flatten(1).abs().sum(dim=1)  # L1: Hölder holds but is never tight


@dataclass(frozen=True)
class NoBallProjection(LpDistance):
    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        return delta


@pytest.mark.parametrize(
    ("distance", "check", "message"),
    [
        (OffNorm("l2", 2.0), cc.check_distance_norm, "definition gives"),
        (SquaredNorm("l2", 2.0), cc.check_distance_norm, "definition gives"),
        (SmallDual("l2", 2.0), cc.check_distance_dual_norm, "Hölder fails"),
        (LooseDual("l2", 2.0), cc.check_distance_dual_norm, "not tight"),
        (NoBallProjection("linf", float("inf")), cc.check_distance_project, "> ε"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) and not callable(v) else None,
)
def test_broken_distance_fails(distance: Any, check: Callable[..., None], message: str) -> None:
    """Each broken twin of an Lp distance fails when checked against Lp's definition."""
    with pytest.raises(ConformanceError, match=message):
        check(distance, (7,), lambda d: np.linalg.norm(d.reshape(len(d), -1), distance.p, 1))


def test_custom_distance_checked_against_its_reference() -> None:
    """A distance the kit does not know is compared with the definition the case gives;
    homogeneity catches a squared norm even without one."""
    scaled = SquaredNorm("l2", 2.0)
    with pytest.raises(ConformanceError, match="a·δ"):
        cc.check_distance_norm(scaled, (7,), lambda d: np.sum(d.reshape(len(d), -1) ** 2, 1))


# -- adapters -----------------------------------------------------------------------------
class BatchMean(torch.nn.Module):
    """Scores that depend on the rest of the batch (a batch-norm in train mode, say)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([x.sum(1) - x.mean(), -x.sum(1)], dim=1)


class Detached(torch.nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([x.sum(1), -x.sum(1)], dim=1).detach()


class InPlace(torch.nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        out = torch.stack([x.sum(1), -x.sum(1)], dim=1)
        x.data.mul_(0.5)
        return out


@pytest.mark.parametrize(
    ("adapter", "check", "message"),
    [
        (TorchAdapter(BatchMean()), mc.check_adapter_batch_consistent, "scored alone"),
        (TorchAdapter(Detached()), mc.check_adapter_gradients, "no gradient"),
        (TorchAdapter(InPlace()), mc.check_adapter_leaves_input, "in place"),
        (CallableAdapter(lambda a: np.full((len(a), 2), np.nan)), mc.check_adapter_scores, "NaN"),
        (CallableAdapter(lambda a: a.sum(1)[:1]), mc.check_adapter_scores, "shape"),
    ],
    ids=["batch-dependent", "detached", "in-place", "nan", "wrong-rows"],
)
def test_broken_adapter_fails(adapter: Any, check: Callable[..., None], message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        check(adapter, X)


def test_counted_adapter_check_sees_uncounted_rows() -> None:
    """The pass-count check fails for an adapter that the counter cannot see (scores that
    come from a cache instead of the model are still counted: a wrong count needs a wrapper
    that lies about its batch)."""

    class Lying:
        differentiable = False
        device = torch.device("cpu")

        def __call__(self, x: Tensor) -> Tensor:
            return torch.stack([x.sum(1), -x.sum(1)], dim=1)

    mc.check_adapter_counted(Lying(), X)  # an honest adapter is counted B per batch
    from mmargin.engine import counting

    original = counting._rows
    counting._rows = lambda x: 1  # a counter that sees one row per call
    try:
        with pytest.raises(ConformanceError, match="counted as"):
            mc.check_adapter_counted(Lying(), X)
    finally:
        counting._rows = original


# -- loaders ------------------------------------------------------------------------------
def _data(ids: Sequence[str], y: Any = None, x: Any = None) -> Dataset:
    x = np.zeros((len(ids), 5), np.float32) if x is None else x
    return Dataset(x, np.zeros(len(ids), np.int64) if y is None else y, list(ids))


def test_broken_loaders_fail() -> None:
    check_loader(lambda: _data(["a", "b"]), space=_space())
    with pytest.raises(ConformanceError, match="unique"):
        dc.check_loader_dataset(lambda: _data(["a", "a"]), {})
    with pytest.raises(ConformanceError, match="labels"):
        dc.check_loader_dataset(lambda: _data(["a", "b"], y=np.array([0.0, 1.0])), {})
    with pytest.raises(ConformanceError, match="fail space"):
        dc.check_loader_fits_space(lambda: _data(["a"], x=np.full((1, 5), 3.0, np.float32)),
                                   {}, _space())  # fmt: skip
    rng = np.random.default_rng()
    with pytest.raises(ConformanceError, match="seed it"):
        dc.check_loader_reproducible(
            lambda: _data(["a"], x=rng.uniform(size=(1, 5)).astype(np.float32)), {}
        )
    with pytest.raises(ConformanceError, match="Dataset"):
        dc.check_loader_dataset(lambda: (np.zeros((1, 5)), np.zeros(1)), {})


# -- discrete spaces and edit distances ---------------------------------------------------
class Problem(ProblemBase):
    """Upper-case letters of a word: one edit per position."""

    def __init__(self, word: str, cost: float, sloppy: bool) -> None:
        self.word, self.cost, self.sloppy = word, cost, sloppy

    def positions(self) -> list[int]:
        return list(range(len(self.word)))

    def candidates(self, position: int) -> list[Edit]:
        return [Edit(position, self.word[position].upper(), self.cost)]

    def apply(self, edits: Sequence[Edit]) -> str:
        chars = list(self.word.strip() if self.sloppy else self.word)
        for e in edits:
            chars[e.position] = str(e.value)
        return "".join(chars)


@dataclass
class Letters:
    cost: float = 1.0
    sloppy: bool = False
    name: str = "letters"
    modality: str = "text"
    discrete: bool = True
    search_config: Any = None

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        return [None if isinstance(s, str) and s else "empty" for s in inputs]

    def problem(self, model: Any, x: str) -> Problem:
        return Problem(x, self.cost, self.sloppy)


def _text_model(texts: Sequence[str]) -> Tensor:
    upper = torch.tensor([float(sum(c.isupper() for c in t)) for t in texts])
    return torch.stack([-upper, upper], dim=1)


def test_broken_discrete_spaces_fail() -> None:
    check_discrete_space(Letters(), _text_model, ["abc", "de"])
    with pytest.raises(ConformanceError, match="cost"):
        dc.check_discrete_problem(Letters(cost=0.0), _text_model, ["abc"])
    with pytest.raises(ConformanceError, match=r"apply\(\[\]\)"):
        dc.check_discrete_problem(Letters(sloppy=True), _text_model, ["abc "])


@dataclass(frozen=True)
class Hamming:
    name: str = "hamming"
    units: str = "letters"
    offset: float = 0.0

    def measure(self, x: str, x_adv: str, edits: Sequence[Edit]) -> float:
        return sum(a != b for a, b in zip(x, x_adv, strict=False)) + self.offset


def test_broken_edit_distance_fails() -> None:
    pairs = [("abc", "aBc", [Edit(1, "B", 1.0)])]
    check_edit_distance(Hamming(), pairs)
    with pytest.raises(ConformanceError, match="not 0"):
        check_edit_distance(Hamming(offset=1.0), pairs)


# -- the pytest helper --------------------------------------------------------------------
def test_parametrize_yields_one_test_per_object_and_check() -> None:
    from mmargin.testing import all_checks, distance_case, space_case
    from mmargin.testing.continuous import DISTANCE_CHECKS, SPACE_CHECKS

    cases = [space_case("box", _space, lambda: X), distance_case("l2", lambda: lp("l2"))]
    pairs = all_checks(cases)
    assert len(pairs) == len(SPACE_CHECKS) + len(DISTANCE_CHECKS)
    assert {f"{c!r}-{k.name}" for c, k in pairs} >= {"space:box-check_space_random"}
    built = []
    counting = space_case("box", lambda: built.append(1) or _space(), lambda: X)
    for case, check in all_checks([counting]):
        check(case)
    assert built == [1]  # built once, shared by every check of the case
