"""L0 in pixels for images: every channel of a pixel counts once (``l0`` in the image
space), channel values still by name (``l0_channels``); checked against direct counts."""

from __future__ import annotations

import numpy as np
import torch

from mmargin.plugin import lp, pixel_l0


def _delta(seed: int) -> torch.Tensor:
    """RGB perturbations where some pixels move in one, two or three channels."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(4, 3, 5, 6, generator=gen) < 0.3
    return torch.randn(4, 3, 5, 6, generator=gen) * keep


def test_pixel_l0_counts_pixels_and_l0_channels_counts_values() -> None:
    delta = _delta(0)
    pixels = (delta != 0).any(dim=1).flatten(1).sum(dim=1)
    values = (delta != 0).flatten(1).sum(dim=1)
    assert torch.equal(pixel_l0(lp("l0")).norm(delta), pixels.float())
    assert torch.equal(pixel_l0(lp("l0_channels")).norm(delta), values.float())
    assert bool((values > pixels).any())  # the case tells the two apart
    assert pixel_l0(lp("l2")) == lp("l2") and pixel_l0(lp("l0")).units == "pixels"


def test_pixel_l0_projection_keeps_the_largest_whole_pixels() -> None:
    delta, dist = _delta(1), pixel_l0(lp("l0"))
    for k in (0, 1, 4, 9):
        out = dist.project(delta, torch.full((4,), float(k) + 0.5))
        assert bool((dist.norm(out) <= k).all())
        for i in range(4):  # brute force: the k pixels of largest channel-L2 size, untouched
            size = delta[i].norm(dim=0).flatten()
            top = set(np.argsort(-size.numpy(), kind="stable")[: min(k, int((size > 0).sum()))])
            kept = set(np.flatnonzero((out[i] != 0).any(dim=0).flatten().numpy()))
            assert kept == top
            mask = (out[i] != 0).any(dim=0)
            assert torch.equal(out[i][:, mask], delta[i][:, mask])


def test_image_runs_report_l0_in_pixels() -> None:
    import mmargin

    gen = torch.Generator().manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 48, generator=gen))
    x = torch.rand(6, 3, 4, 4, generator=gen)
    y = model(x).argmax(1)
    for name in ("l0", "l0_channels"):
        results = mmargin.evaluate(model, x, y, name, space="image", budget=300)
        for r in results:
            if r.status.value != "flipped":
                continue
            moved = np.asarray(r.adversarial) != x[int(r.sample)].numpy()
            count = moved.any(axis=0).sum() if name == "l0" else moved.sum()
            assert r.margin == count and r.distance == name
