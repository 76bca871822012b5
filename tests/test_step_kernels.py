"""The gradient step's kernels against slow references: the sort-free L1 projection
against the sort-based one (Duchi et al. 2008) and the KKT conditions, the partial-selection
L0 projection against a full ranking, the float-only box gradient against the boolean mask
it replaced, and the cheap norms against ``linalg.vector_norm``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmargin.distances import lp, pixel_l0
from mmargin.spaces import ContinuousSpace


def _duchi(flat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The sort-based Euclidean projection onto the L1 ball, in float64."""
    v = flat.double()
    out = v.clone()
    for i in range(v.shape[0]):
        a = v[i].abs()
        if a.sum() <= eps[i]:
            continue
        if float(eps[i]) == 0.0:  # the zero ball: everything goes
            out[i] = 0.0
            continue
        u = a.sort(descending=True).values
        css = u.cumsum(0)
        ks = torch.arange(1, u.numel() + 1, dtype=torch.float64)
        rho = int((u - (css - float(eps[i])) / ks > 0).nonzero().max())
        theta = (css[rho] - float(eps[i])) / (rho + 1)
        out[i] = v[i].sign() * (a - theta).clamp(min=0)
    return out


@pytest.mark.parametrize("sparse", [False, True])
def test_l1_projection_matches_sorting(sparse: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    for width in (1, 2, 7, 300, 784):
        flat = torch.randn(9, width, generator=gen) * 3
        if sparse:
            flat = flat * (torch.rand(9, width, generator=gen) > 0.7)
        eps = torch.rand(9, generator=gen) * flat.abs().sum(1) * 1.3
        eps[0] = 0.0  # the zero ball
        got = lp("l1").project(flat, eps)
        want = _duchi(flat, eps)
        assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5)
        assert bool((got.abs().sum(1) <= eps * (1 + 1e-5) + 1e-6).all())
        inside = flat.abs().sum(1) <= eps
        assert torch.equal(got[inside], flat[inside])  # rows inside the ball are untouched


def _rank_l0(flat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Keep the floor(eps) largest magnitudes by a full stable ranking."""
    out = torch.zeros_like(flat)
    for i in range(flat.shape[0]):
        k = int(min(max(math.floor(float(eps[i])), 0), flat.shape[1]))
        order = flat[i].abs().sort(descending=True, stable=True).indices[:k]
        out[i, order] = flat[i, order]
    return out


def test_l0_projection_keeps_the_largest() -> None:
    gen = torch.Generator().manual_seed(2)
    for width, top in ((10, 3.0), (784, 40.0), (784, 700.0), (50, 0.0)):
        flat = torch.randn(6, width, generator=gen)  # distinct magnitudes: one answer
        eps = torch.rand(6, generator=gen) * top
        assert torch.equal(lp("l0").project(flat, eps), _rank_l0(flat, eps))


def test_grouped_l0_keeps_whole_pixels() -> None:
    gen = torch.Generator().manual_seed(3)
    delta = torch.randn(4, 3, 5, 5, generator=gen)
    eps = torch.tensor([0.0, 1.0, 7.5, 25.0])
    out = pixel_l0(lp("l0")).project(delta, eps)
    size = delta.norm(dim=1).flatten(1)
    for i in range(4):
        k = int(eps[i])
        kept = set(size[i].sort(descending=True, stable=True).indices[:k].tolist())
        moved = out[i].flatten(1).abs().amax(0) > 0
        assert set(moved.nonzero().squeeze(1).tolist()) == kept
        assert torch.equal(out[i].flatten(1)[:, moved], delta[i].flatten(1)[:, moved])


def test_norms_match_vector_norm() -> None:
    gen = torch.Generator().manual_seed(4)
    delta = torch.randn(5, 1, 6, 6, generator=gen) * (torch.rand(5, 1, 6, 6, generator=gen) > 0.5)
    flat = delta.flatten(1)
    assert torch.equal(lp("linf").norm(delta), torch.linalg.vector_norm(flat, math.inf, dim=1))
    assert torch.equal(lp("l0").norm(delta), (flat != 0).sum(1).to(flat.dtype))
    assert torch.equal(lp("l2").norm(delta), torch.linalg.vector_norm(flat, dim=1))
    assert torch.allclose(lp("l1").norm(delta), torch.linalg.vector_norm(flat, 1, dim=1))
    assert torch.equal(lp("linf").dual_norm(delta), torch.linalg.vector_norm(flat, 1, dim=1))


def _blocked_reference(
    space: ContinuousSpace, x: torch.Tensor, delta: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    lo, hi, mask = space._tensors(x)
    point = x + delta
    blocked = ((point >= hi) & (grad < 0)) | ((point <= lo) & (grad > 0))
    grad = grad.masked_fill(blocked, 0.0)
    return grad if mask is None else grad * mask


def test_box_gradient_and_projection_match_masks() -> None:
    gen = torch.Generator().manual_seed(5)
    spaces = [
        ContinuousSpace(lower=0.0, upper=1.0),
        ContinuousSpace(
            lower=np.array([-np.inf, 0.0, 0.5, -1.0]),
            upper=np.array([np.inf, 1.0, 0.5, 2.0]),
            mask=np.array([1.0, 1.0, 0.0, 1.0]),
        ),
    ]
    for space in spaces:
        for _ in range(50):
            x = torch.rand(20, 4, generator=gen)
            x[x < 0.3], x[x > 0.8] = 0.0, 1.0  # points on the bounds
            x[:, 2] = 0.5
            raw = torch.randn(20, 4, generator=gen) * 0.6
            lo, hi, mask = space._tensors(x)
            held = raw if mask is None else raw * mask
            want = torch.maximum(torch.minimum(x + held, hi), lo) - x
            delta = space.project(x, raw)
            assert torch.equal(delta, want)
            grad = torch.randn(20, 4, generator=gen)
            grad[torch.rand(20, 4, generator=gen) < 0.1] = 0.0
            assert torch.equal(
                space.free_gradient(x, delta, grad), _blocked_reference(space, x, delta, grad)
            )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [784, 37, 64, 1])
def test_soft_threshold_matches_the_clamp_bit_for_bit(dtype: torch.dtype, width: int) -> None:
    """The L1 projection's soft threshold as a maximum and a minimum gives ``v − clamp(v,
    −θ, θ)`` bit for bit: signed zeros, NaN and infinities in the rows, θ of 0, NaN and
    infinity, widths that leave a vector tail. The one exception is a row whose θ is
    exactly 0, where the sign of a zero may differ (torch's clamp itself gives −0.0 or +0.0
    there depending on the batch's layout): the values are still equal."""
    from mmargin.distances import _soft_threshold

    gen = torch.Generator().manual_seed(13)
    specials = torch.tensor(
        [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-40, -1e-40, 0.25, -0.25],
        dtype=dtype,
    )
    for _ in range(30):
        flat = torch.randn(12, width, generator=gen, dtype=dtype)
        pick = torch.randint(0, len(specials), (12, width), generator=gen)
        some = torch.rand(12, width, generator=gen) < 0.3
        flat[some] = specials[pick[some]]
        theta = torch.rand(12, 1, generator=gen, dtype=dtype) * 0.5
        theta[0], theta[1], theta[2], theta[3] = 0.0, float("nan"), float("inf"), 0.25
        want = flat - flat.clamp(min=-theta, max=theta)
        got = _soft_threshold(flat, theta)
        bits = torch.int32 if dtype == torch.float32 else torch.int64
        nan = want.isnan()
        assert torch.equal(got.isnan(), nan)  # NaN either way (its sign bit is no result)
        assert torch.equal(got[~nan], want[~nan])  # the values (+0.0 == -0.0)
        exact = ~nan & (theta != 0)  # bit for bit (signed zeros) where θ is not 0
        assert torch.equal(got[exact].view(bits), want[exact].view(bits))
