"""Distances: norms, dual norms and ball projections checked against their definitions.

Foolbox 3.3.4's L2 FMN projection is a no-op (``norms / norms``); these tests check that
every projection lands in the ball, is idempotent, leaves inside points alone and is the
nearest point (against brute force / the KKT characterisation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmargin.distances import lp

NAMES = ["l0", "l1", "l2", "linf"]


def _batch(seed: int = 0, shape: tuple[int, ...] = (6, 3, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_projection_lands_in_ball_and_is_idempotent(name: str) -> None:
    d = lp(name)
    delta = _batch() * 3
    eps = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1, 5.0], dtype=torch.float64)
    if name == "l0":
        eps = eps.floor().clamp(min=1)
    projected = d.project(delta, eps)
    assert torch.all(d.norm(projected) <= eps + 1e-9)
    assert torch.allclose(d.project(projected, eps), projected, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_projection_keeps_points_inside(name: str) -> None:
    d = lp(name)
    delta = _batch(1) * 0.01
    big = d.norm(delta) * 2 + 1
    assert torch.allclose(d.project(delta, big), delta)


def _reference_projection(v: np.ndarray, eps: float, p: float) -> np.ndarray:
    """Independent nearest points: scaling (L2), clipping (L∞), soft threshold (L1)."""
    if p == 2:
        return v * min(1.0, eps / np.linalg.norm(v))
    if p == math.inf:
        return np.clip(v, -eps, eps)
    if np.abs(v).sum() <= eps:
        return v
    lo, hi = 0.0, float(np.abs(v).max())
    for _ in range(200):  # bisection on the threshold θ with ||soft(v, θ)||_1 = eps
        theta = (lo + hi) / 2
        lo, hi = (theta, hi) if np.maximum(np.abs(v) - theta, 0).sum() > eps else (lo, theta)
    return np.sign(v) * np.maximum(np.abs(v) - hi, 0)


@pytest.mark.parametrize("name", ["l1", "l2", "linf"])
def test_projection_is_the_nearest_point(name: str) -> None:
    """Equal to the reference projection, and no random point of the ball is nearer."""
    d = lp(name)
    rng = np.random.default_rng(3)
    for _ in range(10):
        v = rng.normal(size=6) * 2
        eps = 0.7
        got = d.project(torch.tensor(v)[None], torch.tensor([eps], dtype=torch.float64))[0].numpy()
        np.testing.assert_allclose(got, _reference_projection(v, eps, d.p), atol=1e-9)
        others = rng.normal(size=(2000, 6))
        others = others / np.linalg.norm(others, ord=d.p, axis=1, keepdims=True) * eps
        others *= rng.uniform(0, 1, size=(2000, 1))
        assert np.sum((got - v) ** 2) <= np.min(np.sum((others - v) ** 2, axis=1)) + 1e-12


def test_l2_projection_scales_onto_the_sphere() -> None:
    """The defect to avoid: an L2 projection that leaves a long vector unchanged."""
    d = lp("l2")
    delta = torch.tensor([[3.0, 4.0]])
    out = d.project(delta, torch.tensor([1.0]))
    assert torch.allclose(out, torch.tensor([[0.6, 0.8]]))


def test_l0_projection_keeps_largest_coordinates() -> None:
    d = lp("l0")
    delta = torch.tensor([[0.1, -5.0, 2.0, 0.0, 3.0]])
    out = d.project(delta, torch.tensor([2.0]))
    assert out.tolist() == [[0.0, -5.0, 0.0, 0.0, 3.0]]


@pytest.mark.parametrize("name", ["l1", "l2", "linf"])
def test_dual_norm_satisfies_holder_with_equality(name: str) -> None:
    """<g, d> <= ||g||_* ||d|| for all d, with equality for some d of unit norm."""
    d = lp(name)
    g = _batch(5)
    dual = d.dual_norm(g)
    for seed in range(20):
        delta = _batch(100 + seed)
        inner = (g * delta).flatten(1).sum(1)
        assert torch.all(inner <= dual * d.norm(delta) + 1e-9)
    flat = g.flatten(1)
    if d.p == 2:
        best = flat / flat.norm(dim=1, keepdim=True)
    elif d.p == math.inf:
        best = flat.sign()
    else:
        best = torch.zeros_like(flat)
        idx = flat.abs().argmax(dim=1)
        best[torch.arange(len(idx)), idx] = flat.gather(1, idx[:, None]).sign().squeeze(1)
    assert torch.allclose((flat * best).sum(1), dual)


def test_weighted_norm_is_cost_times_change() -> None:
    w = torch.tensor([1.0, 10.0, 0.5])
    d = lp("l1", weights=w)
    delta = torch.tensor([[1.0, 1.0, 2.0]])
    assert float(d.norm(delta)[0]) == pytest.approx(12.0)
    assert float(d.dual_norm(torch.tensor([[1.0, 10.0, 1.0]]))[0]) == pytest.approx(2.0)
    projected = d.project(delta * 10, torch.tensor([3.0]))
    assert float(d.norm(projected)[0]) == pytest.approx(3.0)


def test_bad_distance_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown Lp distance"):
        lp("l3")
    with pytest.raises(ValueError, match="weights must all be > 0"):
        lp("l2", weights=torch.tensor([1.0, 0.0]))
