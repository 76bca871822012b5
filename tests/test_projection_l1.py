"""The L1 ball projection against Michelot's iteration and against a float64 copy of the
sort-based projection of Duchi et al. (2008) (both to rounding), on awkward rows: inside the
ball, all zero, ties, a zero radius, one column, float64."""

from __future__ import annotations

import pytest
import torch

from mmargin.distances import _project_l1, lp


def _michelot_plain(flat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Michelot's θ iteration (the projection before the sort-based level)."""
    size = flat.abs()
    total = size.sum(dim=1)
    if bool((total <= eps).all()):
        return flat
    theta = ((total - eps) / flat.shape[1]).clamp(min=0)
    count = torch.full_like(total, float(flat.shape[1]))
    for _ in range(flat.shape[1] + 1):
        excess = (size - theta.unsqueeze(1)).clamp_(min=0)
        over = excess.sum(dim=1) - eps
        kept = excess.sign_().sum(dim=1)
        empty = kept == 0
        kept = torch.where(empty, count, kept)
        if torch.equal(kept, count):
            break
        count = kept
        theta = torch.where(empty, theta, (theta + over / kept).clamp_(min=0))
    theta = theta.unsqueeze(1)
    return flat - flat.clamp(min=-theta, max=theta)


def _duchi(flat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Sort-based projection onto the L1 ball (float64 reference)."""
    v = flat.double()
    size = v.abs()
    ordered = size.sort(dim=1, descending=True).values
    cums = ordered.cumsum(dim=1)
    ranks = torch.arange(1, v.shape[1] + 1, dtype=v.dtype)
    e = eps.double().unsqueeze(1)
    ok = ordered * ranks > cums - e
    rho = (ok * ranks).amax(dim=1, keepdim=True).long().clamp(min=1)
    theta = ((cums.gather(1, rho - 1) - e) / rho).clamp(min=0)
    inside = size.sum(dim=1, keepdim=True) <= e
    theta = torch.where(inside, torch.zeros_like(theta), theta)
    return v - v.clamp(min=-theta, max=theta)


def _rows(seed: int, dtype: torch.dtype, width: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    flat = torch.randn(24, width, generator=g, dtype=dtype)
    flat[0] = 0.0  # all zero
    flat[1] = flat[1].sign() * 0.5  # every magnitude tied
    flat[2] = (flat[2] * 2).round() / 2  # ties among a few levels
    flat[3] *= 1e-3  # inside the ball
    flat[4, : width // 2] = 0.0
    eps = torch.rand(24, generator=g, dtype=dtype) * flat.abs().sum(dim=1)
    eps[5] = 0.0  # a zero radius
    eps[3] = 10.0
    return flat, eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(8))
def test_l1_projection_is_michelots_to_rounding(seed: int, dtype: torch.dtype) -> None:
    """The sort-based level against Michelot's iteration (an independent method)."""
    flat, eps = _rows(seed, dtype)
    tol = 32 * torch.finfo(dtype).eps * float(flat.abs().sum(dim=1).max())
    assert torch.allclose(_project_l1(flat, eps), _michelot_plain(flat, eps), rtol=0, atol=tol)
    column, radius = flat[:, :1], eps.clamp(max=0.3)
    assert torch.allclose(_project_l1(column, radius), _michelot_plain(column, radius), atol=tol)


@pytest.mark.parametrize("seed", range(8))
def test_l1_projection_matches_the_sort_based_one(seed: int) -> None:
    flat, eps = _rows(seed, torch.float64)
    got = lp("l1").project(flat, eps)
    assert torch.allclose(got, _duchi(flat, eps), atol=1e-10)
    assert torch.all(got.abs().sum(dim=1) <= eps + 1e-9)


def test_l1_projection_leaves_inside_batches_alone() -> None:
    flat, _ = _rows(0, torch.float32)
    eps = flat.abs().sum(dim=1) + 1
    assert _project_l1(flat, eps) is flat
