"""The L1 ball's soft-threshold level and projection against exact oracles: θ from rational
arithmetic (``fractions.Fraction`` on the float inputs: no rounding at all), and the
projection's optimality (KKT) conditions, on awkward rows: ties, zero radius, zeros,
active sets wider than the first look (``TOP``), float32 and float64, mixed batches."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from mmargin.distances import _project_l1
from mmargin.l1ball import TOP, _threshold_torch, threshold


def _exact_theta(row: list[float], eps: float) -> Fraction:
    """θ ≥ 0 with Σ max(|v| − θ, 0) = ε, exactly (0 when the row is inside the ball)."""
    mags = sorted((Fraction(abs(v)) for v in row), reverse=True)
    radius = Fraction(eps)
    if sum(mags) <= radius:
        return Fraction(0)
    running = Fraction(0)
    for j, s in enumerate(mags, start=1):
        running += s
        theta = (running - radius) / j
        after = mags[j] if j < len(mags) else Fraction(0)
        if s >= theta >= after:
            return max(theta, Fraction(0))
    raise AssertionError("no breakpoint interval holds θ")  # none for ε < 0 only


def _rows(seed: int, dtype: torch.dtype, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    flat = torch.randn(12, width, generator=g, dtype=dtype)
    flat[1] = flat[1].sign() * 0.5  # every magnitude tied
    flat[2] = (flat[2] * 2).round() / 2  # ties among a few levels
    flat[3, : width // 2] = 0.0  # half zeros (and -0 below)
    flat[3, : width // 4] = -0.0
    flat[4] = 1.0 + 0.01 * flat[4].abs()  # nearly flat: a wide active set
    flat[5] *= 1e-30  # tiny magnitudes
    eps = torch.rand(12, generator=g, dtype=dtype) * flat.abs().sum(dim=1)
    eps[4] = 0.9 * float(flat[4].abs().sum())  # most coordinates stay active
    eps[6] = 0.0  # a zero radius: the projection is 0
    eps[7] = float(flat[7].abs().max()) * 0.5  # the top coordinate alone
    return flat, eps


def _close(got: float, want: Fraction, dtype: torch.dtype, scale: float) -> bool:
    """``got`` within a few roundings of ``want`` (relative to the row's magnitudes)."""
    unit = float(torch.finfo(dtype).eps)
    return abs(Fraction(got) - want) <= Fraction(8 * unit * max(scale, 1e-300))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [1, 2, 7, 60, 300])
@pytest.mark.parametrize("seed", range(3))
def test_threshold_is_the_exact_level(seed: int, width: int, dtype: torch.dtype) -> None:
    flat, eps = _rows(seed, dtype, width)
    size = flat.abs()
    outside = size.sum(dim=1) > eps
    got = threshold(size[outside], eps[outside])
    via_torch = _threshold_torch(size[outside], eps[outside]).to(dtype)
    assert got.dtype == dtype
    for theta, other, row, radius in zip(
        got.tolist(), via_torch.tolist(), flat[outside].tolist(), eps[outside].tolist(), strict=True
    ):
        want = _exact_theta(row, radius)
        scale = sum(abs(v) for v in row)
        assert _close(theta, want, dtype, scale), (theta, float(want))
        assert _close(other, want, dtype, scale), (other, float(want))


def test_wide_active_sets_widen_the_look() -> None:
    """Rows whose active count passes ``TOP`` (and 4·TOP) get the exact level too."""
    g = torch.Generator().manual_seed(1)
    width = 40 * TOP
    flat = 1.0 + 0.001 * torch.rand(3, width, generator=g, dtype=torch.float64)
    total = flat.sum(dim=1)
    eps = total * torch.tensor([0.99, 0.5, 0.001], dtype=torch.float64)
    got = threshold(flat, eps)
    for theta, row, radius in zip(got.tolist(), flat.tolist(), eps.tolist(), strict=True):
        want = _exact_theta(row, radius)
        assert _close(theta, want, torch.float64, sum(row)), (theta, float(want))
    active = (flat > got.unsqueeze(1)).sum(dim=1)
    assert int(active[0]) > 4 * TOP  # the widening ran


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit patterns (so −0 and +0 differ)."""
    return np.array_equal(a.numpy().view(np.uint8), b.numpy().view(np.uint8))


def _kkt(v: torch.Tensor, w: torch.Tensor, eps: float, dtype: torch.dtype) -> None:
    """``w`` is the nearest point of the L1 ball to ``v`` (v outside): on the sphere,
    a soft threshold of ``v`` at one level θ ≥ 0 that every zeroed |v_i| is below."""
    unit = float(torch.finfo(dtype).eps)
    scale = float(v.abs().sum())
    tol = 16 * unit * max(scale, 1e-300)
    assert abs(float(w.abs().sum()) - eps) <= tol
    assert bool((w * v >= 0).all())  # same signs
    assert bool((w.abs() <= v.abs()).all())
    kept = w != 0
    if bool(kept.any()):
        gaps = (v.abs() - w.abs())[kept]
        theta = float(gaps.mean())
        assert float((gaps - theta).abs().max()) <= tol  # one level for every kept entry
        zeroed = v.abs()[~kept]
        assert float(zeroed.max()) <= theta + tol if zeroed.numel() else True  # below θ
        assert float(v.abs()[kept].min()) >= theta - tol
    else:
        assert eps <= tol  # only a zero radius zeroes a whole row outside the ball


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [1, 5, 60, 784])
@pytest.mark.parametrize("seed", range(3))
def test_projection_meets_the_optimality_conditions(
    seed: int, width: int, dtype: torch.dtype
) -> None:
    flat, eps = _rows(seed, dtype, width)
    eps[8] = flat[8].abs().sum() + 1  # one row inside the ball
    out = _project_l1(flat, eps)
    for i in range(flat.shape[0]):
        if bool(flat[i].abs().sum() <= eps[i]):
            # rows inside the ball come back bit for bit (the sign of zero included)
            assert torch.equal(out[i].view(-1).abs().sign(), flat[i].view(-1).abs().sign())
            assert _same_bits(out[i], flat[i])
        else:
            _kkt(flat[i].double(), out[i].double(), float(eps[i]), dtype)


def test_mixed_batch_touches_only_the_rows_outside() -> None:
    g = torch.Generator().manual_seed(3)
    flat = torch.randn(9, 50, generator=g)
    flat[0, :5] = -0.0
    total = flat.abs().sum(dim=1)
    eps = torch.where(torch.arange(9) % 3 == 0, total * 0.3, total + 1)
    out = _project_l1(flat, eps)
    for i in range(9):
        if i % 3:
            assert _same_bits(out[i], flat[i])
        else:
            _kkt(flat[i].double(), out[i].double(), float(eps[i]), torch.float32)
    assert _project_l1(flat, total + 1) is flat  # a batch wholly inside: the same tensor


def test_zero_radius_and_ties() -> None:
    flat = torch.tensor([[0.5, -0.5, 0.5, -0.5], [3.0, 1.0, 1.0, 1.0], [2.0, 2.0, 0.0, -0.0]])
    eps = torch.tensor([0.0, 1.0, 1.0])
    out = _project_l1(flat, eps)
    assert torch.equal(out[0].abs(), torch.zeros(4))
    assert torch.equal(out[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))  # θ = 2, exactly
    assert torch.equal(out[2], torch.tensor([0.5, 0.5, 0.0, 0.0]))  # θ = 1.5: a tie kept whole


def test_a_non_finite_row_leaves_the_others_exact() -> None:
    """A NaN or infinite row (the torch path) never spoils the other rows' projection."""
    g = torch.Generator().manual_seed(5)
    flat = torch.randn(4, 30, generator=g, dtype=torch.float64)
    flat[1, 3] = float("nan")
    flat[2, 7] = float("inf")
    eps = torch.full((4,), 2.0, dtype=torch.float64)
    out = _project_l1(flat, eps)
    for i in (0, 3):
        _kkt(flat[i], out[i], 2.0, torch.float64)


def test_rows_inside_the_ball_get_level_zero() -> None:
    size = torch.tensor([[0.5, 0.25, 0.0], [1.0, 1.0, 1.0]])
    assert torch.equal(threshold(size, size.sum(dim=1) + 0.5), torch.zeros(2))
    assert torch.equal(threshold(size, size.sum(dim=1)), torch.zeros(2))  # on the sphere


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [784, 300, 64, 5])
def test_integer_keys_pick_the_float_partition_theta(
    dtype: torch.dtype, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partition on the magnitudes' bits as integers gives θ bit for bit as the float
    partition did (the same function with the floats themselves as keys): ties, zeros (+0
    from ``abs`` of -0), +∞ and NaN (non-finite either way), rows inside the ball, active
    sets wider than the first look, zero radius."""
    from mmargin import l1ball
    from mmargin.l1ball import _threshold_numpy

    def float_partition_theta(size: np.ndarray, eps: np.ndarray) -> np.ndarray:
        with monkeypatch.context() as m:
            m.setattr(l1ball, "_as_keys", lambda values: values)
            return _threshold_numpy(size, eps)

    gen = torch.Generator().manual_seed(17)
    for trial in range(25):
        flat = torch.randn(10, width, generator=gen, dtype=dtype)
        flat[1] = (flat[1] * 2).round() / 2  # ties
        flat[2, : width // 2] = -0.0
        flat[3] = flat[3] * 1e-3  # a dense active set
        if trial % 5 == 0:
            flat[4, 0] = float("inf")
            flat[5, width // 2] = -float("nan")
        size = flat.abs()
        total = size.sum(dim=1)
        eps = total * torch.rand(10, generator=gen, dtype=dtype)
        eps[6] = total[6] * 2  # inside the ball
        eps[7] = 0.0
        eps[3] = total[3] * 0.05
        array, radii = size.numpy(), eps.numpy().astype(np.float64)
        with np.errstate(invalid="ignore"):  # ∞ − ∞ in the sums of a row holding ∞
            got, want = _threshold_numpy(array, radii), float_partition_theta(array, radii)
        assert np.array_equal(np.isfinite(got), np.isfinite(want))
        fine = np.isfinite(want)
        assert np.array_equal(got[fine], want[fine])
