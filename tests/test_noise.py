"""The random-noise margin search against exact thresholds along the drawn directions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mmargin.adapters import TorchAdapter
from mmargin.engine.noise import NoiseConfig, add_scaled, noise_margin
from mmargin.goals import Untargeted
from mmargin.spaces import box

torch.set_num_threads(1)


def _l2(delta: Tensor) -> Tensor:
    return delta.flatten(1).norm(dim=1)


class Radial(nn.Module):
    """Class 0 inside the ball of radius ``r`` around ``center``, class 1 outside: from the
    centre, every direction flips at exactly ``r``."""

    def __init__(self, r: float, center: float = 0.0) -> None:
        super().__init__()
        self.r = r
        self.center = center

    def forward(self, x: Tensor) -> Tensor:
        d = (x - self.center).flatten(1).norm(dim=1)
        return torch.stack([self.r - d, d - self.r], dim=1)


def test_radial_model_flips_at_its_radius_in_every_direction() -> None:
    x = torch.zeros(3, 20)
    model = TorchAdapter(Radial(0.37))
    found = noise_margin(
        model,
        box(),
        Untargeted(),
        x,
        torch.zeros(3, dtype=torch.long),
        measure=_l2,
        config=NoiseConfig(draws=4, steps=14),
    )
    assert bool(found.found.all())
    ratio = found.size / 0.37
    assert float(ratio.min()) >= 1.0 and float(ratio.max()) <= 1.001
    np.testing.assert_allclose(_l2(found.delta).numpy(), found.size.numpy(), rtol=1e-6)


def test_linear_model_matches_the_exact_threshold_of_the_drawn_directions() -> None:
    torch.manual_seed(0)
    n, k = 30, 4
    linear = nn.Linear(n, k)
    x = torch.randn(8, n) * 0.3
    with torch.no_grad():
        z = linear(x)
    labels = z.argmax(1)
    config = NoiseConfig(draws=6, budget=400, steps=14, seed=3)
    space = box()
    found = noise_margin(
        TorchAdapter(linear), space, Untargeted(), x, labels, measure=_l2, config=config
    )

    # exact: along unit direction u the flip happens at min_j g_j / (a_j·u) over a_j·u > 0
    gen = torch.Generator().manual_seed(config.seed)
    w = linear.weight.detach().double()
    expected = torch.full((8,), math.inf, dtype=torch.float64)
    for _ in range(config.draws):
        u = space.random(x, gen).double()
        for i in range(8):
            y = int(labels[i])
            for j in range(k):
                if j == y:
                    continue
                slope = float((w[j] - w[y]) @ u[i])
                gap = float(z[i, y] - z[i, j])
                if slope > 0:
                    expected[i] = min(float(expected[i]), gap / slope)
    ok = torch.isfinite(expected) & (expected < 10 * x.norm(dim=1).double())
    assert bool(ok.any())
    ratio = (found.size.double()[ok] / expected[ok]).numpy()
    assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 1.001
    assert bool((found.queries <= config.budget).all())


def test_budget_is_respected_and_missing_flips_are_inf() -> None:
    x = torch.zeros(2, 10)
    model = TorchAdapter(Radial(5.0))
    found = noise_margin(
        model,
        box(),
        Untargeted(),
        x,
        torch.zeros(2, dtype=torch.long),
        measure=_l2,
        config=NoiseConfig(draws=3, budget=4, start=0.01),
    )
    assert found.queries.tolist() == [4, 4]
    assert not bool(found.found.any())
    assert torch.isinf(found.size).all() and torch.isinf(found.scale).all()
    assert bool((found.delta == 0).all())


def test_a_box_that_clips_the_noise_is_respected() -> None:
    x = torch.full((2, 10), 0.9)
    model = TorchAdapter(Radial(0.3, center=0.9))  # the box leaves only 0.1 upward room
    found = noise_margin(
        model, box(-1.0, 1.0), Untargeted(), x, torch.zeros(2, dtype=torch.long), measure=_l2
    )
    assert bool(found.found.all())
    assert bool(((x + found.delta) <= 1.0).all())
    assert float(found.size.min()) >= 0.3  # clipping only shrinks the noise: size >= radius


def test_custom_sampler_and_apply_are_used_and_draws_are_seeded() -> None:
    calls: list[int] = []

    def sample(x: Tensor, gen: torch.Generator) -> Tensor:
        calls.append(1)
        u = torch.zeros_like(x)
        u[:, 0] = 1.0
        return u

    def apply(x: Tensor, u: Tensor, s: Tensor) -> Tensor:
        return add_scaled(x, u, 2 * s)  # a sampler whose unit is half a step

    x = torch.zeros(1, 5)
    found = noise_margin(
        TorchAdapter(Radial(0.5)),
        box(),
        Untargeted(),
        x,
        torch.zeros(1, dtype=torch.long),
        measure=_l2,
        sample=sample,
        apply=apply,
        config=NoiseConfig(draws=2, steps=16),
    )
    assert calls == [1, 1]
    assert float(found.size[0]) == pytest.approx(0.5, rel=1e-3)
    assert float(found.scale[0]) == pytest.approx(0.25, rel=1e-3)

    again = [
        noise_margin(
            TorchAdapter(Radial(0.4)),
            box(),
            Untargeted(),
            torch.zeros(2, 8),
            torch.zeros(2, dtype=torch.long),
            measure=_l2,
            config=NoiseConfig(draws=3, seed=7),
        ).delta
        for _ in range(2)
    ]
    assert torch.equal(again[0], again[1])


@pytest.mark.parametrize(
    "kwargs", [{"draws": 0}, {"budget": 0}, {"grow": 1.0}, {"start": 0.0}, {"max_scale": 1e-4}]
)
def test_config_checks_its_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="NoiseConfig"):
        NoiseConfig(**kwargs)  # type: ignore[arg-type]
