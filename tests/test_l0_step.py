"""The L0 step's shortcuts against the allocating forms they replace, bit for bit: the
pixel count over a single channel skips the reduction over it, and the first-order count
of positions (``l0_needed``) builds its temporaries in place and skips the sum over a
single channel. Awkward entries: zeros, NaN, points at both bounds, zero gradients,
negative losses."""

from __future__ import annotations

import pytest
import torch

from mmargin.distances import lp
from mmargin.engine.epsball import l0_needed
from mmargin.spaces import ContinuousSpace


def _bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN payloads and the sign of zero included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    kind = torch.int32 if a.dtype == torch.float32 else torch.int64
    return torch.equal(a.contiguous().view(kind), b.contiguous().view(kind))


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_l0_norm_counts_positions(channels: int) -> None:
    from dataclasses import replace

    g = torch.Generator().manual_seed(channels)
    delta = torch.randn(5, channels, 4, 4, generator=g)
    delta[:, :, :2] = 0.0
    delta[1, 0, 3, 3] = float("nan")
    pixels = replace(lp("l0"), group_axis=1)
    old = delta.abs().amax(dim=1).flatten(1).abs().sign().nan_to_num(nan=1.0).sum(dim=1)
    assert _bits(pixels.norm(delta), old)


def _l0_needed_old(
    space: ContinuousSpace,
    group: int | None,
    x: torch.Tensor,
    delta: torch.Tensor,
    grad: torch.Tensor,
    loss: torch.Tensor,
) -> torch.Tensor:
    """The first-order L0 count as written before (fresh tensors, the sum over the group)."""
    far = space.project(x, delta - grad.sign() * 1e6) - delta
    gain = (grad * far).neg().clamp(min=0)
    if group is not None:
        gain = gain.sum(dim=group)
    ordered = gain.flatten(1).sort(dim=1, descending=True).values.cumsum(dim=1)
    short = (ordered < loss.clamp(min=0).unsqueeze(1)).sum(dim=1)
    return (short + 1).clamp(max=ordered.shape[1]).to(loss.dtype)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("grouped", [False, True])
def test_l0_needed_is_the_allocating_form(channels: int, grouped: bool) -> None:
    from dataclasses import replace

    g = torch.Generator().manual_seed(11 + channels)
    x = torch.rand(8, channels, 6, 6, generator=g)
    x[:, :, 0] = 0.0  # at the lower bound
    x[:, :, 1] = 1.0  # at the upper bound
    delta = (torch.rand(x.shape, generator=g) - 0.5) * 0.1
    delta = (x + delta).clamp(0, 1) - x
    grad = torch.randn(x.shape, generator=g)
    grad[0] = 0.0
    loss = torch.rand(8, generator=g) * 3
    loss[1] = -1.0
    space = ContinuousSpace(lower=0.0, upper=1.0)
    distance = replace(lp("l0"), group_axis=1) if grouped else lp("l0")
    got = l0_needed(space, distance, x, delta, grad, loss)
    assert _bits(got, _l0_needed_old(space, 1 if grouped else None, x, delta, grad, loss))


def test_l0_needed_of_some_rows_is_the_rows_alone() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 1, 5, 5, generator=g)
    delta = torch.zeros_like(x)
    grad = torch.randn(x.shape, generator=g)
    loss = torch.rand(6, generator=g) * 4
    space = ContinuousSpace(lower=0.0, upper=1.0)
    distance = lp("l0")
    whole = l0_needed(space, distance, x, delta, grad, loss)
    every = torch.ones(6, dtype=torch.bool)
    assert _bits(l0_needed(space, distance, x, delta, grad, loss, every), whole)
    some = torch.tensor([True, False, True, True, False, False])
    got = l0_needed(space, distance, x, delta, grad, loss, some)
    assert _bits(got[some], whole[some])
    assert bool((got[~some] == 0).all())
    none = torch.zeros(6, dtype=torch.bool)
    assert bool((l0_needed(space, distance, x, delta, grad, loss, none) == 0).all())
