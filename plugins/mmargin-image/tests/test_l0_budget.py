"""Targeted L0 search whose success does not fall as the budget grows.

Before the first flip the gradient search grows ε towards a first-order estimate of the
distance to the boundary; for L0 that was ``loss / ‖∇‖₁``, below one pixel, so ε crept up
by the (1 + γ) schedule alone and a 500-pass budget ended before the ball held enough
pixels (2 of 13 MNIST digits flipped to class 0, against 13 of 13 at 1000). It now grows
to the number of pixels a linearised step needs. The oracle is the search itself at a
larger budget: success at 500 ≤ 1000 ≤ 3000 passes, on digits that failed at 500 before.
"""

from __future__ import annotations

import pytest

import mmargin
from mmargin_image.data import load_mnist
from mmargin_image.models import mnist_cnn


@pytest.mark.slow
def test_targeted_l0_success_does_not_fall_with_the_budget() -> None:
    data = load_mnist("test").head(3)  # digits 7, 2, 1: none flipped to 0 at 500 before
    model = mnist_cnn()
    success, margins = [], []
    for budget in (500, 1000, 3000):
        results = mmargin.evaluate(model, data.x, data.y, "l0", space="image",
                                   goal="targeted", target=0, budget=budget)  # fmt: skip
        flipped = [r for r in results if r.status.value == "flipped"]
        success.append(len(flipped))
        margins.append(sum(r.margin for r in flipped))
        assert all(r.adv_label == 0 for r in flipped)
    assert success == sorted(success) and success[0] == len(data)
    assert margins[2] <= margins[0]  # more passes never give larger pixel counts here
