"""The L0 rankings (:mod:`mmargin.ranking`) against torch's own sort / topk, exactly.

The numpy-backed paths are a speed change only: every sorted row must be the same numbers
as ``torch.sort``'s and every ``floor(ε)``-largest mask the same mask as the ``topk``
ranking the engine used before (ties at the cut included, where ``topk``'s choice is
kept), and the mask must hold the top-k property itself (brute-force check).
"""

from __future__ import annotations

import math

import pytest
import torch

from mmargin.distances import lp
from mmargin.engine.epsball import l0_needed
from mmargin.ranking import descending_values, top_mask, top_mask_torch, top_stable
from mmargin.spaces import box


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sizes(seed: int, rows: int = 40, width: int = 50, dtype: torch.dtype = torch.float32):
    """Non-negative rows mixing continuous values, heavy ties (a few levels) and zeros."""
    g = _gen(seed)
    dense = torch.rand(rows, width, generator=g, dtype=dtype)
    levels = torch.randint(0, 4, (rows, width), generator=g).to(dtype) / 4  # ties, zeros
    sparse = dense * (torch.rand(rows, width, generator=g, dtype=dtype) < 0.2)
    pick = torch.randint(0, 3, (rows, 1), generator=g)
    return torch.where(pick == 0, dense, torch.where(pick == 1, levels, sparse))


def _eps(seed: int, rows: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = _gen(seed + 100)
    eps = torch.rand(rows, generator=g, dtype=dtype) * (width + 4) - 1  # below 0 .. past width
    eps[0], eps[1], eps[2] = 0.0, float(width), 1.0
    return eps


def _old_mask(size: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    k = eps.floor().clamp(min=0, max=size.shape[1]).long()
    most = int(k.max())
    return torch.zeros_like(size) if most == 0 else top_mask_torch(size, k, most)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(6))
def test_descending_values_are_torch_sort_values(seed: int, dtype: torch.dtype) -> None:
    values = _sizes(seed, dtype=dtype) - 0.3  # negatives as well
    values[3, 5] = -0.0
    got = descending_values(values)
    assert got.dtype == values.dtype
    assert torch.equal(got, values.sort(dim=1, descending=True).values)


def test_descending_values_with_nan_and_one_column() -> None:
    values = _sizes(7)
    values[2, 4] = math.nan  # torch ranks NaN first, numpy last: torch's order is kept
    want = values.sort(dim=1, descending=True).values
    assert torch.equal(descending_values(values).nan_to_num(-1.0), want.nan_to_num(-1.0))
    column = _sizes(8, width=1)
    assert torch.equal(descending_values(column), column)


@pytest.mark.parametrize("width", [50, 7, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(8))
def test_top_mask_is_the_topk_mask(seed: int, dtype: torch.dtype, width: int) -> None:
    size = _sizes(seed, width=width, dtype=dtype)
    eps = _eps(seed, size.shape[0], width, dtype)
    if seed % 2:  # small budgets: the topk path (most <= width / 2)
        eps = eps.clamp(max=width / 2 - 1)
    mask = top_mask(size, eps)
    assert torch.equal(mask, _old_mask(size, eps))
    # brute force: exactly min(k, width) entries kept, none smaller than one dropped
    k = eps.floor().clamp(min=0, max=width)
    assert torch.equal(mask.sum(dim=1), k.to(dtype))
    kept = torch.where(mask > 0, size, torch.full_like(size, math.inf)).amin(dim=1)
    dropped = torch.where(mask > 0, torch.full_like(size, -math.inf), size).amax(dim=1)
    assert bool((kept >= dropped).all())


def test_top_mask_rows_with_nan_inf_and_all_zero() -> None:
    size = _sizes(9)
    size[0, 3] = math.nan
    size[1, 7] = math.inf
    size[2] = 0.0
    size[3] = 1.0  # one big tie
    eps = torch.full((size.shape[0],), 5.5)
    assert torch.equal(top_mask(size, eps), _old_mask(size, eps))
    assert torch.equal(top_mask(size, torch.zeros(size.shape[0])), torch.zeros_like(size))


@pytest.mark.parametrize("name", ["l0", "l0_channels"])
def test_l0_projection_of_an_image_batch_is_unchanged(name: str) -> None:
    """The image space's L0 (pixels: channels grouped) and per-channel L0 projections
    against the projection written with the topk mask."""
    from mmargin_image.plugin import image_space

    distance = image_space().distance_for(lp(name))
    g = _gen(3)
    delta = torch.randn(30, 3, 8, 8, generator=g)
    delta[:10] = delta[:10].round()  # ties
    delta[10:15, :, :4] = 0.0
    eps = torch.rand(30, generator=g) * 80
    got = distance.project(delta, eps)
    if name == "l0":
        size = torch.linalg.vector_norm(delta, dim=1, keepdim=True)
        want = delta * _old_mask(size.flatten(1), eps).view_as(size)
    else:
        want = delta * _old_mask(delta.flatten(1).abs(), eps).view_as(delta)
    assert torch.equal(got, want)


@pytest.mark.parametrize("seed", range(4))
def test_l0_needed_matches_the_sorted_count(seed: int) -> None:
    """The first-order L0 count against its definition: the fewest largest gains whose
    sum reaches the loss (brute force over k), all rows and a subset of rows."""
    g = _gen(seed)
    x = torch.rand(12, 1, 5, 5, generator=g)
    delta = torch.zeros_like(x)
    grad = torch.randn(x.shape, generator=g)
    grad[:3] = grad[:3].round()  # ties among gains
    loss = torch.rand(12, generator=g) * 4 - 0.5
    space, distance = box(0.0, 1.0), lp("l0_channels")
    gain = (grad * (space.project(x, delta - grad.sign() * 1e6) - delta)).neg().clamp(min=0)
    flat = gain.flatten(1)
    want = []
    for row, need in zip(flat, loss.clamp(min=0), strict=True):
        sums = [float(row.sort(descending=True).values[:k].sum()) for k in range(1, 26)]
        want.append(next((k + 1 for k, s in enumerate(sums) if s >= float(need) - 1e-6), 25))
    got = l0_needed(space, distance, x, delta, grad, loss)
    assert got.tolist() == pytest.approx(want, abs=1)  # rounding of the running sum
    exact = torch.sort(flat, dim=1, descending=True).values.cumsum(dim=1)
    short = (exact < loss.clamp(min=0).unsqueeze(1)).sum(dim=1)
    assert torch.equal(got, (short + 1).clamp(max=25).to(loss.dtype))
    rows = torch.arange(12) % 3 == 0
    part = l0_needed(space, distance, x, delta, grad, loss, rows)
    assert torch.equal(part, torch.where(rows, got, torch.zeros_like(got)))


@pytest.mark.parametrize("most", [1, 3, 4, 5, 12, 13])
def test_top_mask_on_both_sides_of_the_partial_sort_range(most: int) -> None:
    """``k * 64 <= width`` stays with ``topk``; past it numpy ranks: the same masks."""
    size = _sizes(11, rows=30, width=256)
    eps = torch.rand(30, generator=_gen(12)) * (most + 1)
    eps[0] = float(most)
    assert torch.equal(top_mask(size, eps), _old_mask(size, eps))


def _stable_ranks_below(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """What the support-shrinking stage computed before :func:`top_stable`: the ranks of a
    stable descending argsort, below ``k``."""
    order = values.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(values.shape[1]).expand_as(order))
    return rank < k.clamp(min=0, max=values.shape[1]).unsqueeze(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("width", [1, 2, 50, 784])
def test_top_stable_is_the_stable_argsort_mask(seed: int, dtype: torch.dtype, width: int) -> None:
    """Continuous rows, heavy ties (the cut inside a run of equal values), zeros of both
    signs, negatives and infinities; k from 0 to past the width: the same mask."""
    values = _sizes(seed, width=width, dtype=dtype) - 0.25
    g = _gen(seed + 200)
    values[5] = torch.where(values[5] > 0, 0.0, -0.0).to(dtype)  # zeros of both signs
    values[6, : width // 2] = math.inf
    values[7, width // 3 :] = -math.inf
    k = torch.randint(0, width + 3, (values.shape[0],), generator=g)
    k[0], k[1] = 0, width
    got = top_stable(values, k)
    assert got.dtype == torch.bool
    assert torch.equal(got, _stable_ranks_below(values, k))


def test_top_stable_with_nan_falls_back_to_torch() -> None:
    values = _sizes(3) - 0.5
    values[2, 4] = math.nan
    k = torch.full((values.shape[0],), 7)
    assert torch.equal(top_stable(values, k), _stable_ranks_below(values, k))
