"""The gradient search against the MILP oracle on the shipped digits ReLU MLP.

For a few correctly classified test points, L∞ and L1: the search's margin (``exact =
"never"``, default knobs, budget 1000) is never below the exact minimal margin (the MILP
proves no smaller flip exists) and lands within 2% of it (the issue's bound on the max
over 50 points is 1.02; ``bench/exact_ratio.py`` measures that).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import mmargin

POINTS = 3
BOUND = 1.02


@pytest.fixture(scope="module")
def digits() -> tuple[object, np.ndarray, np.ndarray]:
    """The shipped digits MLP and its first correctly classified test points."""
    import torch

    from mmargin_image.data import load_digits
    from mmargin_image.models import digits_mlp

    model = digits_mlp()
    data = load_digits("test")
    x, y = np.asarray(data.x, dtype=np.float32), np.asarray(data.y)
    with torch.no_grad():
        keep = np.flatnonzero(model(torch.from_numpy(x)).argmax(dim=1).numpy() == y)[:POINTS]
    return model, x[keep], y[keep]


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_found_margin_is_within_bound_of_the_exact_one(digits, norm: str) -> None:  # type: ignore[no-untyped-def]
    from mmargin.exact.milp import extract_relu_layers, relu_net_margin

    model, x, y = digits
    results = mmargin.evaluate(model, x, y, distance=norm, space="box", budget=1000,
                               space_options={"lower": 0.0, "upper": 1.0}, exact="never",
                               batch_size=len(x))  # fmt: skip
    layers = extract_relu_layers(model)
    assert layers is not None
    p = math.inf if norm == "linf" else 1.0
    for r, xi, yi in zip(results, x, y, strict=True):
        assert r.status == "flipped"
        # the search's verified flip bounds the exact margin from above: a valid cut that
        # tightens the MILP's big-M bounds (without it HiGHS may not prove optimality)
        exact = relu_net_margin(layers, xi.astype(np.float64), int(yi), p, lower=0.0,
                                upper=1.0, upper_bound=r.margin * (1 + 1e-4) + 1e-6,
                                time_limit=300.0)  # fmt: skip
        assert exact.optimal  # 1-3 s each on an idle machine; the limit is for loaded CI
        assert r.margin >= exact.margin * (1 - 1e-5), (r.sample, r.margin, exact.margin)
        assert r.margin / exact.margin <= BOUND, (r.sample, r.margin, exact.margin)
