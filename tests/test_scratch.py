"""Scratch buffers reused across steps (:mod:`mmargin.scratch`) and the distance code that
writes into them: the same memory is handed out again, nothing a call leaves in a buffer
reaches the next call's result, results never alias a buffer, and every number is the
one the allocating form computes (bit for bit, against fresh-tensor oracles)."""

from __future__ import annotations

import threading

import pytest
import torch
from test_projection_l1 import _michelot_plain, _rows  # tests/ is on sys.path (conftest.py)

from mmargin import scratch as scratch_mod
from mmargin.distances import _project_l1, lp
from mmargin.engine.gradient import _l0_needed
from mmargin.scratch import release, scratch
from mmargin.spaces import ContinuousSpace


def _bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN payloads and the sign of zero included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    kind = torch.int32 if a.dtype == torch.float32 else torch.int64
    return torch.equal(a.contiguous().view(kind), b.contiguous().view(kind))


def _poison() -> None:
    """Fill every scratch buffer of this thread with NaN (what a previous call might leave)."""
    for buffer, _ in scratch_mod._buffers().values():
        buffer.fill_(float("nan"))


def test_scratch_reuses_memory_and_grows() -> None:
    release()
    like = torch.empty(4, 5)
    a = scratch("t", like)
    assert a.shape == (4, 5) and a.is_contiguous()
    assert scratch("t", like).data_ptr() == a.data_ptr()  # same batch: same memory
    small = scratch("t", torch.empty(2, 5))
    assert small.shape == (2, 5) and small.data_ptr() == a.data_ptr()  # fits: reused
    big = scratch("t", torch.empty(8, 5))
    assert big.shape == (8, 5) and big.numel() == 40  # grew
    assert scratch("u", like).data_ptr() != scratch("t", like).data_ptr()  # per name
    assert scratch("t", torch.empty(4, 5, dtype=torch.float64)).dtype == torch.float64
    release()
    assert scratch_mod._buffers() == {}


def test_scratch_keeps_no_huge_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    release()
    monkeypatch.setattr(scratch_mod, "LIMIT", 10)
    like = torch.empty(3, 4)
    assert scratch("t", like).data_ptr() != scratch("t", like).data_ptr()
    assert "t" not in scratch_mod._buffers()


def test_scratch_is_per_thread() -> None:
    release()
    mine = scratch("t", torch.empty(3, 3)).data_ptr()
    seen: list[int] = []

    def other() -> None:
        seen.append(scratch("t", torch.empty(3, 3)).data_ptr())

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert seen and seen[0] != mine


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l1_projection_of_varying_batches_with_reused_buffers(dtype: torch.dtype) -> None:
    """Shrinking, growing and repeated batches, with the buffers poisoned between calls,
    give the fresh-tensor projection bit for bit; earlier results are not overwritten."""
    flat, eps = _rows(3, dtype, width=97)
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    for rows in (24, 7, 24, 1, 13, 24, 24):
        f, e = flat[:rows] * (1 + rows / 10), eps[:rows]
        _poison()
        got = _project_l1(f, e)
        assert _bits(got, _michelot_plain(f, e))
        assert all(got.data_ptr() != b.data_ptr() for b, _ in scratch_mod._buffers().values())
        kept.append((got, got.clone()))
    assert all(_bits(a, b) for a, b in kept)


@pytest.mark.parametrize("name", ["l1", "linf", "l0", "l0_channels"])
def test_norms_through_scratch_are_the_allocating_forms(name: str) -> None:
    g = torch.Generator().manual_seed(7)
    delta = torch.randn(6, 3, 5, 5, generator=g)
    delta[0] = 0.0
    delta[1, :, :2] = 0.0
    delta[2, 0, 0, 0] = float("nan")
    flat = delta.flatten(1)
    expected = {
        "l1": flat.abs().sum(dim=1),
        "linf": flat.abs().amax(dim=1),
        "l0": flat.abs().sign().nan_to_num(nan=1.0).sum(dim=1),
        "l0_channels": flat.abs().sign().nan_to_num(nan=1.0).sum(dim=1),
    }[name]
    distance = lp(name)
    for rows in (6, 2, 6):
        _poison()
        assert _bits(distance.norm(delta[:rows]), expected[:rows])
    grad = delta.nan_to_num(nan=0.5)
    _poison()
    assert _bits(lp("l1").dual_norm(grad), grad.flatten(1).abs().amax(dim=1))


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_l0_norm_counts_positions(channels: int) -> None:
    from dataclasses import replace

    g = torch.Generator().manual_seed(channels)
    delta = torch.randn(5, channels, 4, 4, generator=g)
    delta[:, :, :2] = 0.0
    delta[1, 0, 3, 3] = float("nan")
    pixels = replace(lp("l0"), group_axis=1)
    old = delta.abs().amax(dim=1).flatten(1).abs().sign().nan_to_num(nan=1.0).sum(dim=1)
    _poison()
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
    got = _l0_needed(space, distance, x, delta, grad, loss)
    assert _bits(got, _l0_needed_old(space, 1 if grouped else None, x, delta, grad, loss))
